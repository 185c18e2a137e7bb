// BufferedReader: reads a stream socket ahead into a buffer, so that one
// read() brings several small messages (a batch of NBD requests, 9P
// messages) at once; large reads bypass the buffer and go straight to their
// destination.
//
// A read that returns less than the buffer's room has emptied the socket, so
// the next refill first waits for the loop to report the fd readable instead
// of issuing a read() that would only say EAGAIN: one system call less per
// batch. (The loop watches the fd level-triggered: data that came meanwhile
// is reported at once.)
//
// Thread contract: coroutine in the AsyncFd's context; one reader at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/task.h"

namespace ioplane {

class BufferedReader {
public:
    explicit BufferedReader(AsyncFd& afd, size_t buffer_size = 64 * 1024);
    BufferedReader(const BufferedReader&) = delete;
    BufferedReader& operator=(const BufferedReader&) = delete;

    // Exactly `len` bytes (ECONNRESET if the peer closes first).
    Task<Result<void>> read_exact(void* dst, size_t len);
    // Reads and drops `len` bytes.
    Task<Result<void>> skip(uint64_t len);
    // Bytes read ahead and not yet consumed.
    size_t buffered() const { return end_ - start_; }

private:
    Task<Result<void>> refill();

    AsyncFd& afd_;
    const size_t size_;
    std::unique_ptr<char[]> buf_;
    size_t start_ = 0, end_ = 0;
    bool drained_ = false;  // the last refill emptied the socket
};

}  // namespace ioplane
