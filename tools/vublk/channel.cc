#include "channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace ioplane::vublk {

namespace {

constexpr size_t kMaxPayload = 64 * 1024;
constexpr size_t kMaxFds = 16;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void close_all(std::vector<int>& fds) {
    for (int f : fds) ::close(f);
    fds.clear();
}

}  // namespace

const char* request_name(uint32_t request) {
    switch (Request(request)) {
    case Request::kGetFeatures: return "GET_FEATURES";
    case Request::kSetFeatures: return "SET_FEATURES";
    case Request::kSetOwner: return "SET_OWNER";
    case Request::kResetOwner: return "RESET_OWNER";
    case Request::kSetMemTable: return "SET_MEM_TABLE";
    case Request::kSetLogBase: return "SET_LOG_BASE";
    case Request::kSetLogFd: return "SET_LOG_FD";
    case Request::kSetVringNum: return "SET_VRING_NUM";
    case Request::kSetVringAddr: return "SET_VRING_ADDR";
    case Request::kSetVringBase: return "SET_VRING_BASE";
    case Request::kGetVringBase: return "GET_VRING_BASE";
    case Request::kSetVringKick: return "SET_VRING_KICK";
    case Request::kSetVringCall: return "SET_VRING_CALL";
    case Request::kSetVringErr: return "SET_VRING_ERR";
    case Request::kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case Request::kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case Request::kGetQueueNum: return "GET_QUEUE_NUM";
    case Request::kSetVringEnable: return "SET_VRING_ENABLE";
    case Request::kGetConfig: return "GET_CONFIG";
    case Request::kSetConfig: return "SET_CONFIG";
    case Request::kGetInflightFd: return "GET_INFLIGHT_FD";
    case Request::kSetInflightFd: return "SET_INFLIGHT_FD";
    case Request::kResetDevice: return "RESET_DEVICE";
    case Request::kGetMaxMemSlots: return "GET_MAX_MEM_SLOTS";
    case Request::kAddMemReg: return "ADD_MEM_REG";
    case Request::kRemMemReg: return "REM_MEM_REG";
    case Request::kSetStatus: return "SET_STATUS";
    case Request::kGetStatus: return "GET_STATUS";
    }
    static thread_local char buf[32];
    std::snprintf(buf, sizeof buf, "request %u", request);
    return buf;
}

std::expected<Channel, std::string> Channel::connect(const std::string& path) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) return std::unexpected("socket path too long: " + path);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(errno_text("socket"));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        auto e = errno_text(("connect to " + path).c_str());
        ::close(fd);
        return std::unexpected(e);
    }
    return Channel(fd);
}

Channel::Channel(Channel&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), reply_ack_(other.reply_ack_), timeout_(other.timeout_) {}

Channel& Channel::operator=(Channel&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
        reply_ack_ = other.reply_ack_;
        timeout_ = other.timeout_;
    }
    return *this;
}

Channel::~Channel() {
    if (fd_ >= 0) ::close(fd_);
}

std::expected<void, std::string> Channel::send(const Message& m) {
    if (m.fds.size() > kMaxFds) return std::unexpected("too many fds for one message");
    const MsgHeader h{m.request, m.flags, uint32_t(m.payload.size())};
    iovec iov[2] = {{const_cast<MsgHeader*>(&h), sizeof h},
                    {const_cast<uint8_t*>(m.payload.data()), m.payload.size()}};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = m.payload.empty() ? 1 : 2;
    if (!m.fds.empty()) {
        // The fds go with the header's first byte, as the spec asks.
        const size_t bytes = sizeof(int) * m.fds.size();
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(bytes);
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(bytes);
        std::memcpy(CMSG_DATA(c), m.fds.data(), bytes);
    }
    size_t total = sizeof h + m.payload.size(), sent = 0;
    while (sent < total) {
        const ssize_t n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return std::unexpected(errno_text((std::string("sending ") + request_name(m.request)).c_str()));
        }
        sent += size_t(n);
        // A short write: the rest without the fds (already sent).
        mh.msg_control = nullptr;
        mh.msg_controllen = 0;
        size_t skip = size_t(n);
        while (mh.msg_iovlen > 0 && skip >= mh.msg_iov[0].iov_len) {
            skip -= mh.msg_iov[0].iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen > 0) {
            mh.msg_iov[0].iov_base = static_cast<char*>(mh.msg_iov[0].iov_base) + skip;
            mh.msg_iov[0].iov_len -= skip;
        }
    }
    return {};
}

