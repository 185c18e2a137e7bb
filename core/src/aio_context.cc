// The event loop. Memory-ordering pairs of the cross-thread protocol:
//
//  (A) enqueue() pushes a BH with a release CAS; run_bottom_halves() takes the
//      whole list with an acquire exchange. Whatever the scheduling thread
//      wrote before schedule() is visible to the BH.
//  (B)/(C) notify_me protocol (QEMU's aio_notify/aio_poll). Before sleeping,
//      the loop stores notify_me_ and then loads notified_ (C); notify() stores
//      notified_ and then loads notify_me_ (B). All four are seq_cst, so in
//      this store-buffering pattern at least one side sees the other's store:
//      either the loop sees notified_ and does not sleep, or notify() sees
//      notify_me_ and writes the eventfd. (seq_cst operations rather than
//      fences: same cost on x86, and ThreadSanitizer understands them.) While
//      the loop runs callbacks or busy-polls, notify_me_ is false and no
//      eventfd write is made.
//  (D) notified_ is consumed by the loop with an acquire exchange after each
//      wait; it synchronizes with notify()'s store, which comes after the BH
//      push, so the next run_bottom_halves() sees the BH. Busy-polling watches
//      notified_, so a cross-thread BH ends the polling window at once.

#include "ioplane/core/aio_context.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "ioplane/core/clock.h"
#include "ioplane/core/log.h"
#include "ioplane/core/thread_pool.h"

