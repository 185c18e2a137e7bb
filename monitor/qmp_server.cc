#include "qmp_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "qmp_client.h"

namespace ioplane::monitor {

using nlohmann::json;

// --- QmpDispatcher ---

void QmpDispatcher::add_command(std::string name, QmpCommand command) { commands_[std::move(name)] = std::move(command); }

std::vector<std::string> QmpDispatcher::command_names() const {
    std::vector<std::string> names{"qmp_capabilities"};
    for (auto& [name, command] : commands_) names.push_back(name);
    return names;
}

void QmpDispatcher::emit_event(std::string_view name, const json& data) {
    assert_in_main_thread();
    timeval tv;
    ::gettimeofday(&tv, nullptr);
    const int64_t micros = int64_t(tv.tv_sec) * 1'000'000 + tv.tv_usec;
    // Each client in its monitor's form: QEMU pretty-prints events too.
    std::string text[2];
    for (QmpClient* c : clients_) {
        if (!c->in_command_mode()) continue;
        std::string& t = text[c->pretty()];
        if (t.empty()) t = format_event(name, data, micros, c->pretty());
        c->send(t);
    }
}

Task<std::optional<QmpResult>> QmpDispatcher::co_dispatch(const QmpRequest& request) {
    if (stopped_) co_return std::nullopt;
    auto it = commands_.find(request.execute);
    if (it == commands_.end()) co_return std::unexpected(command_not_found(request.execute));
    QmpResult result;
    {
        auto turn = co_await configuration_turn().scoped_lock();
        if (stopped_) co_return std::nullopt;  // the shutdown began while this waited
        try {
            result = it->second(request.arguments);
        } catch (const json::exception& e) {
            // A command read an argument with the wrong JSON type without checking.
            result = std::unexpected(generic_error(std::string("Invalid parameter: ") + e.what()));
        }
    }
    if (std::exchange(defer_, false)) {
        // Without the turn: the shutdown runs as it does after a signal.
        deferred_++;
        co_await deferred_queue_.wait_while([this] { return !release_; });
        // The caller queues the response before it yields again, which is
        // before send_deferred_responses() looks at the count.
        deferred_--;
    }
    co_return result;
}

void QmpDispatcher::defer_response_to_shutdown() {
    assert_in_main_thread();
    defer_ = true;
}

void QmpDispatcher::stop_commands() {
    assert_in_main_thread();
    stopped_ = true;
}

void QmpDispatcher::send_deferred_responses() {
    assert_in_main_thread();
    release_ = true;
    deferred_queue_.restart_all();
    aio_wait_while(*main_context(), [this] { return deferred_ > 0; });
}

void QmpDispatcher::add_client(QmpClient* client) { clients_.push_back(client); }

void QmpDispatcher::remove_client(QmpClient* client) { std::erase(clients_, client); }

// --- QmpMonitor ---

namespace {

// QEMU's "Failed to connect to '...'" with the system's reason, as the whole
// message (the daemon prints messages, not Error::describe()).
std::unexpected<Error> connect_failed(int err, const std::string& what) {
    return fail(err, "Failed to connect to '" + what + "': " + std::strerror(err));
}

int connect_retrying(int fd, const sockaddr* sa, socklen_t len) {
    int r = ::connect(fd, sa, len);
    // Interrupted, the connection goes on in the background: wait for it.
    if (r < 0 && errno == EINTR) {
        pollfd p{fd, POLLOUT, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {}
        int err = 0;
        socklen_t l = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        errno = err;
        r = err == 0 ? 0 : -1;
    }
    return r;
}

// A client-mode chardev's one connection, made synchronously at start as
// QEMU's qmp_chardev_open_socket_client() does (a listening peer accepts
// from its backlog, so this does not wait for the peer to call accept()).
Result<int> connect_to(const ListenAddress& addr) {
    switch (addr.type) {
        case ListenAddress::Type::unix_socket: {
            sockaddr_un sun{};
            sun.sun_family = AF_UNIX;
            if (addr.path.empty() || addr.path.size() >= sizeof sun.sun_path)
                return fail(EINVAL, "UNIX socket path '" + addr.path + "' is too long");
            std::memcpy(sun.sun_path, addr.path.data(), addr.path.size());
            const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return fail_errno("socket");
            if (connect_retrying(fd, reinterpret_cast<const sockaddr*>(&sun), sizeof sun) < 0) {
                const int err = errno;
                ::close(fd);
                return connect_failed(err, addr.path);
            }
            return fd;
        }
        case ListenAddress::Type::inet: {
            addrinfo hints{};
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* res = nullptr;
            const std::string what = addr.host + ":" + addr.port;
            if (int e = ::getaddrinfo(addr.host.c_str(), addr.port.c_str(), &hints, &res); e != 0)
                return fail(EINVAL, "address resolution failed for " + what + ": " + gai_strerror(e));
            int err = EADDRNOTAVAIL;
            for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {  // each address in turn, as QEMU
                const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0) {
                    err = errno;
                    continue;
                }
                if (connect_retrying(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                    ::freeaddrinfo(res);
                    return fd;
                }
                err = errno;
                ::close(fd);
            }
            ::freeaddrinfo(res);
            return connect_failed(err, what);
        }
        case ListenAddress::Type::fd: {
            // Inherited, already connected: the monitor owns it from now on.
            int type = 0, listening = 0;
            socklen_t len = sizeof type;
            const std::string what = "fd " + std::to_string(addr.fd);
            if (::getsockopt(addr.fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
                const int err = errno;
                return fail(err, what + " is not an open socket: " + std::strerror(err));
            }
            len = sizeof listening;
            if (type != SOCK_STREAM || ::getsockopt(addr.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
                listening)
                return fail(EINVAL, what + " is not a connected stream socket (a listening one needs server=on)");
            ::fcntl(addr.fd, F_SETFD, FD_CLOEXEC);
            return addr.fd;
        }
    }
    return fail(EINVAL, "bad address");
}

}  // namespace

Result<std::unique_ptr<QmpMonitor>> QmpMonitor::start(AioContext& main_ctx, QmpDispatcher& dispatcher,
                                                      MonitorOptions options) {
    std::unique_ptr<QmpMonitor> m(new QmpMonitor(main_ctx, dispatcher, std::move(options)));
    if (auto r = m->open(); !r) return std::unexpected(r.error());
    return m;
}

QmpMonitor::QmpMonitor(AioContext& main_ctx, QmpDispatcher& dispatcher, MonitorOptions options)
    : main_ctx_(main_ctx), dispatcher_(dispatcher), options_(std::move(options)) {}

Result<void> QmpMonitor::open() {
    if (options_.endpoint.kind == MonitorEndpoint::Kind::stdio) {
        if (auto r = add_client(STDIN_FILENO, STDOUT_FILENO, "stdio"); !r)
            return fail(r.error().code, "monitor '" + options_.name +
                                            "': stdin and stdout must be pipes, sockets or terminals: " +
                                            r.error().message);
        return {};
    }
    if (options_.endpoint.connect) {
        auto fd = connect_to(options_.endpoint.addr);
        if (!fd) return fail(fd.error().code, "chardev '" + options_.name + "': " + fd.error().message);
        const std::string peer = options_.endpoint.addr.type == ListenAddress::Type::fd
                                     ? "fd " + std::to_string(*fd)
                                     : describe(options_.endpoint.addr);
        if (auto r = add_client(*fd, *fd, peer); !r)  // the client closed the fd
            return fail(r.error().code, "monitor '" + options_.name + "': " + r.error().message);
        LOG_INFO("monitor '%s': QMP over a connection to %s (client mode: not remade if it closes)",
                 options_.name.c_str(), peer.c_str());
        return {};
    }
    auto listener = Listener::start(main_ctx_, options_.endpoint.addr, "monitor '" + options_.name + "'",
                                    [this](int fd, std::string peer) { on_client(fd, std::move(peer)); });
    if (!listener) return std::unexpected(listener.error());
    listener_ = std::move(*listener);
    LOG_INFO("monitor '%s': QMP on %s", options_.name.c_str(), describe(options_.endpoint.addr).c_str());
    if (options_.endpoint.addr.type == ListenAddress::Type::unix_socket)
        LOG_INFO("  try: ioplane-qmp -s %s top", options_.endpoint.addr.path.c_str());
    if (options_.endpoint.wait) {
        // qemu-storage-daemon's wait=on: startup goes on once a client is there.
        LOG_INFO("monitor '%s': waiting for a client (wait=on)", options_.name.c_str());
        aio_wait_while(main_ctx_, [this] { return clients_.empty() && !options_.endpoint.stop_requested(); });
    }
    return {};
}

QmpMonitor::~QmpMonitor() {
    // A client whose response waits for the shutdown would never end.
    dispatcher_.send_deferred_responses();
    closing_ = true;
    listener_.reset();
    for (auto& c : clients_) {
        c->flush_without_waiting();
        c->close();
    }
    aio_wait_while(main_ctx_, [this] { return !clients_.empty(); });
}

void QmpMonitor::on_client(int fd, std::string peer) {
    if (clients_.size() >= options_.max_clients) {
        LOG_WARN("monitor '%s': refusing client %s: %zu clients connected", options_.name.c_str(), peer.c_str(),
                 clients_.size());
        ::close(fd);
        return;
    }
    if (auto r = add_client(fd, fd, std::move(peer)); !r)
        LOG_WARN("monitor '%s': %s", options_.name.c_str(), r.error().describe().c_str());
}

Result<void> QmpMonitor::add_client(int in_fd, int out_fd, std::string peer) {
    const bool is_socket = options_.endpoint.kind == MonitorEndpoint::Kind::socket;
    auto client = std::make_unique<QmpClient>(*this, dispatcher_, in_fd, out_fd, is_socket, std::move(peer),
                                              options_.pretty);
    if (auto r = client->start(main_ctx_); !r) return r;
    clients_.push_back(std::move(client));
    return {};
}

void QmpMonitor::client_finished(QmpClient* client) {
    if (options_.endpoint.connect && !closing_)
        LOG_INFO("monitor '%s': connection to %s closed; the chardev stays closed (no reconnect), as in QEMU",
                 options_.name.c_str(), client->peer().c_str());
    // Destroyed from a BH: the client's last coroutine is still on the stack.
    main_ctx_.schedule_oneshot([this, client] {
        std::erase_if(clients_, [client](auto& c) { return c.get() == client; });
    });
}

}  // namespace ioplane::monitor
