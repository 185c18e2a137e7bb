// Coroutine reads and writes on a non-blocking stream socket (or pipe)
// through an AsyncFd. A closed connection is an error (ECONNRESET for EOF),
// never a hang.
//
// Thread contract: coroutine in the AsyncFd's context.
#pragma once

#include <sys/uio.h>

#include <span>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/task.h"

namespace ioplane {

// At least one byte (or an error), at most `len`.
Task<Result<size_t>> read_some(AsyncFd& afd, void* buf, size_t len);
// Exactly `len` bytes.
Task<Result<void>> read_exact(AsyncFd& afd, void* buf, size_t len);
// All of `iov` (which is consumed: entries are advanced as data goes out).
Task<Result<void>> write_all(AsyncFd& afd, std::span<iovec> iov);

}  // namespace ioplane