namespace ioplane {
namespace {

thread_local AioContext* t_current = nullptr;

constexpr uint32_t kPollReady = 1u << 8;  // ReadyFd event: a poll function said ready
constexpr size_t kMaxReady = 128;
constexpr int64_t kInitialPollNs = 4000;  // the first grown window, as QEMU
// While poll functions keep finding work, the kernel is still asked (without
// waiting) every this many iterations, so plain fds are not starved.
constexpr unsigned kKernelCheckEvery = 16;

class OneshotBh final : public BhNode {
public:
    explicit OneshotBh(Callback fn) : fn_(std::move(fn)) {}

private:
    void run() override {
        std::unique_ptr<OneshotBh> self(this);
        fn_();
    }
    void discard() override { delete this; }
    Callback fn_;
};

// Makes `ctx` the thread's current context for the lifetime of the scope.
class CurrentScope {
public:
    explicit CurrentScope(AioContext* ctx) : saved_(std::exchange(t_current, ctx)) {}
    ~CurrentScope() { t_current = saved_; }

private:
    AioContext* saved_;
};

}  // namespace

struct AioContext::FdHandler {
    int fd;
    FdHandlerSpec spec;
    uint32_t interest = 0;    // kFdRead|kFdWrite the owner wants
    bool registered = false;  // known to the FdMonitor
    bool deferred = false;    // silenced while its guard is engaged
    bool removed = false;     // waiting to be freed at depth 0
    bool internal = false;    // the context's own notifier: not "progress"
};

Result<std::unique_ptr<AioContext>> AioContext::create(std::string name, PollParams poll) {
    auto monitor = make_epoll_monitor();
    if (!monitor) return std::unexpected(monitor.error());
    auto notifier = EventNotifier::create();
    if (!notifier) return std::unexpected(notifier.error());
    std::unique_ptr<AioContext> ctx(
        new AioContext(std::move(name), poll, std::move(*monitor), std::move(*notifier)));

    // The wake-up eventfd is an ordinary handler for the kernel wait; while
    // busy-polling, the loop watches notified_ directly instead (D).
    AioContext* self = ctx.get();
    FdHandlerSpec spec;
    spec.on_read = [self] { self->notifier_.test_and_clear(); };
    if (auto r = ctx->set_fd_handler(ctx->notifier_.fd(), std::move(spec)); !r) return std::unexpected(r.error());
    ctx->handlers_.at(ctx->notifier_.fd())->internal = true;
    ctx->rebuild_poll_list();
    return ctx;
}

AioContext::AioContext(std::string name, PollParams poll, std::unique_ptr<FdMonitor> monitor,
                       EventNotifier notifier)
    : name_(std::move(name)),
      monitor_(std::move(monitor)),
      notifier_(std::move(notifier)),
      home_(&detail::t_thread_tag),
      poll_params_(poll) {}

AioContext::~AioContext() {
    assert_in_context(*this);
    // Workers finish what they run and queue its completion here; release
    // those with the rest.
    thread_pool_.reset();
    BhNode* node = pending_.exchange(nullptr, std::memory_order_acquire);
    while (node != nullptr) {
        BhNode* next = node->next_;
        node->flags_.fetch_and(~(BhNode::kQueued | BhNode::kScheduled), std::memory_order_acquire);
        node->discard();
        node = next;
    }
    if (timers_.size() > 0) {
        LOG_WARN("context '%s' destroyed with %zu armed timers", name_.c_str(), timers_.size());
        timers_.detach_all();  // their cancel()/destructor will not touch us
    }
}

AioContext::WaitingWork AioContext::waiting_work() const {
    assert_in_context(*this);
    WaitingWork w;
    for (const auto& [fd, h] : handlers_) w.fds += h->internal ? 0 : 1;
    w.timers = timers_.size();
    return w;
}

void AioContext::drain() {
    assert_in_context(*this);
    for (;;) {
        while (poll(false)) {
        }
        if (!thread_pool_ || thread_pool_->in_flight() == 0) break;
        poll(true);  // a completion is on its way
    }
}

void AioContext::attach_to_current_thread() {
    home_.store(&detail::t_thread_tag, std::memory_order_relaxed);
}

AioContext* AioContext::current() { return t_current; }

// ---------------------------------------------------------------------------
// One iteration.

bool AioContext::poll(bool blocking) {
    assert_in_context(*this);
    CurrentScope current(this);
    ++depth_;

    bool progress = run_bottom_halves();
    int64_t timeout = compute_timeout(blocking && !progress);
    const int64_t start = (timeout != 0 && poll_params_.max_ns > 0) ? now_ns() : 0;

    ReadyFd ready[kMaxReady];
    size_t n = busy_poll(timeout, ready);
    if (n == 0) {
        poll_streak_ = 0;
        // Without waiting, and with every fd having a poll function, polling
        // them once answers the question without a syscall (as QEMU does).
        if (timeout == 0 && kernel_optional_)
            n = run_poll_handlers_once(ready);
        else
            n = wait_in_kernel(timeout, ready);
    } else if (++poll_streak_ % kKernelCheckEvery == 0) {
        n += wait_in_kernel(0, std::span(ready).subspan(n));
    }
    if (start != 0) adjust_poll_window(now_ns() - start);
    // (D) Accept the notifications so far, however the wait ended.
    if (notified_.load(std::memory_order_relaxed)) notified_.exchange(false, std::memory_order_acquire);

    bool dispatched = dispatch_fds(std::span(ready, n));
    if (timers_.size() > 0) dispatched |= timers_.run_expired(now_ns());
    // What the handlers and timers scheduled runs now, not after one more
    // (non-blocking) trip to the kernel: e.g. a connection's replies, queued
    // by the requests its receive handler started, leave in this iteration.
    if (dispatched) run_bottom_halves();
    progress |= dispatched;

    if (--depth_ == 0 && !removed_handlers_.empty()) free_removed_handlers();
    return progress;
}

// The taken BHs go to the tail of batch_, and BHs run from its head. A nested
// poll() (a BH that waits synchronously) therefore first runs what remains of
// the outer iteration's batch, which its wait may depend on (QEMU's
// BHListSlice). BHs scheduled while the batch runs wait for the next one.
bool AioContext::run_bottom_halves() {
    if (pending_.load(std::memory_order_relaxed) == nullptr && batch_head_ == nullptr) return false;
    BhNode* stack = pending_.exchange(nullptr, std::memory_order_acquire);  // (A)
    // The list is a stack; reverse it so BHs run in the order they were scheduled.
    BhNode* fifo = nullptr;
    BhNode* last = stack;
    while (stack != nullptr) {
        BhNode* next = stack->next_;
        stack->next_ = fifo;
        fifo = stack;
        stack = next;
    }
    if (fifo != nullptr) {
        (batch_tail_ ? batch_tail_->next_ : batch_head_) = fifo;
        batch_tail_ = last;
    }
    bool progress = false;
    while (BhNode* node = batch_head_) {
        batch_head_ = node->next_;
        if (batch_head_ == nullptr) batch_tail_ = nullptr;
        progress |= run_bh_node(*node);
    }
    return progress;
}

bool AioContext::run_bh_node(BhNode& node) {
    ReentrancyGuard* guard = node.guard_;
    if (guard != nullptr && guard->engaged_) {
        // Stays kQueued; the guard queues it again when released.
        guard->deferred_bhs_.emplace_back(this, &node);
        return false;
    }
    // acquire: pairs with the release in schedule_node() when the node was
    // already queued (the fetch_or then synchronizes with this RMW).
    uint32_t old = node.flags_.fetch_and(~(BhNode::kQueued | BhNode::kScheduled), std::memory_order_acquire);
    if (old & BhNode::kDeleted) {
        node.discard();
        return false;
    }
    if (!(old & BhNode::kScheduled)) return false;  // cancelled
    if (guard != nullptr) {
        ReentrancyGuard::Scope scope(*guard);
        node.run();
    } else {
        node.run();  // may free the node
    }
    return true;
}

int64_t AioContext::compute_timeout(bool blocking) const {
    if (!blocking || pending_.load(std::memory_order_relaxed) != nullptr) return 0;
    Timer* t = timers_.earliest();
    if (t == nullptr) return -1;
    return std::max<int64_t>(0, t->deadline() - now_ns());
}

// Spins on the poll functions (and on notified_, for cross-thread BHs) for up
// to the poll window. Returns how many handlers are ready; sets `timeout_ns`
// to what is left of the wait (0 if another thread scheduled work).
size_t AioContext::busy_poll(int64_t& timeout_ns, std::span<ReadyFd> ready) {
    const int64_t window = !polling_possible_ ? 0 : timeout_ns < 0 ? poll_ns_ : std::min(timeout_ns, poll_ns_);
    if (window > 0) {
        set_polling(true);
        const int64_t start = now_ns();
        const int64_t end = start + window;
        int64_t now;
        do {
            if (size_t n = run_poll_handlers_once(ready)) return n;  // stay in poll mode
            if (notified_.load(std::memory_order_relaxed)) {
                timeout_ns = 0;
                return 0;
            }
            now = now_ns();
        } while (now < end);
        if (timeout_ns > 0) timeout_ns = std::max<int64_t>(0, timeout_ns - (now - start));
    }
    if (!polling_) return 0;
    // Notifications go back on; look once more for what arrived before they
    // did, or it could wait for the next event.
    set_polling(false);
    return run_poll_handlers_once(ready);
}

size_t AioContext::run_poll_handlers_once(std::span<ReadyFd> ready) {
    // By index: a callback may change the handler set (removed handlers stay
    // allocated until the outermost poll() returns).
    size_t n = 0;
    for (size_t i = 0; i < poll_handlers_.size() && n < ready.size(); i++) {
        FdHandler* h = poll_handlers_[i];
        if (!h->removed && !h->deferred && h->spec.poll()) ready[n++] = ReadyFd{h, kPollReady};
    }
    return n;
}

void AioContext::set_polling(bool on) {
    if (polling_ == on) return;
    polling_ = on;
    for (size_t i = 0; i < poll_handlers_.size(); i++) {
        FdHandler* h = poll_handlers_[i];
        if (!h->removed && h->spec.set_polling) h->spec.set_polling(on);
    }
}

size_t AioContext::wait_in_kernel(int64_t timeout_ns, std::span<ReadyFd> ready) {
    const bool may_block = timeout_ns != 0;
    if (may_block) {
        notify_me_.store(true, std::memory_order_seq_cst);                // (C) pairs with (B)
        if (notified_.load(std::memory_order_seq_cst) ||  // (C)
            pending_.load(std::memory_order_relaxed) != nullptr)  // queued by a poll function
            timeout_ns = 0;
        if (depth_ == 1 && before_wait_) before_wait_();
    }
    size_t n = monitor_->wait(ready, timeout_ns);
    if (may_block) {
        if (depth_ == 1 && after_wait_) after_wait_();
        notify_me_.store(false, std::memory_order_relaxed);
    }
    return n;
}

// QEMU's adjust_polling_time: keep a window that just catches events, grow it
// when the event came shortly after the window ended, shrink it when the
// loop slept for long.
void AioContext::adjust_poll_window(int64_t blocked_ns) {
    const int64_t max = poll_params_.max_ns;
    if (blocked_ns <= poll_ns_) return;
    if (blocked_ns > max) {
        const int64_t shrink = poll_params_.shrink > 0 ? poll_params_.shrink : 2;
        poll_ns_ = shrink == 1 ? 0 : poll_ns_ / shrink;
        if (poll_ns_ < kInitialPollNs) poll_ns_ = 0;
    } else if (poll_ns_ < max) {
        const int64_t grow = poll_params_.grow > 0 ? poll_params_.grow : 2;
        poll_ns_ = poll_ns_ == 0 ? kInitialPollNs : poll_ns_ * grow;
        poll_ns_ = std::min(poll_ns_, max);
    }
}

bool AioContext::dispatch_fds(std::span<const ReadyFd> ready) {
    bool progress = false;
    for (const ReadyFd& r : ready) {
        auto* h = static_cast<FdHandler*>(r.token);
        if (h->removed || h->deferred) continue;
        ReentrancyGuard* guard = h->spec.guard;
        if (guard != nullptr && guard->engaged_) {
            h->deferred = true;
            (void)apply_interest(*h, 0);  // silent until the guard is released
            guard->deferred_fds_.push_back({this, h->fd});
            continue;
        }
        std::optional<ReentrancyGuard::Scope> scope;
        if (guard != nullptr) scope.emplace(*guard);

        if (r.events & kPollReady) {
            (h->spec.on_poll_ready ? h->spec.on_poll_ready : h->spec.on_read)();
        } else {
            const bool error = r.events & kFdError;
            if (error && h->spec.on_error) {
                h->spec.on_error();
            } else {
                if ((r.events & kFdRead || error) && (h->interest & kFdRead)) h->spec.on_read();
                if (!h->removed && (r.events & kFdWrite || error) && (h->interest & kFdWrite))
                    h->spec.on_write();
            }
        }
        progress |= !h->internal;
    }
    return progress;
}

// ---------------------------------------------------------------------------
// fd handlers

Result<void> AioContext::apply_interest(FdHandler& h, uint32_t events) {
    // A silenced fd leaves the monitor altogether: epoll reports hang-ups even
    // for an empty mask, which would spin the loop.
    if (events == 0) {
        if (h.registered) monitor_->remove(h.fd);
        h.registered = false;
        return {};
    }
    auto r = h.registered ? monitor_->modify(h.fd, events, &h) : monitor_->add(h.fd, events, &h);
    if (r) h.registered = true;
    return r;
}

Result<void> AioContext::set_fd_handler(int fd, FdHandlerSpec spec) {
    assert_in_context(*this);
    remove_fd_handler(fd);
    auto h = std::make_unique<FdHandler>();
    h->fd = fd;
    h->interest = (spec.on_read ? uint32_t(kFdRead) : 0u) | (spec.on_write ? uint32_t(kFdWrite) : 0u);
    h->spec = std::move(spec);
    if (auto r = apply_interest(*h, h->interest); !r) {
        return fail(r.error().code, "context '" + name_ + "': watching fd " + std::to_string(fd));
    }
    // A handler joining while the loop polls is in poll mode too.
    if (polling_ && h->spec.set_polling) h->spec.set_polling(true);
    handlers_.emplace(fd, std::move(h));
    rebuild_poll_list();
    return {};
}

Result<void> AioContext::set_fd_events(int fd, uint32_t events) {
    assert_in_context(*this);
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return fail(ENOENT, "context '" + name_ + "': fd " + std::to_string(fd) + " not watched");
    FdHandler& h = *it->second;
    if (events & kFdRead) IOPLANE_ASSERT(h.spec.on_read);
    if (events & kFdWrite) IOPLANE_ASSERT(h.spec.on_write);
    if (h.interest == events) return {};
    h.interest = events;
    rebuild_poll_list();
    if (h.deferred) return {};  // applied when the guard releases it
    return apply_interest(h, events);
}

void AioContext::remove_fd_handler(int fd) {
    assert_in_context(*this);
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return;
    std::unique_ptr<FdHandler> h = std::move(it->second);
    handlers_.erase(it);
    (void)apply_interest(*h, 0);
    h->removed = true;
    // It leaves with its notifications on (it may be attached elsewhere next).
    if (polling_ && h->spec.set_polling) h->spec.set_polling(false);
    rebuild_poll_list();
    // A ready list further up the stack may still point at it.
    if (depth_ > 0) removed_handlers_.push_back(std::move(h));
}

void AioContext::resume_deferred_fd(int fd) {
    auto it = handlers_.find(fd);
    if (it == handlers_.end() || !it->second->deferred) return;
    it->second->deferred = false;
    if (auto r = apply_interest(*it->second, it->second->interest); !r)
        LOG_ERROR("context '%s': re-watching fd %d: %s", name_.c_str(), fd, r.error().describe().c_str());
}

void AioContext::rebuild_poll_list() {
    poll_handlers_.clear();
    kernel_optional_ = true;
    polling_possible_ = true;
    for (auto& [fd, h] : handlers_) {
        if (h->spec.poll) poll_handlers_.push_back(h.get());
        // Write readiness and errors are only seen by asking the kernel. The
        // wake-up notifier is not needed without a wait: notified_ is read.
        if (h->internal) continue;
        if (!h->spec.poll || (h->interest & kFdWrite) || h->spec.on_error) kernel_optional_ = false;
        // A watched fd that cannot be polled would only be noticed after the
        // polling window: then polling adds latency, so it is off (QEMU's
        // poll_disable_cnt).
        if (h->interest != 0 && !h->spec.poll) polling_possible_ = false;
    }
}

void AioContext::free_removed_handlers() { removed_handlers_.clear(); }

// ---------------------------------------------------------------------------
// Bottom halves

BhPtr AioContext::new_bh(Callback cb, ReentrancyGuard* guard) {
    BhPtr bh(new BottomHalf(*this, std::move(cb)));
    bh->set_guard(guard);
    return bh;
}

void AioContext::schedule_oneshot(Callback fn) { schedule_node(*new OneshotBh(std::move(fn))); }

void AioContext::schedule_node(BhNode& node) {
    // release: pairs with the acquire in run_bh_node() if it was queued already.
    uint32_t old = node.flags_.fetch_or(BhNode::kQueued | BhNode::kScheduled, std::memory_order_acq_rel);
    if (!(old & BhNode::kQueued)) enqueue(node);
}

void AioContext::enqueue(BhNode& node) {
    BhNode* head = pending_.load(std::memory_order_relaxed);
    do {
        node.next_ = head;
    } while (!pending_.compare_exchange_weak(head, &node, std::memory_order_release,  // (A)
                                             std::memory_order_relaxed));
    // The home thread is running this code, so its loop is not asleep.
    if (!in_home_thread()) notify();
}

void AioContext::notify() {
    notified_.store(true, std::memory_order_seq_cst);                // (B) pairs with (C); (D)
    if (notify_me_.load(std::memory_order_seq_cst)) notifier_.set();  // (B)
}

void AioContext::set_poll_params(PollParams params) {
    assert_in_context(*this);
    poll_params_ = params;
    poll_ns_ = std::min(poll_ns_, std::max<int64_t>(params.max_ns, 0));
}

ThreadPool& AioContext::thread_pool() {
    assert_in_context(*this);
    if (!thread_pool_) thread_pool_ = std::make_unique<ThreadPool>(*this);
    return *thread_pool_;
}

void AioContext::set_wait_hooks(Callback before_wait, Callback after_wait) {
    assert_in_context(*this);
    before_wait_ = std::move(before_wait);
    after_wait_ = std::move(after_wait);
}

// ---------------------------------------------------------------------------
// BottomHalf and ReentrancyGuard

void BottomHalf::schedule() { ctx_.schedule_node(*this); }

void BottomHalf::cancel() { flags_.fetch_and(~kScheduled, std::memory_order_relaxed); }

void BottomHalf::run() {
    running_ = true;
    cb_();
    running_ = false;
    // Deleted by its own callback: free it now, unless it was scheduled again
    // (then the loop frees it when it pops it).
    const uint32_t flags = flags_.load(std::memory_order_relaxed);
    if ((flags & kDeleted) && !(flags & kQueued)) delete this;
}

void BottomHalf::discard() {
    if (flags_.load(std::memory_order_relaxed) & kDeleted) delete this;
}

void BottomHalf::Deleter::operator()(BottomHalf* bh) const {
    assert_in_context(bh->ctx_);
    uint32_t old = bh->flags_.fetch_or(kDeleted, std::memory_order_acq_rel);
    // Queued: the loop frees it when it pops it. Running: run() frees it
    // after the callback returns (its captures are still in use).
    if (!(old & kQueued) && !bh->running_) delete bh;
}

ReentrancyGuard::~ReentrancyGuard() { IOPLANE_ASSERT(!engaged_); }

ReentrancyGuard::Scope::~Scope() {
    if (!outermost_) return;
    guard_.engaged_ = false;
    auto bhs = std::move(guard_.deferred_bhs_);
    auto fds = std::move(guard_.deferred_fds_);
    for (auto [ctx, node] : bhs) ctx->enqueue(*node);  // still kQueued
    for (auto [ctx, fd] : fds) ctx->resume_deferred_fd(fd);
}

}  // namespace ioplane
