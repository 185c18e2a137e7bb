// CoQueue: coroutines waiting for a condition (QEMU's CoQueue), usually
// together with a CoMutex that protects the condition.
//
// Thread contract: any context; wake-ups resume each waiter in its own context.
#pragma once

#include <mutex>

#include "ioplane/core/co_mutex.h"
#include "ioplane/core/detail/co_waiter.h"

namespace ioplane {

class CoQueue {
public:
    class WaitAwaiter {
    public:
        WaitAwaiter(CoQueue& q, CoMutex* m) : q_(q), m_(m) {}
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}

    private:
        CoQueue& q_;
        CoMutex* m_;
        detail::CoWaiter waiter_;
    };

    template <class Pred>
    class WaitWhileAwaiter {
    public:
        WaitWhileAwaiter(CoQueue& q, Pred pred) : q_(q), pred_(std::move(pred)) {}
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) {
            waiter_.prepare(h);
            std::lock_guard lk(q_.mu_);
            if (!pred_()) return false;
            q_.waiters_.push(waiter_);
            return true;
        }
        void await_resume() const noexcept {}

    private:
        CoQueue& q_;
        Pred pred_;
        detail::CoWaiter waiter_;
    };

    CoQueue() = default;
    CoQueue(const CoQueue&) = delete;
    CoQueue& operator=(const CoQueue&) = delete;

    // `co_await q.wait()`: suspends until next()/restart_all().
    WaitAwaiter wait() { return WaitAwaiter(*this, nullptr); }
    // `co_await q.wait(m)`: m must be held; it is released while waiting (no
    // wake-up can be lost between the release and the wait) and held again
    // on return.
    Task<void> wait(CoMutex& m);
    // `co_await q.wait_while(pred)`: suspends only if pred() holds, evaluated
    // under the queue's lock. A waker that makes pred() false and then calls
    // next()/restart_all() cannot be missed. Callers re-check after waking.
    template <class Pred>
    WaitWhileAwaiter<Pred> wait_while(Pred pred) {
        return WaitWhileAwaiter<Pred>(*this, std::move(pred));
    }

    // Any thread. Wakes the longest waiter; false if there was none.
    bool next();
    // Any thread. Wakes every waiter.
    void restart_all();
    bool empty() const;

private:
    mutable std::mutex mu_;
    detail::WaiterFifo waiters_;  // guarded by mu_
};

}  // namespace ioplane
