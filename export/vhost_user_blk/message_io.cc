#include "message_io.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "ioplane/core/stream_io.h"

namespace ioplane::vhost_user {

namespace {

// recvmsg of the header's first bytes, collecting any fds that came with them.
Result<size_t> receive_with_fds(int fd, uint8_t* buf, size_t len, std::vector<UniqueFd>& fds) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return fail_errno("recvmsg");
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            fds.emplace_back(received);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC)
        return fail(EPROTO, "more than " + std::to_string(kMaxFds) + " file descriptors with one message");
    if (n == 0) return fail(ECONNRESET, "front end closed the connection");
    return size_t(n);
}

}  // namespace

Task<Result<Message>> receive_message(AsyncFd& afd) {
    Message m;
    uint8_t header[kHeaderSize];
    size_t got = 0;
    while (got < kHeaderSize) {
        auto n = receive_with_fds(afd.fd(), header + got, kHeaderSize - got, m.fds);
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

Task<Result<void>> send_reply(AsyncFd& afd, std::span<const uint8_t> bytes) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    co_return co_await write_all(afd, std::span<iovec>(&iov, 1));
}

}  // namespace ioplane::vhost_user
