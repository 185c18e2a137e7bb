#include "qmp_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

std::unexpected<std::string> error(std::string message) { return std::unexpected(std::move(message)); }
std::unexpected<std::string> errno_error(const std::string& what) { return error(what + ": " + std::strerror(errno)); }

// Milliseconds left for poll(), at least 0.
int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return int(std::clamp<decltype(left)>(left, 0, 1 << 30));
}

// Sockets are non-blocking from the start so that connect() obeys the deadline too.
std::expected<int, std::string> connect_to(const sockaddr* addr, socklen_t len, const std::string& name,
                                           Clock::time_point deadline) {
    int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket");
    if (::connect(fd, addr, len) < 0) {
        int err = errno;
        if (err == EINPROGRESS) {
            pollfd p{fd, POLLOUT, 0};
            socklen_t size = sizeof err;
            int n = ::poll(&p, 1, remaining_ms(deadline));
            if (n == 0) err = ETIMEDOUT;
            else if (n < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0) err = errno;
        }
        if (err != 0) {
            ::close(fd);
            return error("connect to " + name + ": " + std::strerror(err));
        }
    }
    return fd;
}

std::expected<int, std::string> connect_unix(const std::string& path, Clock::time_point deadline) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) return error("socket path too long or empty: " + path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    return connect_to(reinterpret_cast<sockaddr*>(&addr), sizeof addr, path, deadline);
}

std::expected<int, std::string> connect_tcp(const std::string& address, Clock::time_point deadline) {
    size_t colon = address.rfind(':');
    if (colon == address.npos || colon == 0 || colon + 1 == address.size())
        return error("expected HOST:PORT, got '" + address + "'");
    std::string host = address.substr(0, colon), port = address.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0)
        return error("resolve " + address + ": " + ::gai_strerror(rc));
    std::expected<int, std::string> fd = error("resolve " + address + ": no address");
    for (addrinfo* ai = list; ai && !fd; ai = ai->ai_next) fd = connect_to(ai->ai_addr, ai->ai_addrlen, address, deadline);
    ::freeaddrinfo(list);
    return fd;
}
}  // namespace

std::expected<QmpClient, std::string> QmpClient::connect(const std::string& address, bool tcp,
                                                         Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    auto fd = tcp ? connect_tcp(address, deadline) : connect_unix(address, deadline);
    if (!fd) return std::unexpected(fd.error());
    QmpClient client(*fd);
    auto greeting = client.next_reply(deadline);
    if (!greeting) return std::unexpected(greeting.error());
    if (!greeting->contains("QMP"))
        return error(address + " is not a QMP server: it greeted with " + greeting->dump().substr(0, 200));
    auto reply = client.execute({{"execute", "qmp_capabilities"}}, deadline - Clock::now());
    if (!reply) return std::unexpected(reply.error());
    if (!reply->contains("return")) return error("qmp_capabilities failed: " + reply->dump().substr(0, 200));
    return client;
}

QmpClient::~QmpClient() {
    if (fd_ >= 0) ::close(fd_);
}

std::expected<json, std::string> QmpClient::execute(json command, Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    if (!command.is_object()) return error("a QMP command must be a JSON object");
    if (!command.contains("id")) command["id"] = next_id_++;
    json id = command["id"];
    if (auto r = send(command.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", deadline); !r)
        return std::unexpected(r.error());
    for (;;) {
        auto reply = next_reply(deadline);
        if (!reply || !reply->contains("id") || (*reply)["id"] == id) return reply;
        // A reply to an earlier command given up on (timeout): QMP says drop it.
    }
}

std::expected<void, std::string> QmpClient::read_available() {
    // Bounded, so that a server streaming events cannot starve the caller's other input.
    for (int reads = 0; reads < 16; ++reads) {
        auto got = read_once();
        // Parse after every read, so that a flooding server meets the stream's
        // size limit, and events that came before an EOF are still kept.
        // Replies now answer no pending command: QMP says drop them.
        std::expected<std::optional<json>, std::string> reply;
        while ((reply = pop_reply()) && *reply) {
        }
        if (!reply) return std::unexpected(reply.error());
        if (!got) return std::unexpected(got.error());
        if (!*got) break;
    }
    return {};
}

std::expected<std::optional<json>, std::string> QmpClient::pop_reply() {
    for (;;) {
        if (pieces_.empty()) return std::nullopt;
        monitor::JsonPiece piece = std::move(pieces_.front());
        pieces_.pop_front();
        if (!piece.error.empty()) return std::unexpected("bad message from the server: " + piece.error);
        json message = json::parse(piece.text, nullptr, false);
        if (message.is_discarded() || !message.is_object())
            return std::unexpected(std::string("bad message from the server: not a JSON object"));
        if (!message.contains("event")) return message;
        events_.push_back(std::move(message));
    }
}

std::expected<json, std::string> QmpClient::next_reply(Clock::time_point deadline) {
    for (;;) {
        auto reply = pop_reply();
        if (!reply) return std::unexpected(reply.error());
        if (*reply) return std::move(**reply);
        pollfd p{fd_, POLLIN, 0};
        int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n < 0 && errno != EINTR) return errno_error("poll");
        if (n == 0) return error("timed out waiting for the server");
        if (auto got = read_once(); !got) return std::unexpected(got.error());
    }
}

std::expected<void, std::string> QmpClient::send(const std::string& text, Clock::time_point deadline) {
    for (size_t done = 0; done < text.size();) {
        ssize_t n = ::send(fd_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += size_t(n);
        } else if (errno == EAGAIN) {
            pollfd p{fd_, POLLOUT, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) == 0) return error("timed out sending to the server");
        } else if (errno != EINTR) {
            return errno_error("send to server");
        }
    }
    return {};
}

std::expected<bool, std::string> QmpClient::read_once() {
    char buffer[65536];
    ssize_t n = ::read(fd_, buffer, sizeof buffer);
    if (n == 0) return error("server closed the connection");
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return false;
        return errno_error("read from server");
    }
    std::vector<monitor::JsonPiece> pieces;
    splitter_.feed(std::string_view(buffer, size_t(n)), pieces);
    for (auto& p : pieces) pieces_.push_back(std::move(p));
    return true;
}

}  // namespace ioplane::qmp_tool
