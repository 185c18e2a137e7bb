#include "nbd/server.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/listen_socket.h"
#include "ioplane/core/log.h"
#include "nbd/connection.h"

namespace ioplane::nbd {
Result<std::unique_ptr<NbdServer>> NbdServer::start(AioContext& main_ctx, NbdServerOptions options) {
    IOPLANE_ASSERT(options.memory_budget != nullptr);
    std::unique_ptr<NbdServer> server(new NbdServer(main_ctx, std::move(options)));
    auto listener = Listener::start(main_ctx, server->options_.addr, "nbd-server",
                                    [p = server.get()](int fd, std::string peer) { p->on_client(fd, std::move(peer)); });
    if (!listener) return std::unexpected(listener.error());
    server->listener_ = std::move(*listener);
    return server;
}

NbdServer::~NbdServer() {
    listener_.reset();
    disconnect_clients();
}

void NbdServer::on_client(int fd, std::string peer) {
    if (options_.max_connections > 0 && connections_.size() >= options_.max_connections) {
        LOG_WARN("nbd-server: refusing client %s: max-connections=%u reached", peer.c_str(), options_.max_connections);
        ::close(fd);
        return;
    }
    auto socket = options_.descriptors->charge(1);
    if (!socket) {
        LOG_WARN("nbd-server: refusing client %s: the descriptors left to clients are taken", peer.c_str());
        ::close(fd);
        return;
    }
    auto c = std::make_shared<Connection>(*this, fd, std::move(peer), std::move(*socket));
    connections_.push_back(c);
    c->start(options_.handshake_timeout_ns);
}

void NbdServer::connection_closed(const std::shared_ptr<Connection>& c) {
    connections_.erase(std::remove(connections_.begin(), connections_.end(), c), connections_.end());
}

Result<void> NbdServer::add_export(std::shared_ptr<NbdExport> exp) {
    if (exports_.count(exp->name())) return fail(EEXIST, "an NBD export named '" + exp->name() + "' exists already");
    exports_[exp->name()] = std::move(exp);
    return {};
}

void NbdServer::remove_export(NbdExport* exp) {
    // Forgotten first, so that no new client finds it while we wait.
    exports_.erase(exp->name());
    disconnect_clients(exp);
    // Its bitmaps are free at once, as in QEMU, even if a client still
    // negotiating holds the export a little longer.
    exp->release_bitmaps();
}

std::shared_ptr<NbdExport> NbdServer::find_export(const std::string& name) const {
    auto it = exports_.find(name);
    return it == exports_.end() ? nullptr : it->second;
}

bool NbdServer::serves(const NbdExport* exp) const {
    auto it = exports_.find(exp->name());
    return it != exports_.end() && it->second.get() == exp;
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
    const ListenAddress a = bound_address(options_.addr);
    if (a.type == ListenAddress::Type::fd) return "the NBD server socket passed as fd " + std::to_string(a.fd);
    if (a.type == ListenAddress::Type::unix_socket) return "nbd+unix:///" + export_name + "?socket=" + a.path;
    return "nbd://" + (a.host.empty() ? std::string("localhost") : a.host) + ":" + a.port + "/" + export_name;
}

}  // namespace ioplane::nbd
