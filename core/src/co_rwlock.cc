#include "ioplane/core/co_rwlock.h"

namespace ioplane {

bool CoRwLock::can_acquire(bool exclusive) const {
    if (writer_) return false;
    return exclusive ? readers_ == 0 : true;
}

void CoRwLock::grant(bool exclusive) {
    if (exclusive)
        writer_ = true;
    else
        ++readers_;
}

bool CoRwLock::try_acquire(bool exclusive) {
    std::lock_guard lk(mu_);
    if (!waiters_.empty() || !can_acquire(exclusive)) return false;  // FIFO: no overtaking
    grant(exclusive);
    return true;
}

bool CoRwLock::LockAwaiter::await_suspend(std::coroutine_handle<> h) {
    waiter_.prepare(h);
    waiter_.exclusive = exclusive_;
    std::lock_guard lk(l_.mu_);
    if (l_.waiters_.empty() && l_.can_acquire(exclusive_)) {
        l_.grant(exclusive_);
        return false;
    }
    l_.waiters_.push(waiter_);
    return true;
}

void CoRwLock::unlock() {
    {
        std::lock_guard lk(mu_);
        if (writer_) {
            writer_ = false;
        } else {
            IOPLANE_ASSERT(readers_ > 0);
            --readers_;
        }
    }
    wake_eligible();
}

void CoRwLock::downgrade() {
    {
        std::lock_guard lk(mu_);
        IOPLANE_ASSERT(writer_);
        writer_ = false;
        ++readers_;
    }
    wake_eligible();
}

// Grants the lock to waiters at the head of the queue while they fit: one
// writer, or a run of readers. Ownership is transferred before they resume.
void CoRwLock::wake_eligible() {
    detail::WaiterFifo granted;
    {
        std::lock_guard lk(mu_);
        while (!waiters_.empty() && can_acquire(waiters_.front()->exclusive)) {
            detail::CoWaiter* w = waiters_.pop();
            grant(w->exclusive);
            const bool exclusive = w->exclusive;
            granted.push(*w);
            if (exclusive) break;
        }
    }
    while (detail::CoWaiter* w = granted.pop()) w->wake();
}

unsigned CoRwLock::readers() const {
    std::lock_guard lk(mu_);
    return readers_;
}

bool CoRwLock::write_locked() const {
    std::lock_guard lk(mu_);
    return writer_;
}

}  // namespace ioplane
