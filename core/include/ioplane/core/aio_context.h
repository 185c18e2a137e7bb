// AioContext: one event loop (QEMU's AioContext). It watches fds and event
// notifiers, runs timers and bottom halves, and busy-polls registered poll
// functions adaptively before sleeping in the kernel. See docs/DESIGN.md.
//
// Thread contracts are given per member. "Home" is the thread that runs the
// context's loop: the IOThread that owns it, the main thread for the main
// loop, or (in tests) the thread that created it. A context must outlive every
// call into it from other threads (schedule_*, notify).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ioplane/core/bottom_half.h"
#include "ioplane/core/error.h"
#include "ioplane/core/event_notifier.h"
#include "ioplane/core/fd_monitor.h"
#include "ioplane/core/thread_contract.h"
#include "ioplane/core/timer.h"

namespace ioplane {

class ThreadPool;

namespace detail {
// Its address identifies the calling thread: cheaper to compare than a
// pthread_self() call on the BH scheduling path.
inline thread_local const char t_thread_tag = 0;
}  // namespace detail

// Adaptive polling (QEMU's poll-max-ns/poll-grow/poll-shrink). max_ns == 0
// disables busy-polling. The window starts at 0, grows when an event arrived
// just after the window ended, shrinks when the loop slept much longer.
struct PollParams {
    int64_t max_ns = 0;
    int64_t grow = 2;    // factor; 0 means the default (2)
    int64_t shrink = 2;  // divisor; 0 means the default (2); 1 drops to 0 at once
};

// What to call when an fd is ready. Unset callbacks are not watched for.
struct FdHandlerSpec {
    Callback on_read;   // also called on error/hang-up when there is no on_error
    Callback on_write;
    Callback on_error;
    // Adaptive polling: returns true when there is work; the loop then calls
    // on_poll_ready (or on_read if unset) without asking the kernel.
    std::move_only_function<bool()> poll;
    Callback on_poll_ready;
    // Called with true when the loop starts busy-polling and false when it
    // stops: a handler may switch its notifications off meanwhile (as a
    // virtqueue does).
    std::move_only_function<void(bool)> set_polling;
    ReentrancyGuard* guard = nullptr;
};

class AioContext {
public:
    // Any thread. The creating thread is home until attach_to_current_thread().
    static Result<std::unique_ptr<AioContext>> create(std::string name, PollParams poll = {});
    // Home. Queued BHs are released without running (drain first by polling).
    ~AioContext();
    AioContext(const AioContext&) = delete;
    AioContext& operator=(const AioContext&) = delete;

    // Any thread.
    const std::string& name() const { return name_; }
    bool in_home_thread() const { return home_.load(std::memory_order_relaxed) == &detail::t_thread_tag; }
    // Makes the calling thread home; done once by the thread that will run the
    // loop, before any other thread relies on it.
    void attach_to_current_thread();
    // Any thread: the context whose loop the calling thread is running
    // (innermost poll()), or null outside any loop.
    static AioContext* current();

    // Home. One loop iteration: bottom halves, poll handlers (busy-polling up
    // to the poll window), wait in the kernel (only if `blocking` and nothing
    // was done yet), fd dispatch, timers, and the bottom halves those
    // scheduled. Returns whether any callback ran.
    // May be nested (a callback may call poll()).
    bool poll(bool blocking);

    // ---- fd handlers (home) ----
    // Watches `fd`, replacing any handler it had.
    Result<void> set_fd_handler(int fd, FdHandlerSpec spec);
    // Changes which of the handler's callbacks are watched (kFdRead|kFdWrite);
    // cheaper than replacing the handler.
    Result<void> set_fd_events(int fd, uint32_t events);
    // Stops watching `fd`; its callbacks are destroyed before the next
    // iteration. Does nothing if `fd` is not watched. Call it before closing
    // the fd.
    void remove_fd_handler(int fd);

    // ---- bottom halves ----
    // Any thread. A reusable BH; delete it (drop the pointer) in the home context.
    BhPtr new_bh(Callback cb, ReentrancyGuard* guard = nullptr);
    // Any thread. Runs `fn` once in the home context, then frees it.
    void schedule_oneshot(Callback fn);
    // Any thread. Queues an intrusive node (see BhNode). It must stay valid
    // until it has run (or the context is destroyed).
    void schedule_node(BhNode& node);
    // Any thread. Wakes the loop if it sleeps (the notify_me protocol).
    void notify();

