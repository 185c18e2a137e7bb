#include "ioplane/core/co_queue.h"

namespace ioplane {

void CoQueue::WaitAwaiter::await_suspend(std::coroutine_handle<> h) {
    waiter_.prepare(h);
    {
        std::lock_guard lk(q_.mu_);
        q_.waiters_.push(waiter_);
    }
    // On the list before the mutex is released: a next() by the next holder
    // finds us.
    if (m_ != nullptr) m_->unlock();
}

Task<void> CoQueue::wait(CoMutex& m) {
    co_await WaitAwaiter(*this, &m);
    co_await m.lock();
}

bool CoQueue::next() {
    detail::CoWaiter* w;
    {
        std::lock_guard lk(mu_);
        w = waiters_.pop();
    }
    if (w == nullptr) return false;
    w->wake();
    return true;
}

void CoQueue::restart_all() {
    detail::WaiterFifo all;
    {
        std::lock_guard lk(mu_);
        std::swap(all, waiters_);
    }
    while (detail::CoWaiter* w = all.pop()) w->wake();
}

bool CoQueue::empty() const {
    std::lock_guard lk(mu_);
    return waiters_.empty();
}

}  // namespace ioplane
