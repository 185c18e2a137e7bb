#include "daemon/storage_daemon.h"

#include <atomic>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"

namespace ioplane::daemon {

StorageDaemon::~StorageDaemon() { shutdown(); }

Result<void> StorageDaemon::start(const DaemonConfig& config) {
    for (const IOThreadOptions& t : config.iothreads) {
        auto io = IOThread::start({.id = t.id,
                                   .poll = {.max_ns = t.poll_max_ns, .grow = t.poll_grow, .shrink = t.poll_shrink}});
        if (!io) return fail(io.error().code, "iothread '" + t.id + "': " + io.error().message);
        LOG_INFO("iothread '%s' running (poll-max-ns=%lld)", t.id.c_str(), (long long)t.poll_max_ns);
        iothreads_[t.id] = std::move(*io);
    }
    for (const BlockdevOptions& b : config.blockdevs) {
        auto node = graph_.open(b.options, main_loop_.ctx());
        if (!node) return std::unexpected(node.error());
    }
    if (config.nbd_server) {
        const auto& o = *config.nbd_server;
        nbd::NbdServerOptions so;
        so.transport = o.addr.type == SocketAddress::Type::inet ? nbd::NbdServerOptions::Transport::inet
                                                                : nbd::NbdServerOptions::Transport::unix_socket;
        so.path = o.addr.path;
        so.host = o.addr.host;
        so.port = o.addr.port;
        so.max_connections = o.max_connections;
        auto server = nbd::NbdServer::start(main_loop_.ctx(), so);
        if (!server) return std::unexpected(server.error());
        nbd_server_ = std::move(*server);
    }
    for (const ExportOptions& e : config.exports)
        if (auto r = add_export(e); !r) return r;
    return {};
}

Result<void> StorageDaemon::add_export(const ExportOptions& e) {
    if (e.type != "nbd") return fail(ENOTSUP, "export '" + e.id + "': type '" + e.type + "' is not supported yet");
    if (!nbd_server_) return fail(EINVAL, "export '" + e.id + "': type=nbd needs --nbd-server");
    auto node = graph_.find(e.node_name);
    if (!node) return fail(ENOENT, "export '" + e.id + "': no node named '" + e.node_name + "'");
    if (e.iothread) {
        auto it = iothreads_.find(*e.iothread);
        if (it == iothreads_.end()) return fail(ENOENT, "export '" + e.id + "': no iothread '" + *e.iothread + "'");
        if (auto r = block::change_aio_context(*node, it->second->ctx()); !r)
            return fail(r.error().code, "export '" + e.id + "': " + r.error().message);
    }
    nbd::NbdExportOptions o;
    o.id = e.id;
    o.writable = e.writable;
    if (e.nbd) {
        o.name = e.nbd->name;
        o.description = e.nbd->description.value_or("");
    }
    auto exp = std::make_shared<nbd::NbdExport>(std::move(o), node);
    if (auto r = nbd_server_->add_export(exp); !r) return fail(r.error().code, "export '" + e.id + "': " + r.error().message);
    exports_.push_back(exp);
    const std::string uri = nbd_server_->uri(exp->name());
    LOG_INFO("export '%s': node '%s' served as %s%s", e.id.c_str(), e.node_name.c_str(), uri.c_str(),
             exp->read_only() ? " (read-only)" : "");
    LOG_INFO("  try: nbdinfo '%s'", uri.c_str());
    LOG_INFO("  try: qemu-io -f raw '%s' -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k'", uri.c_str());
    return {};
}

// Every node's cache goes to stable storage before we exit: a client that
// wrote without flushing still finds its data after a clean shutdown.
bool StorageDaemon::flush_all_nodes() {
    std::atomic<bool> flush_failed{false};
    for (auto& node : graph_.nodes()) {
        std::atomic<bool> done{false};
        block::BlockBackend blk(node, false);  // created and destroyed here, in the main thread
        spawn(node->ctx(), [](block::BlockBackend& blk, std::atomic<bool>& done, std::atomic<bool>& flush_failed) -> Task<void> {
            auto r = co_await blk.co_flush();
            if (!r) LOG_ERROR("node '%s': flush at exit: %s", blk.node().node_name().c_str(), r.error().describe().c_str());
            if (!r) flush_failed = true;
            done.store(true);
            aio_wait_kick();
        }(blk, done, flush_failed));
        aio_wait_while(node->ctx(), [&] { return !done.load(); });
    }
    return !flush_failed;
}

bool StorageDaemon::shutdown() {
    if (shut_down_) return true;
    shut_down_ = true;
    if (nbd_server_) {
        nbd_server_.reset();  // stops listening, disconnects clients, waits for them
        LOG_INFO("nbd server stopped");
    }
    exports_.clear();
    const bool flushed = flush_all_nodes();
    // Nodes go back to the main loop before their IOThreads stop.
    for (auto& node : graph_.nodes())
        if (!node->has_parents()) (void)block::change_aio_context(*node, main_loop_.ctx());
    for (auto& [id, io] : iothreads_) {
        io->stop();
        LOG_INFO("iothread '%s' stopped", id.c_str());
    }
    iothreads_.clear();
    return flushed;
}

}  // namespace ioplane::daemon
