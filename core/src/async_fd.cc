#include "ioplane/core/async_fd.h"

#include <poll.h>

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
    spec.on_read = [this] { wake(false); };
    spec.on_write = [this] { wake(true); };
    // Errors and hang-ups wake both: each side then sees the error itself.
    spec.on_error = [this] { wake_both(); };
    // Busy-polling IOThreads look at the fd with a zero-timeout poll(2): a
    // syscall, but far cheaper than sleeping and being woken (the point of
    // polling), and without it the fd would disable polling in its context.
    spec.poll = [this] {
        if (!reader_ && !writer_) return false;
        pollfd p{fd_, short((reader_ ? POLLIN : 0) | (writer_ ? POLLOUT : 0)), 0};
        return ::poll(&p, 1, 0) > 0;
    };
    spec.on_poll_ready = [this] { wake_both(); };
    if (auto r = ctx_->set_fd_handler(fd_, std::move(spec)); !r) return r;
    update_interest();
    return {};
}

void AsyncFd::wait(bool write, std::coroutine_handle<> h) {
    assert_in_context(*ctx_);
    (write ? writer_ : reader_) = h;
    update_interest();
}

void AsyncFd::update_interest() {
    if (ctx_ == nullptr) return;
    uint32_t events = (reader_ ? uint32_t(kFdRead) : 0u) | (writer_ ? uint32_t(kFdWrite) : 0u);
    if (auto r = ctx_->set_fd_events(fd_, events); !r)
        LOG_ERROR("fd %d: %s", fd_, r.error().describe().c_str());
}

void AsyncFd::wake(bool write) {
    std::coroutine_handle<> h = std::exchange(write ? writer_ : reader_, nullptr);
    update_interest();
    if (h) h.resume();  // may destroy *this (the connection closing): touch nothing after
}

// Wakes whoever waits; a side whose fd is not ready yet simply waits again
// (its read or write sees EAGAIN). Both handles are taken first: resuming
// one may destroy *this.
void AsyncFd::wake_both() {
    std::coroutine_handle<> r = std::exchange(reader_, nullptr);
    std::coroutine_handle<> w = std::exchange(writer_, nullptr);
    update_interest();
    if (w) w.resume();
    if (r) r.resume();
}

void AsyncFd::detach() {
    if (ctx_ == nullptr) return;
    assert_in_context(*ctx_);
    ctx_->remove_fd_handler(fd_);
    ctx_ = nullptr;
}

Result<void> AsyncFd::attach(AioContext& ctx) {
    IOPLANE_ASSERT(ctx_ == nullptr);
    ctx_ = &ctx;
    return register_handler();  // waiters keep waiting, now on ctx
}

void AsyncFd::wake_all_closed() {
    IOPLANE_ASSERT(ctx_ != nullptr);
    closed_ = true;
    std::coroutine_handle<> r = std::exchange(reader_, nullptr);
    std::coroutine_handle<> w = std::exchange(writer_, nullptr);
    update_interest();
    // Resumed from a BH, not nested here: the caller may be one of them.
    if (r) ctx_->schedule_oneshot([r] { r.resume(); });
    if (w) ctx_->schedule_oneshot([w] { w.resume(); });
}

}  // namespace ioplane
