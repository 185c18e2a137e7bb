// UringQueue: an io_uring for one file node, bound to the node's AioContext.
// A coroutine submits an operation and suspends; the completion is noticed
// through the ring's eventfd in the loop, or by the loop's poll function
// while it busy-polls, and resumes the coroutine in that context.
//
// Thread contract: create in the main thread; submit from coroutines in the
// attached context; detach/attach in the old / new context while the node is
// drained (nothing in flight).
#pragma once

#include <liburing.h>

#include <coroutine>
#include <memory>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/error.h"

namespace ioplane::block {

class UringQueue {
public:
    static Result<std::unique_ptr<UringQueue>> create(unsigned entries);
    ~UringQueue();
    UringQueue(const UringQueue&) = delete;
    UringQueue& operator=(const UringQueue&) = delete;

    Result<void> attach(AioContext& ctx);
    void detach();
    // Whether a loop watches the ring (else the driver uses its thread path).
    bool attached() const { return ctx_ != nullptr; }

    // `co_await queue.op([](io_uring_sqe* sqe) { io_uring_prep_...(sqe, ...); })`
    // yields the completion's res (bytes, or -errno).
    // What a completion resumes.
    struct OpBase {
        std::coroutine_handle<> h;
        int res = 0;
    };

    template <class Prep>
    class Op : private OpBase {
    public:
        Op(UringQueue& q, Prep prep) : q_(q), prep_(std::move(prep)) {}
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) {
            this->h = h;
            io_uring_sqe* sqe = q_.get_sqe();
            if (sqe == nullptr) {
                this->res = -EAGAIN;
                return false;
            }
            prep_(sqe);
            io_uring_sqe_set_data(sqe, static_cast<OpBase*>(this));
            q_.submit();
            return true;
        }
        int await_resume() const noexcept { return this->res; }

    private:
        UringQueue& q_;
        Prep prep_;
    };
    template <class Prep>
    Op<Prep> op(Prep prep) {
        return Op<Prep>(*this, std::move(prep));
    }

private:
    UringQueue() = default;
    io_uring_sqe* get_sqe();
    void submit();
    void reap();

    io_uring ring_{};
    int eventfd_ = -1;
    AioContext* ctx_ = nullptr;
    unsigned in_flight_ = 0;
};

}  // namespace ioplane::block
