#include "ioplane/core/stream_io.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace ioplane {

Task<Result<size_t>> read_some(AsyncFd& afd, void* buf, size_t len) {
    for (;;) {
        ssize_t n = ::read(afd.fd(), buf, len);
        if (n > 0) co_return size_t(n);
        if (n == 0) co_return fail(ECONNRESET, "connection closed by peer");
        if (errno == EINTR) continue;
        if (errno != EAGAIN) co_return fail_errno("read");
        if (!co_await afd.readable()) co_return fail(ESHUTDOWN, "connection shut down");
    }
}

Task<Result<void>> read_exact(AsyncFd& afd, void* buf, size_t len) {
    auto* p = static_cast<char*>(buf);
    while (len > 0) {
        auto n = co_await read_some(afd, p, len);
        if (!n) co_return std::unexpected(n.error());
        p += *n;
        len -= *n;
    }
    co_return Result<void>{};
}

Task<Result<void>> write_all(AsyncFd& afd, std::span<iovec> iov) {
    size_t first = 0;
    while (first < iov.size()) {
        msghdr msg{};
        msg.msg_iov = &iov[first];
        msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
        // sendmsg with MSG_NOSIGNAL: a vanished peer is EPIPE, not SIGPIPE.
        ssize_t n = ::sendmsg(afd.fd(), &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) n = ::writev(afd.fd(), &iov[first], int(msg.msg_iovlen));
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) co_return fail_errno("write");
            afd.note_write_blocked();
            if (!co_await afd.writable()) co_return fail(ESHUTDOWN, "connection shut down");
            continue;
        }
        afd.note_write_progress();
        size_t left = size_t(n);
        while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
        if (left > 0) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
            iov[first].iov_len -= left;
        }
    }
    co_return Result<void>{};
}

}  // namespace ioplane