// Reads exactly `len` bytes, waiting at most `timeout` for each part.
// Collects any fds that come along.
static std::expected<void, std::string> read_full(int fd, void* buf, size_t len, std::chrono::milliseconds timeout,
                                                  std::vector<int>& fds) {
    size_t got = 0;
    while (got < len) {
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, int(timeout.count()));
        if (r < 0) {
            if (errno == EINTR) continue;
            return std::unexpected(errno_text("poll"));
        }
        if (r == 0) return std::unexpected("no reply within " + std::to_string(timeout.count()) + " ms");
        iovec iov{static_cast<char*>(buf) + got, len - got};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            return std::unexpected(errno_text("recvmsg"));
        }
        if (n == 0) return std::unexpected("the back end closed the connection");
        for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                fds.push_back(f);
            }
        }
        got += size_t(n);
    }
    return {};
}

std::expected<Message, std::string> Channel::receive() {
    Message m;
    MsgHeader h;
    auto r = read_full(fd_, &h, sizeof h, timeout_, m.fds);
    if (r && h.size > kMaxPayload) r = std::unexpected("reply payload of " + std::to_string(h.size) + " bytes");
    if (r) {
        m.request = h.request;
        m.flags = h.flags;
        m.payload.resize(h.size);
        r = read_full(fd_, m.payload.data(), h.size, timeout_, m.fds);
    }
    if (!r) {
        close_all(m.fds);
        return std::unexpected(r.error());
    }
    return m;
}

std::expected<Message, std::string> Channel::reply_to(const Message& m, size_t reply_size) {
    const std::string what = std::string(request_name(m.request));
    auto reply = receive();
    if (!reply) return std::unexpected(what + ": " + reply.error());
    // Only GET_INFLIGHT_FD's reply carries an fd (the area), for the caller.
    if (m.request != uint32_t(Request::kGetInflightFd)) close_all(reply->fds);
    std::string error;
    if (reply->request != m.request) {
        error = ": the reply is for " + std::string(request_name(reply->request));
    } else if ((reply->flags & kVersionMask) != kVersion || !(reply->flags & kFlagReply)) {
        char buf[96];
        std::snprintf(buf, sizeof buf, ": reply flags 0x%x lack version 1 or the reply bit", reply->flags);
        error = buf;
    } else if (reply_size != SIZE_MAX && reply->payload.size() != reply_size) {
        error = ": reply payload of " + std::to_string(reply->payload.size()) + " bytes, expected " +
                std::to_string(reply_size);
    }
    if (!error.empty()) {
        close_all(reply->fds);
        return std::unexpected(what + error);
    }
    return reply;
}

std::expected<Message, std::string> Channel::call(const Message& m, size_t reply_size) {
    if (auto s = send(m); !s) return std::unexpected(s.error());
    return reply_to(m, reply_size);
}

std::expected<void, std::string> Channel::command(Message m) {
    if (reply_ack_) m.flags |= kFlagNeedReply;
    if (auto s = send(m); !s) return s;
    if (!reply_ack_) return {};
    auto reply = reply_to(m, sizeof(uint64_t));
    if (!reply) return std::unexpected(reply.error());
    uint64_t ack;
    std::memcpy(&ack, reply->payload.data(), sizeof ack);
    if (ack != 0)
        return std::unexpected(std::string(request_name(m.request)) + ": the back end answered failure (ack " +
                               std::to_string(ack) + ")");
    return {};
}

}  // namespace ioplane::vublk
