#include "ioplane/core/batched_writer.h"

#include "ioplane/core/coroutine.h"
#include "ioplane/core/stream_io.h"

namespace ioplane {

struct BatchedWriter::WaitWritten {
    Pending& p;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { p.waiter = h; }
    void await_resume() const noexcept {}
};

void BatchedWriter::enqueue(Pending& p) {
    (tail_ != nullptr ? tail_->next : head_) = &p;
    tail_ = &p;
}

Task<Result<void>> BatchedWriter::write(std::span<const iovec> iov) {
    if (failed_) co_return std::unexpected(*failed_);
    Pending me{iov, {}, {}, nullptr};
    enqueue(me);
    if (flushing_) {
        co_await WaitWritten{me};  // the flusher resumes us once our bytes are out
        co_return me.result;
    }
    flushing_ = true;
    co_await yield_now();  // the rest of this loop iteration may queue its messages
    co_await flush_all();
    flushing_ = false;
    co_return me.result;
}

// Writes batches until the queue is empty. Waiters are resumed as their batch
// completes; they may queue new messages, which join the next batch.
Task<void> BatchedWriter::flush_all() {
    while (head_ != nullptr) {
        Pending* batch = std::exchange(head_, nullptr);
        tail_ = nullptr;
        gather_.clear();
        for (Pending* p = batch; p != nullptr; p = p->next) gather_.insert(gather_.end(), p->iov.begin(), p->iov.end());
        Result<void> r;
        if (failed_) {
            r = std::unexpected(*failed_);
        } else if (r = co_await write_all(afd_, gather_); !r) {
            failed_ = r.error();
        }
        for (Pending* p = batch; p != nullptr;) {
            Pending* next = p->next;  // a resumed waiter ends, and its Pending with it
            p->result = r;
            if (p->waiter) p->waiter.resume();
            p = next;
        }
    }
}

}  // namespace ioplane
