// Receiving the file descriptors a vhost-user front end sends with its
// messages (SCM_RIGHTS ancillary data), and sending one with a reply. Used
// by the daemon's control channel (message_io) and by
// bench/vublk_reference_backend.
//
// Thread contract: any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ioplane/core/error.h"
#include "ioplane/core/unique_fd.h"

namespace ioplane::vhost_user {

// One recvmsg() of up to `len` bytes into `buf`, with `flags` (plus
// MSG_CMSG_CLOEXEC); the fds that came with those bytes are appended to
// `fds`, so none leaks whatever the outcome. Errors carry errno (EAGAIN,
// EINTR, ...); more fds than kMaxFds in one control message is EPROTO, the
// end of the stream ECONNRESET.
Result<size_t> receive_with_fds(int fd, uint8_t* buf, size_t len, std::vector<UniqueFd>& fds, int flags);
// One sendmsg() of up to `len` bytes with `passed` in SCM_RIGHTS (it goes
// with the first byte sent), non-blocking. Errors carry errno.
Result<size_t> send_with_fd(int fd, const uint8_t* buf, size_t len, int passed);

}  // namespace ioplane::vhost_user
