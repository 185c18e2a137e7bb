// CoMutex: a mutex for coroutines (QEMU's CoMutex). A coroutine that finds it
// locked suspends instead of blocking its thread. Fair: unlock() hands the
// lock to the longest waiter, which resumes in its own context.
//
// Thread contract: any context; coroutines in different threads may share it.
// unlock() by the holder.
#pragma once

#include <mutex>

#include "ioplane/core/detail/co_waiter.h"

namespace ioplane {

class CoMutex {
public:
    class Guard;

    // `co_await m.lock()`.
    class LockAwaiter {
    public:
        explicit LockAwaiter(CoMutex& m) : m_(m) {}
        bool await_ready() { return m_.try_lock(); }
        bool await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}

    protected:
        CoMutex& m_;
        detail::CoWaiter waiter_;
    };

    // `auto guard = co_await m.scoped_lock();` unlocks when guard goes away.
    class ScopedLockAwaiter : public LockAwaiter {
    public:
        using LockAwaiter::LockAwaiter;
        Guard await_resume() const noexcept { return Guard(m_); }
    };

    class Guard {
    public:
        explicit Guard(CoMutex& m) : m_(&m) {}
        Guard(Guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
        Guard& operator=(Guard&&) = delete;
        ~Guard() {
            if (m_) m_->unlock();
        }

    private:
        CoMutex* m_;
    };

    CoMutex() = default;
    CoMutex(const CoMutex&) = delete;
    CoMutex& operator=(const CoMutex&) = delete;

    LockAwaiter lock() { return LockAwaiter(*this); }
    ScopedLockAwaiter scoped_lock() { return ScopedLockAwaiter(*this); }
    bool try_lock();
    void unlock();
    bool locked() const;

private:
    mutable std::mutex mu_;
    bool locked_ = false;        // guarded by mu_
    detail::WaiterFifo waiters_;  // guarded by mu_
};

}  // namespace ioplane
