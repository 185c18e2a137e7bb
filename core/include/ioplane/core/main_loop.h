// The main loop: the AioContext of the main thread, and the big lock (BQL)
// that it holds while it dispatches. Configuration and graph changes (the
// monitor, startup, shutdown) run under the BQL in the main loop; IOThreads
// never take the BQL on their I/O path. The BQL is dropped only while the
// main loop sleeps in the kernel.
#pragma once

#include <atomic>
#include <memory>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/co_mutex.h"

namespace ioplane {

class MainLoop {
public:
    // Main thread (the calling thread becomes it). At most one at a time.
    static Result<std::unique_ptr<MainLoop>> create(PollParams poll = {});
    // Main thread.
    ~MainLoop();

    AioContext& ctx() { return *ctx_; }

    // Main thread. Runs iterations, holding the BQL, until request_stop().
    void run();
    // Any thread. Makes run() return after its current iteration.
    void request_stop();
    // Any thread.
    bool stop_requested() const { return stop_.load(std::memory_order_acquire); }

private:
    explicit MainLoop(std::unique_ptr<AioContext> ctx) : ctx_(std::move(ctx)) {}
    std::unique_ptr<AioContext> ctx_;
    std::atomic<bool> stop_{false};
    bool dropped_bql_ = false;  // main thread only: the wait hook released the BQL
};

// Any thread. The main loop's context, or null if there is none.
AioContext* main_context();
// Any thread. True in the thread that runs the main loop.
bool in_main_thread();

// Main thread (coroutines). Configuration work that waits by running nested
// main-loop iterations (a QMP command, a vhost-user control message) takes
// this turn first, so that one never runs inside another's wait: a command
// draining a node must not have a vhost-user GET_VRING_BASE, which waits for
// requests the drain has parked, run in its nested loop.
CoMutex& configuration_turn();

// The big lock. Any thread may take it (tests, a future monitor thread); the
// main loop holds it except while it sleeps.
void bql_lock();
void bql_unlock();
// Any thread: whether the calling thread holds it.
bool bql_locked();

class BqlGuard {
public:
    BqlGuard() { bql_lock(); }
    ~BqlGuard() { bql_unlock(); }
    BqlGuard(const BqlGuard&) = delete;
    BqlGuard& operator=(const BqlGuard&) = delete;
};

}  // namespace ioplane
