#include "uring.h"

#include <sys/eventfd.h>
#include <cstring>
#include <unistd.h>

#include "ioplane/core/log.h"

namespace ioplane::block {

Result<std::unique_ptr<UringQueue>> UringQueue::create(unsigned entries) {
    std::unique_ptr<UringQueue> q(new UringQueue());
    if (int r = io_uring_queue_init(entries, &q->ring_, 0); r < 0) return fail(-r, "io_uring_queue_init");
    q->eventfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->eventfd_ < 0) {
        auto e = fail_errno("eventfd");
        io_uring_queue_exit(&q->ring_);
        return e;
    }
    if (int r = io_uring_register_eventfd(&q->ring_, q->eventfd_); r < 0) {
        ::close(q->eventfd_);
        io_uring_queue_exit(&q->ring_);
        return fail(-r, "io_uring_register_eventfd");
    }
    return q;
}

UringQueue::~UringQueue() {
    IOPLANE_ASSERT(in_flight_ == 0 && ctx_ == nullptr);
    io_uring_queue_exit(&ring_);
    ::close(eventfd_);
}

Result<void> UringQueue::attach(AioContext& ctx) {
    FdHandlerSpec spec;
    spec.on_read = [this] {
        uint64_t n;
        ssize_t ignored = ::read(eventfd_, &n, sizeof n);
        (void)ignored;
        reap();
    };
    // Busy-polling IOThreads see completions without the eventfd.
    spec.poll = [this] { return io_uring_cq_ready(&ring_) > 0; };
    spec.on_poll_ready = [this] { reap(); };
    if (auto r = ctx.set_fd_handler(eventfd_, std::move(spec)); !r) return r;
    ctx_ = &ctx;
    return {};
}

void UringQueue::detach() {
    IOPLANE_ASSERT(in_flight_ == 0);
    if (ctx_ != nullptr) ctx_->remove_fd_handler(eventfd_);
    ctx_ = nullptr;
}

io_uring_sqe* UringQueue::get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        // Submission queue full: push what is queued, then there is room.
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

void UringQueue::submit() {
    in_flight_++;
    int r;
    do {
        r = io_uring_submit(&ring_);
    } while (r == -EINTR);
    if (r < 0) LOG_ERROR("io_uring_submit: %s", strerror(-r));
}

void UringQueue::reap() {
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        auto* op = static_cast<OpBase*>(io_uring_cqe_get_data(cqe));
        op->res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        in_flight_--;
        op->h.resume();  // may submit more, or end the coroutine
    }
}

}  // namespace ioplane::block
