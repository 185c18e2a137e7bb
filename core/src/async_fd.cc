#include "ioplane/core/async_fd.h"

#include <poll.h>

#include "ioplane/core/clock.h"
#include "ioplane/core/log.h"

namespace ioplane {

Result<std::unique_ptr<AsyncFd>> AsyncFd::create(AioContext& ctx, int fd) {
    std::unique_ptr<AsyncFd> afd(new AsyncFd(ctx, fd));
    if (auto r = afd->register_handler(); !r) return std::unexpected(r.error());
    return afd;
}

AsyncFd::~AsyncFd() {
    if (ctx_ != nullptr) ctx_->remove_fd_handler(fd_);
}

Result<void> AsyncFd::register_handler() {
    FdHandlerSpec spec;
    spec.on_read = [this] { on_readable(); };
    spec.on_write = [this] { wake(true); };
    // Errors and hang-ups wake both: each side then sees the error itself.
    spec.on_error = [this] { wake_both(/*error=*/true); };
    // Busy-polling IOThreads look at the fd with a zero-timeout poll(2): a
    // syscall, but far cheaper than sleeping and being woken (the point of
    // polling), and without it the fd would disable polling in its context.
    spec.poll = [this] {
        if (!reader_ && !writer_) return false;
        pollfd p{fd_, short((reader_ ? POLLIN : 0) | (writer_ ? POLLOUT : 0)), 0};
        return ::poll(&p, 1, 0) > 0;
    };
    spec.on_poll_ready = [this] { wake_both(/*error=*/false); };
    if (auto r = ctx_->set_fd_handler(fd_, std::move(spec)); !r) return r;
    armed_ = kFdRead | kFdWrite;  // what set_fd_handler starts with
    update_interest();
    return {};
}

void AsyncFd::wait(bool write, std::coroutine_handle<> h) {
    assert_in_context(*ctx_);
    (write ? writer_ : reader_) = h;
    update_interest();
}

// Read interest is dropped lazily: a receive loop waits again right after it
// consumed what woke it, so keeping the fd armed between two waits saves two
// epoll_ctl calls per wake-up. If data arrives while nobody waits, the loop
// reports it once and the interest goes then (on_readable). Write interest is
// dropped at once: a socket is writable nearly always, so a lazily kept write
// interest would cost a spurious wake-up each time.
void AsyncFd::update_interest() {
    if (ctx_ == nullptr) return;
    uint32_t events = (reader_ || read_armed_ ? uint32_t(kFdRead) : 0u) | (writer_ ? uint32_t(kFdWrite) : 0u);
    read_armed_ = events & kFdRead;
    if (events == armed_) return;
    armed_ = events;
    if (auto r = ctx_->set_fd_events(fd_, events); !r)
        LOG_ERROR("fd %d: %s", fd_, r.error().describe().c_str());
}

void AsyncFd::disarm_read() {
    read_armed_ = false;
    update_interest();
}

void AsyncFd::on_readable() {
    if (!reader_) return disarm_read();  // nobody waits: stop the level-triggered reports
    std::coroutine_handle<> h = std::exchange(reader_, nullptr);
    h.resume();  // may destroy *this (the connection closing): touch nothing after
}

void AsyncFd::wake(bool write) {
    std::coroutine_handle<> h = std::exchange(write ? writer_ : reader_, nullptr);
    update_interest();
    if (h) h.resume();  // may destroy *this (the connection closing): touch nothing after
}

// Wakes whoever waits; a side whose fd is not ready yet simply waits again
// (its read or write sees EAGAIN). Both handles are taken first: resuming
// one may destroy *this.
void AsyncFd::wake_both(bool error) {
    std::coroutine_handle<> r = std::exchange(reader_, nullptr);
    std::coroutine_handle<> w = std::exchange(writer_, nullptr);
    if (error) read_armed_ = false;  // an error stays reported: only waiters may re-arm
    update_interest();
    if (w) w.resume();
    if (r) r.resume();
}

void AsyncFd::detach() {
    if (ctx_ == nullptr) return;
    assert_in_context(*ctx_);
    ctx_->remove_fd_handler(fd_);
    ctx_ = nullptr;
    armed_ = 0;
}

Result<void> AsyncFd::attach(AioContext& ctx) {
    IOPLANE_ASSERT(ctx_ == nullptr);
    ctx_ = &ctx;
    return register_handler();  // waiters keep waiting, now on ctx
}

void AsyncFd::note_write_blocked() {
    if (write_stalled_since_ns_ == 0) write_stalled_since_ns_ = now_ns();
}

void AsyncFd::wake_all_closed() {
    IOPLANE_ASSERT(ctx_ != nullptr);
    closed_ = true;
    std::coroutine_handle<> r = std::exchange(reader_, nullptr);
    std::coroutine_handle<> w = std::exchange(writer_, nullptr);
    disarm_read();
    // Resumed from a BH, not nested here: the caller may be one of them.
    if (r) ctx_->schedule_oneshot([r] { r.resume(); });
    if (w) ctx_->schedule_oneshot([w] { w.resume(); });
}

}  // namespace ioplane
