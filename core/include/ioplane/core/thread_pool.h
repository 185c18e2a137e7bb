// ThreadPool: worker threads for blocking calls, bound to one AioContext.
// Work runs on a worker; its completion always runs back in the context that
// submitted it, as a bottom half, never on the worker.
//
// Workers are created on demand up to `max_threads` and retire after
// `idle_timeout_ns` without work. Work that has not started can be cancelled;
// its completion still runs, with cancelled == true (an accepted submission
// always completes, exactly once).
//
// Thread contract: home context of the pool's AioContext for every member
// except thread_count()/idle_count() (any thread).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ioplane/core/bottom_half.h"

namespace ioplane {

class ThreadPool;

// A unit of work, embedded in its owner (e.g. a coroutine's awaiter) so that
// submitting allocates nothing.
class WorkItem : public BhNode {
protected:
    ~WorkItem() = default;
    // On a worker thread.
    virtual void work() = 0;
    // In the submitting context, after work() returned or after cancellation.
    virtual void complete(bool cancelled) = 0;

private:
    friend class ThreadPool;
    // In the home context; no worker touches the item any more.
    void run() final;

    enum class State { idle, queued, running };
    State state_ = State::idle;  // guarded by ThreadPool::mu_ while queued or running
    bool cancelled_ = false;
    ThreadPool* pool_ = nullptr;  // set by submit()
    WorkItem* prev_ = nullptr;  // queue links, guarded by ThreadPool::mu_
    WorkItem* next_ = nullptr;
};

struct ThreadPoolLimits {
    unsigned max_threads = 64;
    int64_t idle_timeout_ns = 10'000'000'000;  // QEMU's 10 s
};

class ThreadPool {
public:
    using Limits = ThreadPoolLimits;

    explicit ThreadPool(AioContext& ctx, Limits limits = {});
    // Waits for running work; queued work is cancelled (its completion is
    // queued in the context, which runs or releases it).
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    // Queues `item`; it must stay valid until its completion has run.
    void submit(WorkItem& item);
    // Dequeues `item` if no worker has started it; true then (its completion
    // runs with cancelled == true). False if it is running or done.
    bool cancel(WorkItem& item);

    // Convenience form: `fn` on a worker, then `done(ret)` in the context with
    // fn's return value, or -ECANCELED. The handle is valid until done runs.
    WorkItem* submit(std::move_only_function<int()> fn, std::move_only_function<void(int)> done);

    // Applies to new workers and to idle workers' next wait.
    void set_limits(Limits limits);
    // Home. Submitted items whose completion has not run yet.
    size_t in_flight() const { return in_flight_; }
    AioContext& context() const { return ctx_; }
    size_t thread_count() const;  // any thread
    size_t idle_count() const;    // any thread

private:
    void worker_main(std::list<std::thread>::iterator self);
    void join_retired();
    WorkItem* pop_front();  // requires mu_

    friend class WorkItem;
    bool spawn_worker();  // requires mu_

    AioContext& ctx_;
    const std::string thread_name_;
    size_t in_flight_ = 0;  // home context only

    mutable std::mutex mu_;
    std::condition_variable work_ready_;  // signalled with mu_ held or just released
    Limits limits_;                       // guarded by mu_
    WorkItem* head_ = nullptr;            // guarded by mu_: FIFO of queued items
    WorkItem* tail_ = nullptr;            // guarded by mu_
    size_t queued_ = 0;                   // guarded by mu_
    size_t idle_ = 0;                     // guarded by mu_: workers waiting for work
    bool stopping_ = false;               // guarded by mu_
    std::list<std::thread> threads_;      // guarded by mu_
    std::vector<std::thread> retired_;    // guarded by mu_: exited, not yet joined
};

}  // namespace ioplane
