#include "ioplane/core/co_mutex.h"

namespace ioplane {

bool CoMutex::try_lock() {
    std::lock_guard lk(mu_);
    // Waiters come first: a newcomer may not overtake them (fairness).
    if (locked_) return false;
    locked_ = true;
    return true;
}

bool CoMutex::LockAwaiter::await_suspend(std::coroutine_handle<> h) {
    waiter_.prepare(h);
    std::lock_guard lk(m_.mu_);
    if (!m_.locked_) {  // unlocked since await_ready: take it, do not suspend
        m_.locked_ = true;
        return false;
    }
    m_.waiters_.push(waiter_);
    return true;
}

void CoMutex::unlock() {
    detail::CoWaiter* next;
    {
        std::lock_guard lk(mu_);
        IOPLANE_ASSERT(locked_);
        next = waiters_.pop();
        if (next == nullptr) locked_ = false;  // else: ownership passes to `next`
    }
    if (next != nullptr) next->wake();
}

bool CoMutex::locked() const {
    std::lock_guard lk(mu_);
    return locked_;
}

}  // namespace ioplane
