#include "nbd/server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "nbd/connection.h"

namespace ioplane::nbd {
namespace {

std::string describe_peer(const sockaddr_storage& ss) {
    char host[NI_MAXHOST] = "", port[NI_MAXSERV] = "";
    if (ss.ss_family == AF_UNIX) return "unix";
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&ss), sizeof ss, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    return std::string(host) + ":" + port;
}

}  // namespace

Result<std::unique_ptr<NbdServer>> NbdServer::start(AioContext& main_ctx, NbdServerOptions options) {
    std::unique_ptr<NbdServer> server(new NbdServer(main_ctx, std::move(options)));
    if (auto r = server->listen(); !r) return std::unexpected(r.error());
    return server;
}

Result<void> NbdServer::listen() {
    if (options_.transport == NbdServerOptions::Transport::unix_socket) {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (options_.path.empty() || options_.path.size() >= sizeof addr.sun_path)
            return fail(EINVAL, "nbd-server: bad unix socket path '" + options_.path + "'");
        std::strcpy(addr.sun_path, options_.path.c_str());
        // A socket left behind by a previous run is replaced; anything else is not.
        struct stat st;
        if (::lstat(options_.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(options_.path.c_str());
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail_errno("nbd-server: socket");
        if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(fd, 128) < 0) {
            auto e = fail_errno("nbd-server: listening on '" + options_.path + "'");
            ::close(fd);
            return e;
        }
        listen_fds_.push_back(fd);
    } else {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        addrinfo* res = nullptr;
        const char* host = options_.host.empty() ? nullptr : options_.host.c_str();
        if (int e = getaddrinfo(host, options_.port.c_str(), &hints, &res); e != 0)
            return fail(EINVAL, "nbd-server: address '" + options_.host + ":" + options_.port + "': " + gai_strerror(e));
        Result<void> result = fail(EADDRNOTAVAIL, "nbd-server: no usable address");
        for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
            int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
            if (fd < 0) continue;
            int one = 1;
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (ai->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            if (::bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd, 128) < 0) {
                result = fail_errno("nbd-server: listening on " + options_.host + ":" + options_.port);
                ::close(fd);
                continue;
            }
            listen_fds_.push_back(fd);
            result = {};
        }
        freeaddrinfo(res);
        if (!result) return result;
    }
    for (int fd : listen_fds_) {
        if (auto r = main_ctx_.set_fd_handler(fd, {.on_read = [this, fd] { on_acceptable(fd); }}); !r) return r;
    }
    return {};
}

NbdServer::~NbdServer() {
    for (int fd : listen_fds_) {
        main_ctx_.remove_fd_handler(fd);
        ::close(fd);
    }
    if (options_.transport == NbdServerOptions::Transport::unix_socket && !listen_fds_.empty())
        ::unlink(options_.path.c_str());
    disconnect_clients();
}

void NbdServer::on_acceptable(int listen_fd) {
    for (;;) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // The client stays in the backlog and the listener stays
                // readable: pause accepting for a moment instead of spinning.
                LOG_WARN("nbd-server: accept: %s; pausing for 100 ms", strerror(errno));
                for (int l : listen_fds_) (void)main_ctx_.set_fd_events(l, 0);
                accept_pause_.arm_in(100'000'000);
            } else if (errno != EAGAIN) {
                LOG_WARN("nbd-server: accept: %s", strerror(errno));
            }
            return;
        }
        std::string peer = describe_peer(ss);
        if (options_.max_connections > 0 && connections_.size() >= options_.max_connections) {
            LOG_WARN("nbd-server: refusing client %s: max-connections=%u reached", peer.c_str(),
                     options_.max_connections);
            ::close(fd);
            continue;
        }
        if (ss.ss_family != AF_UNIX) {
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        auto c = std::make_shared<Connection>(*this, fd, std::move(peer));
        connections_.push_back(c);
        c->start(options_.handshake_timeout_ns);
    }
}

void NbdServer::resume_accepting() {
    for (int fd : listen_fds_) (void)main_ctx_.set_fd_events(fd, kFdRead);
}

void NbdServer::connection_closed(const std::shared_ptr<Connection>& c) {
    connections_.erase(std::remove(connections_.begin(), connections_.end(), c), connections_.end());
}

Result<void> NbdServer::add_export(std::shared_ptr<NbdExport> exp) {
    if (exports_.count(exp->name())) return fail(EEXIST, "an NBD export named '" + exp->name() + "' exists already");
    exports_[exp->name()] = std::move(exp);
    return {};
}

NbdExport* NbdServer::find_export(const std::string& name) const {
    auto it = exports_.find(name);
    return it == exports_.end() ? nullptr : it->second.get();
}

std::vector<NbdExport*> NbdServer::exports() const {
    std::vector<NbdExport*> out;
    for (auto& [name, exp] : exports_) out.push_back(exp.get());
    return out;
}

void NbdServer::disconnect_clients(NbdExport* only) {
    auto relevant = [&] {
        size_t n = 0;
        for (auto& c : connections_) n += only == nullptr || only->has_connection(c.get());
        return n;
    };
    for (auto& c : connections_)
        if (only == nullptr || only->has_connection(c.get())) c->shutdown_socket();
    aio_wait_while(main_ctx_, [&] { return relevant() > 0; });
}

std::string NbdServer::uri(const std::string& export_name) const {
    if (options_.transport == NbdServerOptions::Transport::unix_socket)
        return "nbd+unix:///" + export_name + "?socket=" + options_.path;
    return "nbd://" + (options_.host.empty() ? std::string("localhost") : options_.host) + ":" + options_.port + "/" +
           export_name;
}

}  // namespace ioplane::nbd