    // ---- adaptive polling (home) ----
    void set_poll_params(PollParams params);
    PollParams poll_params() const { return poll_params_; }
    int64_t poll_window_ns() const { return poll_ns_; }

    // Home. Runs iterations until nothing is queued and no thread-pool work
    // is in flight (before a context stops being polled).
    void drain();

    // Home. The thread pool bound to this context, created on first use.
    ThreadPool& thread_pool();

    // Home. Called around the kernel wait of the outermost poll() when it may
    // block: the main loop drops the big lock there.
    void set_wait_hooks(Callback before_wait, Callback after_wait);

    TimerHeap& timers() { return timers_; }

    // Home. What still waits in this context for something to happen: fds
    // watched (the context's own notifier aside) and armed timers. An
    // IOThread with any left must not be stopped: what waits would never
    // resume.
    struct WaitingWork {
        size_t fds = 0;
        size_t timers = 0;
        bool empty() const { return fds == 0 && timers == 0; }
    };
    WaitingWork waiting_work() const;

private:
    struct FdHandler;

    AioContext(std::string name, PollParams poll, std::unique_ptr<FdMonitor> monitor, EventNotifier notifier);

    // Loop phases, in the order poll() runs them.
    bool run_bottom_halves();
    int64_t compute_timeout(bool blocking) const;
    size_t busy_poll(int64_t& timeout_ns, std::span<ReadyFd> ready);
    size_t wait_in_kernel(int64_t timeout_ns, std::span<ReadyFd> ready);
    bool dispatch_fds(std::span<const ReadyFd> ready);
    void adjust_poll_window(int64_t blocked_ns);

    size_t run_poll_handlers_once(std::span<ReadyFd> ready);
    void set_polling(bool on);
    void enqueue(BhNode& node);  // push onto pending_, notify if needed
    bool run_bh_node(BhNode& node);
    void resume_deferred_fd(int fd);
    Result<void> apply_interest(FdHandler& h, uint32_t events);
    void rebuild_poll_list();
    void free_removed_handlers();

    friend class BottomHalf;
    friend class ReentrancyGuard;

    // Constant after construction.
    const std::string name_;
    const std::unique_ptr<FdMonitor> monitor_;
    const EventNotifier notifier_;  // the loop's wake-up eventfd

    // Shared with other threads (atomics; ordering documented in aio_context.cc).
    std::atomic<const char*> home_;  // detail::t_thread_tag of the home thread
    std::atomic<BhNode*> pending_{nullptr};  // lock-free stack of queued BHs
    std::atomic<bool> notify_me_{false};     // the loop may be sleeping in the kernel
    std::atomic<bool> notified_{false};      // notify() was called since last accept

    // Home context only.
    std::unordered_map<int, std::unique_ptr<FdHandler>> handlers_;
    std::vector<std::unique_ptr<FdHandler>> removed_handlers_;  // freed at depth 0
    std::vector<FdHandler*> poll_handlers_;
    bool kernel_optional_ = true;   // every watched fd is read-only with a poll function
    bool polling_possible_ = true;  // every watched fd has a poll function
    BhNode* batch_head_ = nullptr;  // BHs taken from pending_, not yet run
    BhNode* batch_tail_ = nullptr;
    TimerHeap timers_;
    PollParams poll_params_;
    int64_t poll_ns_ = 0;        // current busy-poll window
    bool polling_ = false;       // handlers were told set_polling(true)
    unsigned depth_ = 0;         // poll() nesting
    unsigned poll_streak_ = 0;   // iterations served by polling alone
    Callback before_wait_, after_wait_;
    std::unique_ptr<ThreadPool> thread_pool_;
};

// Any thread. Shorthand for ctx.schedule_oneshot(fn).
inline void schedule_oneshot(AioContext& ctx, Callback fn) { ctx.schedule_oneshot(std::move(fn)); }

}  // namespace ioplane
