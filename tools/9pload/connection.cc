#include "connection.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "messages.h"

namespace ioplane::load9p {
namespace {
constexpr size_t kMaxIov = 64;
// Below this much free space at the end, the receive buffer is compacted.
constexpr size_t kMinRoom = 16 * 1024;

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
}  // namespace

Connection::Connection(int fd) : fd_(fd) { set_max_message(max_message_); }

Connection::Connection(Connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), max_message_(other.max_message_), timeout_ms_(other.timeout_ms_),
      out_(std::move(other.out_)), segments_(std::move(other.segments_)), sealed_(other.sealed_),
      next_segment_(other.next_segment_), segment_sent_(other.segment_sent_), in_(std::move(other.in_)),
      in_start_(other.in_start_), in_end_(other.in_end_) {}

Connection::~Connection() {
    if (fd_ >= 0) ::close(fd_);
}

Result<Connection> Connection::connect_tcp(std::string_view host_port) {
    std::string host, port;
    const size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos || colon + 1 == host_port.size()) {
        return fail(EINVAL, "address '" + std::string(host_port) + "': expected HOST:PORT");
    }
    host = std::string(host_port.substr(0, colon));
    port = std::string(host_port.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
        return fail(EINVAL, "address '" + std::string(host_port) + "': " + ::gai_strerror(rc));
    }
    int err = ECONNREFUSED;
    for (addrinfo* a = list; a; a = a->ai_next) {
        int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            ::freeaddrinfo(list);
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return Connection(fd);
        }
        err = errno;
        ::close(fd);
    }
    ::freeaddrinfo(list);
    return fail(err, "connect to " + std::string(host_port));
}

Result<Connection> Connection::connect_unix(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) return fail(ENAMETOOLONG, "socket path '" + path + "'");
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno("socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
        auto e = fail_errno("connect to " + path);
        ::close(fd);
        return e;
    }
    return Connection(fd);
}

void Connection::set_max_message(uint32_t bytes) {
    max_message_ = std::max<uint32_t>(bytes, fs9p::kHeaderSize);
    // Room for a whole message wherever the previous one ended, so that a
    // large reply is moved at most once.
    const size_t size = 2 * size_t(max_message_) + 4 * kMinRoom;
    if (in_.size() < size) in_.resize(size);
}

void Connection::set_timeout(std::chrono::milliseconds timeout) {
    timeout_ms_ = int(std::clamp<int64_t>(timeout.count(), 1, INT32_MAX));
    timeval tv{};
    tv.tv_sec = timeout_ms_ / 1000;
    tv.tv_usec = (timeout_ms_ % 1000) * 1000;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

void Connection::seal() {
    if (out_.size() == sealed_) return;
    Segment& last = segments_.empty() ? segments_.emplace_back(Segment{nullptr, sealed_, 0}) : segments_.back();
    if (last.external == nullptr && last.offset + last.length == sealed_) {
        last.length += out_.size() - sealed_;
    } else {
        segments_.push_back(Segment{nullptr, sealed_, out_.size() - sealed_});
    }
    sealed_ = out_.size();
}

void Connection::append_external(std::span<const uint8_t> data) {
    seal();
    if (!data.empty()) segments_.push_back(Segment{data.data(), 0, data.size()});
}

// Sends until everything is sent or the socket would block.
Result<void> Connection::send_some() {
    seal();
    while (next_segment_ < segments_.size()) {
        iovec iov[kMaxIov];
        size_t n = 0;
        for (size_t i = next_segment_; i < segments_.size() && n < kMaxIov; i++, n++) {
            const Segment& s = segments_[i];
            const uint8_t* base = s.external ? s.external : out_.data() + s.offset;
            const size_t skip = i == next_segment_ ? segment_sent_ : 0;
            iov[n].iov_base = const_cast<uint8_t*>(base + skip);
            iov[n].iov_len = s.length - skip;
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        ssize_t sent = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
            if (errno == EINTR) continue;
            if (errno == EPIPE) return fail(ECONNRESET, "send: the server closed the connection");
            return fail_errno("send");
        }
        size_t left = size_t(sent);
        while (left > 0) {
            const size_t rest = segments_[next_segment_].length - segment_sent_;
            if (left < rest) {
                segment_sent_ += left;
                break;
            }
            left -= rest;
            next_segment_++;
            segment_sent_ = 0;
        }
    }
    segments_.clear();
    out_.clear();
    sealed_ = next_segment_ = segment_sent_ = 0;
    return {};
}

void Connection::make_room() {
    if (in_start_ == in_end_) {
        in_start_ = in_end_ = 0;
        return;
    }
    size_t need = fs9p::kHeaderSize;
    if (in_end_ - in_start_ >= 4) need = std::max<size_t>(le32(&in_[in_start_]), need);
    if (in_start_ + need <= in_.size() && in_.size() - in_end_ >= kMinRoom) return;
    std::memmove(in_.data(), in_.data() + in_start_, in_end_ - in_start_);
    in_end_ -= in_start_;
    in_start_ = 0;
}

Result<size_t> Connection::receive(int flags) {
    make_room();
    ssize_t n = ::recv(fd_, in_.data() + in_end_, in_.size() - in_end_, flags);
    if (n > 0) {
        in_end_ += size_t(n);
        return size_t(n);
    }
    if (n == 0) return fail(ECONNRESET, "the server closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t(0);
    if (errno == EINTR) return fail(EINTR, "interrupted");
    return fail_errno("recv");
}

Result<void> Connection::exchange() {
    if (auto s = send_some(); !s) return s;
    if (!output_pending()) {
        // The common case: one blocking recv (SO_RCVTIMEO bounds it).
        auto n = receive(0);
        if (!n) return std::unexpected(n.error());
        if (*n == 0) return fail(ETIMEDOUT, "no reply within " + std::to_string(timeout_ms_) + " ms");
        return {};
    }
    for (;;) {
        pollfd p{fd_, short(POLLIN | (output_pending() ? POLLOUT : 0)), 0};
        int rc = ::poll(&p, 1, timeout_ms_);
        if (rc < 0) {
            if (errno == EINTR) return fail(EINTR, "interrupted");
            return fail_errno("poll");
        }
        if (rc == 0) return fail(ETIMEDOUT, "the server took nothing and sent nothing for " + std::to_string(timeout_ms_) + " ms");
        if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
            if (auto s = send_some(); !s) return s;
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            auto n = receive(MSG_DONTWAIT);
            if (!n) return std::unexpected(n.error());
            if (*n > 0) return {};
        }
    }
}

Result<std::optional<Message>> Connection::next() {
    const size_t avail = in_end_ - in_start_;
    if (avail < fs9p::kHeaderSize) return std::optional<Message>();
    const uint8_t* p = in_.data() + in_start_;
    const auto h = fs9p::decode_header(std::span<const uint8_t, fs9p::kHeaderSize>(p, fs9p::kHeaderSize));
    if (h.size < fs9p::kHeaderSize || h.size > max_message_) {
        return fail(EPROTO, "reply with size field " + std::to_string(h.size) + " (type " + std::to_string(h.type) +
                                ", msize " + std::to_string(max_message_) + ")");
    }
    if (avail < h.size) return std::optional<Message>();
    in_start_ += h.size;
    return std::optional<Message>(Message{h.type, h.tag, {p + fs9p::kHeaderSize, h.size - fs9p::kHeaderSize}});
}

}  // namespace ioplane::load9p
