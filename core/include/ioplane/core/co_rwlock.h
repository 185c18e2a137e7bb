// CoRwLock: a readers-writer lock for coroutines (QEMU's CoRwlock). Fair:
// waiters are served in arrival order, so a waiting writer holds back readers
// that come after it and writers do not starve.
//
// Thread contract: any context; unlock() by a holder.
#pragma once

#include <mutex>

#include "ioplane/core/detail/co_waiter.h"

namespace ioplane {

class CoRwLock {
public:
    class LockAwaiter {
    public:
        LockAwaiter(CoRwLock& l, bool exclusive) : l_(l), exclusive_(exclusive) {}
        bool await_ready() { return l_.try_acquire(exclusive_); }
        bool await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}

    private:
        CoRwLock& l_;
        bool exclusive_;
        detail::CoWaiter waiter_;
    };

    CoRwLock() = default;
    CoRwLock(const CoRwLock&) = delete;
    CoRwLock& operator=(const CoRwLock&) = delete;

    LockAwaiter rdlock() { return LockAwaiter(*this, false); }
    LockAwaiter wrlock() { return LockAwaiter(*this, true); }
    // Releases a read or write hold.
    void unlock();
    // The writer becomes a reader; waiting readers at the head may join it.
    void downgrade();

    unsigned readers() const;
    bool write_locked() const;

private:
    bool try_acquire(bool exclusive);
    bool can_acquire(bool exclusive) const;  // requires mu_
    void grant(bool exclusive);              // requires mu_
    void wake_eligible();                    // requires mu_ released; takes it

    mutable std::mutex mu_;
    unsigned readers_ = 0;        // guarded by mu_
    bool writer_ = false;         // guarded by mu_
    detail::WaiterFifo waiters_;  // guarded by mu_
};

}  // namespace ioplane
