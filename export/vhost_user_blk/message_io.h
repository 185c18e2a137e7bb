// Reading and writing vhost-user messages on the control socket, with the
// file descriptors that travel in SCM_RIGHTS ancillary data (they come with
// the first byte of a message's header).
//
// Thread contract: coroutines in the AsyncFd's context.
#pragma once

#include <vector>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/task.h"
#include "ioplane/core/unique_fd.h"
#include "protocol.h"

namespace ioplane::vhost_user {

struct Message {
    Header header;
    std::vector<uint8_t> payload;
    std::vector<UniqueFd> fds;
};

// The next message. ECONNRESET at a clean end of the stream; EPROTO for a
// bad header or more than kMaxFds descriptors (those received are closed).
Task<Result<Message>> receive_message(AsyncFd& afd);
// Sends a whole encoded reply. `bytes` must stay valid until it completes
// (pass a named vector: see docs/9P.md on g++ 12 and temporaries in co_await).
// With `fd` >= 0, the fd travels with the reply's first byte
// (GET_INFLIGHT_FD).
Task<Result<void>> send_reply(AsyncFd& afd, std::span<const uint8_t> bytes, int fd = -1);

}  // namespace ioplane::vhost_user
