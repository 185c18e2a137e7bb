// BatchedWriter: the coroutines of one context write whole messages to one
// stream fd, and the messages queued in the same loop iteration leave in one
// sendmsg. This is QEMU's "cork" done automatically: sixteen replies finished
// by one batch of requests cost one system call, not sixteen.
//
// The first writer of a batch becomes its flusher: it yields once, so every
// coroutine the current iteration runs can queue its message, then writes the
// whole queue (and whatever joins it meanwhile) and resumes the others. Each
// writer stays suspended until its message is out, so its iovecs and the
// buffers they point to need live only as long as its co_await: nothing is
// copied. Messages are never interleaved and leave in queue order. After a
// failed write every later write fails at once with the same error.
//
// Thread contract: coroutine in the AsyncFd's context; the writer must not be
// destroyed while a write is in progress.
#pragma once

#include <sys/uio.h>

#include <coroutine>
#include <optional>
#include <span>
#include <vector>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/task.h"

namespace ioplane {

class BatchedWriter {
public:
    explicit BatchedWriter(AsyncFd& afd) : afd_(afd) {}
    BatchedWriter(const BatchedWriter&) = delete;
    BatchedWriter& operator=(const BatchedWriter&) = delete;

    // All of `iov` (the entries themselves are not modified).
    Task<Result<void>> write(std::span<const iovec> iov);

private:
    struct Pending {
        std::span<const iovec> iov;
        std::coroutine_handle<> waiter;  // null for the flusher itself
        Result<void> result;
        Pending* next = nullptr;
    };
    struct WaitWritten;

    void enqueue(Pending& p);
    Task<void> flush_all();

    AsyncFd& afd_;
    Pending* head_ = nullptr;
    Pending* tail_ = nullptr;
    bool flushing_ = false;
    std::optional<Error> failed_;
    std::vector<iovec> gather_;  // reused between batches
};

}  // namespace ioplane
