#include "message_io.h"

#include <sys/socket.h>

#include <cerrno>

#include "fd_passing.h"
#include "ioplane/core/stream_io.h"

namespace ioplane::vhost_user {

Task<Result<Message>> receive_message(AsyncFd& afd) {
    Message m;
    uint8_t header[kHeaderSize];
    size_t got = 0;
    while (got < kHeaderSize) {
        auto n = receive_with_fds(afd.fd(), header + got, kHeaderSize - got, m.fds, MSG_DONTWAIT);
        if (m.fds.size() > kMaxFds)  // fds may come with each piece of a header split up
            co_return fail(EPROTO, "more than " + std::to_string(kMaxFds) + " file descriptors with one message");
        if (n) {
            got += *n;
            continue;
        }
        if (n.error().code != EAGAIN && n.error().code != EINTR) co_return std::unexpected(n.error());
        if (!co_await afd.readable()) co_return fail(ECONNRESET, "connection closed");
    }
    auto h = decode_header(std::span<const uint8_t, kHeaderSize>(header, kHeaderSize));
    if (!h) co_return std::unexpected(h.error());
    m.header = *h;
    m.payload.resize(h->size);
    if (h->size > 0) {
        auto r = co_await read_exact(afd, m.payload.data(), m.payload.size());
        if (!r) co_return std::unexpected(r.error());
    }
    co_return m;
}

Task<Result<void>> send_reply(AsyncFd& afd, std::span<const uint8_t> bytes, int fd) {
    while (fd >= 0 && !bytes.empty()) {
        auto n = send_with_fd(afd.fd(), bytes.data(), bytes.size(), fd);
        if (n) {
            bytes = bytes.subspan(*n);
            break;
        }
        if (n.error().code == EINTR) continue;
        if (n.error().code != EAGAIN) co_return std::unexpected(n.error());
        if (!co_await afd.writable()) co_return fail(ECONNRESET, "connection closed");
    }
    if (bytes.empty()) co_return Result<void>{};
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    co_return co_await write_all(afd, std::span<iovec>(&iov, 1));
}

}  // namespace ioplane::vhost_user
