// AsyncFd: a non-blocking fd that coroutines wait on (`co_await fd.readable()`)
// in its AioContext. One reader and one writer may wait at a time (a
// connection's receive loop and its reply sender). The fd stays registered
// with the loop; interest is switched on while someone waits (and read
// interest a little longer, see update_interest), so an unread socket does
// not spin the level-triggered loop.
//
// Moving between contexts: detach() in the old context, attach(ctx) in the
// new one. A coroutine waiting across the move is resumed by the new context
// (and so continues there).
//
// Thread contract: home context of the context it is attached to, for every
// member. The fd is borrowed: close it after destroying the AsyncFd.
#pragma once

#include <coroutine>

#include "ioplane/core/aio_context.h"

namespace ioplane {

class AsyncFd {
public:
    static Result<std::unique_ptr<AsyncFd>> create(AioContext& ctx, int fd);
    ~AsyncFd();
    AsyncFd(const AsyncFd&) = delete;
    AsyncFd& operator=(const AsyncFd&) = delete;

    int fd() const { return fd_; }
    AioContext* context() const { return ctx_; }

    class Awaiter {
    public:
        Awaiter(AsyncFd& afd, bool write) : afd_(afd), write_(write) {}
        bool await_ready() const noexcept { return afd_.closed_; }
        void await_suspend(std::coroutine_handle<> h) { afd_.wait(write_, h); }
        // False once the fd was shut down (wake_all_closed): stop using it.
        bool await_resume() const noexcept { return !afd_.closed_; }

    private:
        AsyncFd& afd_;
        bool write_;
    };
    // Resumes when the fd is readable (or has an error / hang-up).
    Awaiter readable() { return Awaiter(*this, false); }
    Awaiter writable() { return Awaiter(*this, true); }

    void detach();
    Result<void> attach(AioContext& ctx);
    // Wakes both waiters with "closed": used to end a connection's coroutines.
    void wake_all_closed();

    // Since when writes have found no room in the fd and no byte went out
    // (now_ns() time; 0 while writes make progress): how long a peer has not
    // been reading. Kept by write_all() (stream_io.h).
    int64_t write_stalled_since_ns() const { return write_stalled_since_ns_; }
    void note_write_blocked();
    void note_write_progress() { write_stalled_since_ns_ = 0; }

private:
    AsyncFd(AioContext& ctx, int fd) : ctx_(&ctx), fd_(fd) {}
    Result<void> register_handler();
    void wait(bool write, std::coroutine_handle<> h);
    void update_interest();
    void disarm_read();
    void on_readable();
    void wake(bool write);
    void wake_both(bool error);

    AioContext* ctx_;
    const int fd_;
    std::coroutine_handle<> reader_, writer_;
    uint32_t armed_ = 0;      // events last given to the context
    bool read_armed_ = false;  // read interest kept between two waits
    bool closed_ = false;
    int64_t write_stalled_since_ns_ = 0;
};

}  // namespace ioplane
