#include "daemon/storage_daemon.h"
#include "daemon/export_bitmaps.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"

namespace ioplane::daemon {

namespace {

// The export's own iothread, or one of its queues' (vhost-user-blk's list).
bool uses_iothread(const ExportOptions& e, const std::string& id) {
    if (e.iothread == id) return true;
    if (!e.vhost_user_blk) return false;
    const auto& queues = e.vhost_user_blk->queue_iothreads;
    return std::find(queues.begin(), queues.end(), id) != queues.end();
}

}  // namespace

StorageDaemon::~StorageDaemon() { shutdown(); }

void StorageDaemon::request_shutdown() {
    dispatcher_.stop_commands();
    main_loop_.request_stop();
}

// Of the open-files limit, an eighth (at least 64) is kept for what must
// always work: monitors, opening images, accepting (and refusing) clients.
// Clients' sockets and 9P fids share the rest; one connection may take a
// quarter of it.
void StorageDaemon::set_descriptor_budget() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return;
    const uint64_t limit = r.rlim_cur, reserve = std::max<uint64_t>(64, limit / 8);
    const uint64_t for_clients = limit > 2 * reserve ? limit - reserve : limit / 2;
    descriptors_->set_limit(for_clients);
    descriptors_per_connection_ = std::max<uint64_t>(for_clients / 4, 2 * fs9p::kDescriptorsPerFid);
    LOG_INFO("clients may hold up to %llu descriptors (%llu per connection) of the %llu allowed",
             (unsigned long long)for_clients, (unsigned long long)descriptors_per_connection_,
             (unsigned long long)limit);
}

Result<void> StorageDaemon::start(const DaemonConfig& config) {
    if (config.max_buffer_memory) buffer_memory_.set_limit(*config.max_buffer_memory);
    LOG_INFO("clients may hold up to %llu MiB of buffered requests and replies",
             (unsigned long long)(buffer_memory_.limit() >> 20));
    set_descriptor_budget();
    for (const IOThreadOptions& t : config.iothreads)
        if (auto r = add_iothread(t); !r) return r;
    for (const ThrottleGroupOptions& g : config.throttle_groups)
        if (auto r = add_throttle_group(g); !r) return r;
    for (const BlockdevOptions& b : config.blockdevs)
        if (auto r = add_blockdev(b); !r) return r;
    if (config.nbd_server)
        if (auto r = start_nbd_server(*config.nbd_server); !r) return r;
    for (const ExportOptions& e : config.exports)
        if (auto r = add_export(e); !r) return r;
    for (const MonitorOptions& m : config.monitors)
        if (auto r = add_monitor(m, config.chardevs); !r) return r;
    return {};
}

Result<void> StorageDaemon::add_monitor(const MonitorOptions& m, const std::vector<ChardevOptions>& chardevs) {
    const ChardevOptions* chr = nullptr;
    for (const ChardevOptions& c : chardevs)
        if (c.id == m.chardev) chr = &c;
    if (chr == nullptr) return fail(ENOENT, "monitor: no chardev '" + m.chardev + "'");
    monitor::MonitorOptions o;
    o.name = chr->id;
    o.pretty = m.pretty;
    if (chr->backend == ChardevOptions::Backend::stdio) {
        o.endpoint.kind = monitor::MonitorEndpoint::Kind::stdio;
    } else {
        // server=off: connect to a listening QMP client (a test harness, a
        // management tool) and serve QMP over that one connection.
        o.endpoint.connect = !chr->server;
        o.endpoint.addr = chr->addr;
        o.endpoint.wait = chr->server && chr->wait;
        o.endpoint.stop_requested = [this] { return main_loop_.stop_requested(); };
    }
    auto mon = monitor::QmpMonitor::start(main_loop_.ctx(), dispatcher_, std::move(o));
    if (!mon) return std::unexpected(mon.error());
    monitors_.push_back(std::move(*mon));
    return {};
}

Result<void> StorageDaemon::add_object(const ObjectOptions& o) {
    return o.iothread ? add_iothread(*o.iothread) : add_throttle_group(*o.throttle_group);
}

Result<void> StorageDaemon::del_object(const std::string& id) {
    if (iothreads_.contains(id)) return del_iothread(id);
    if (auto r = graph_.throttle_groups().remove(id); !r) return r;
    LOG_INFO("throttle group '%s' deleted", id.c_str());
    return {};
}

Result<void> StorageDaemon::add_throttle_group(const ThrottleGroupOptions& g) {
    if (iothreads_.contains(g.id)) return fail(EEXIST, "attempt to add duplicate property '" + g.id + "' to object");
    OptionReader properties(g.properties);
    if (auto r = graph_.throttle_groups().add(g.id, properties); !r)
        return fail(r.error().code, "throttle-group '" + g.id + "': " + r.error().message);
    LOG_INFO("throttle group '%s' created", g.id.c_str());
    return {};
}

namespace {

// QOM paths of user-created objects: "/objects/<id>", or the id alone
// (QEMU resolves such partial paths when they are unambiguous).
std::string object_id(const std::string& path) {
    constexpr std::string_view kPrefix = "/objects/";
    return path.starts_with(kPrefix) ? path.substr(kPrefix.size()) : path;
}

}  // namespace

Result<nlohmann::json> StorageDaemon::qom_get(const std::string& path, const std::string& property) const {
    auto group = graph_.throttle_groups().find(object_id(path));
    if (!group) return fail(ENOENT, "Device '" + path + "' not found");
    if (property != "limits") return fail(ENOENT, "Property '" + property + "' not found");
    return group->limits_json();
}

Result<void> StorageDaemon::qom_set(const std::string& path, const std::string& property, const nlohmann::json& value) {
    auto group = graph_.throttle_groups().find(object_id(path));
    if (!group) return fail(ENOENT, "Device '" + path + "' not found");
    if (property != "limits") return fail(ENOENT, "Property '" + property + "' not found");
    if (!value.is_object()) return fail(EINVAL, "Invalid parameter type for 'value', expected: object");
    OptionReader limits(value, OptionSyntax::json, "limits.");
    if (auto r = group->set_limits(limits); !r) return r;
    LOG_INFO("throttle group '%s': limits now %s", group->id().c_str(), group->limits_json().dump().c_str());
    return {};
}

Result<void> StorageDaemon::add_iothread(const IOThreadOptions& t) {
    if (iothreads_.contains(t.id) || graph_.throttle_groups().find(t.id))
        return fail(EEXIST, "attempt to add duplicate property '" + t.id + "' to object");
    auto io = IOThread::start({.id = t.id, .poll = {.max_ns = t.poll_max_ns, .grow = t.poll_grow, .shrink = t.poll_shrink}});
    if (!io) return fail(io.error().code, "iothread '" + t.id + "': " + io.error().message);
    LOG_INFO("iothread '%s' running (poll-max-ns=%lld)", t.id.c_str(), (long long)t.poll_max_ns);
    iothreads_[t.id] = std::move(*io);
    return {};
}

Result<void> StorageDaemon::del_iothread(const std::string& id) {
    auto it = iothreads_.find(id);
    if (it == iothreads_.end()) return fail(ENOENT, "object '" + id + "' not found");
    for (auto& node : graph_.nodes())
        if (&node->ctx() == &it->second->ctx())
            return fail(EBUSY, "iothread '" + id + "' is in use by node '" + node->node_name() + "'");
    for (const Export& e : exports_)
        if (uses_iothread(e.options, id))
            return fail(EBUSY, "iothread '" + id + "' is in use by export '" + e.options.id + "'");
    // Nodes and exports left it; anything still waiting there (a connection
    // that did not follow its node, a timer) would never run again.
    AioContext::WaitingWork left;
    run_in_context_sync(it->second->ctx(), [&] { left = it->second->ctx().waiting_work(); });
    if (!left.empty())
        return fail(EBUSY, "iothread '" + id + "' still has work waiting in it (" + std::to_string(left.fds) +
                               " fds watched, " + std::to_string(left.timers) + " timers armed); not deleted");
    it->second->stop();
    iothreads_.erase(it);
    LOG_INFO("iothread '%s' stopped", id.c_str());
    return {};
}

Result<void> StorageDaemon::add_blockdev(const BlockdevOptions& b) {
    auto node = graph_.open(b.options, main_loop_.ctx());  // refuses a node-name in use
    if (!node) return std::unexpected(node.error());
    return {};
}

Result<void> StorageDaemon::reopen_blockdevs(const nlohmann::json& options_list) {
    std::vector<OptionTree> trees;
    for (const nlohmann::json& options : options_list) {
        if (!options.is_object()) return fail(EINVAL, "Invalid parameter type for 'options', expected: object");
        trees.push_back(OptionTree{options, OptionSyntax::json});
    }
    return graph_.reopen(trees);
}

Result<void> StorageDaemon::del_blockdev(const std::string& node_name) {
    auto node = graph_.find(node_name);
    if (!node) return fail(ENOENT, "Failed to find node with node-name='" + node_name + "'");
    if (auto r = graph_.check_removable(node_name); !r) return r;
    // Drivers release their per-context resources in their own context.
    if (&node->ctx() != &main_loop_.ctx())
        if (auto r = block::change_aio_context(*node, main_loop_.ctx()); !r) return r;
    return graph_.remove(node_name);
}

Result<void> StorageDaemon::start_nbd_server(const NbdServerOptions& o) {
    if (nbd_server_) return fail(EEXIST, "NBD server already running");
    auto server = nbd::NbdServer::start(
        main_loop_.ctx(), {.addr = o.addr,
                           .max_connections = o.max_connections,
                           .memory_budget = &buffer_memory_,
                           .descriptors = descriptors_});
    if (!server) return std::unexpected(server.error());
    nbd_server_ = std::move(*server);
    LOG_INFO("nbd server listening on %s", describe(o.addr).c_str());
    return {};
}

Result<void> StorageDaemon::stop_nbd_server() {
    if (!nbd_server_) return fail(ENOENT, "NBD server not running");
    // As QEMU: the NBD exports go with the server, oldest first.
    for (size_t i = 0; i < exports_.size();) {
        if (exports_[i].nbd)
            remove_export_at(i);
        else
            i++;
    }
    nbd_server_.reset();
    LOG_INFO("nbd server stopped");
    return {};
}

Result<void> StorageDaemon::add_export(const ExportOptions& e) {
    if (e.type == "fuse")
        return fail(ENOTSUP, "export '" + e.id + "': type '" + e.type + "' is not supported yet");
    for (const Export& x : exports_)
        if (x.options.id == e.id) return fail(EEXIST, "Block export id '" + e.id + "' is already in use");
    if (e.fs9p) return add_9p_export(e);
    if (e.vhost_user_blk) return add_vhost_user_blk_export(e);
    if (!nbd_server_) return fail(EINVAL, "export '" + e.id + "': NBD server not running");
    auto node = graph_.find(e.node_name);
    if (!node) return fail(ENOENT, "export '" + e.id + "': no node named '" + e.node_name + "'");
    const std::string name = e.nbd && !e.nbd->name.empty() ? e.nbd->name : e.node_name;
    if (nbd_server_->find_export(name)) return fail(EEXIST, "export '" + e.id + "': an NBD export named '" + name + "' exists already");
    if (auto r = block::BlockBackend::can_attach(*node, e.writable, block::kAnonymousUser); !r) return r;
    // Before the move: a refused bitmap leaves the node where it was.
    auto bitmaps = find_export_bitmaps(graph_, node, e.writable, e.nbd ? e.nbd->bitmaps : std::vector<NbdBitmapRef>{});
    if (!bitmaps) return std::unexpected(bitmaps.error());
    if (auto r = move_to_export_iothread(e, *node); !r) return r;
    nbd::NbdExportOptions o;
    o.id = e.id;
    o.writable = e.writable;
    o.allocation_depth = e.nbd && e.nbd->allocation_depth;
    o.bitmaps = std::move(*bitmaps);
    o.name = name;
    if (e.nbd) o.description = e.nbd->description.value_or("");
    auto exp = std::make_shared<nbd::NbdExport>(std::move(o), node);
    if (auto r = nbd_server_->add_export(exp); !r) return fail(r.error().code, "export '" + e.id + "': " + r.error().message);
    exports_.push_back({e, exp});
    const std::string uri = nbd_server_->uri(exp->name());
    LOG_INFO("export '%s': node '%s' served as %s%s", e.id.c_str(), e.node_name.c_str(), uri.c_str(),
             exp->read_only() ? " (read-only)" : "");
    LOG_INFO("  try: nbdinfo '%s'", uri.c_str());
    LOG_INFO("  try: qemu-io -f raw '%s' -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k'", uri.c_str());
    return {};
}

Result<void> StorageDaemon::move_to_export_iothread(const ExportOptions& e, block::BlockNode& node) {
    if (!e.iothread) return {};
    auto it = iothreads_.find(*e.iothread);
    if (it == iothreads_.end()) return fail(ENOENT, "export '" + e.id + "': no iothread '" + *e.iothread + "'");
    if (&node.ctx() == &it->second->ctx()) return {};
    if (auto r = block::change_aio_context(node, it->second->ctx()); !r)
        return fail(r.error().code, "export '" + e.id + "': " + r.error().message);
    return {};
}

Result<void> StorageDaemon::add_vhost_user_blk_export(const ExportOptions& e) {
    auto node = graph_.find(e.node_name);
    if (!node) return fail(ENOENT, "export '" + e.id + "': no node named '" + e.node_name + "'");
    const VhostUserBlkOptions& v = *e.vhost_user_blk;
    vhost_user::VhostUserBlkExportOptions o{.id = e.id, .addr = v.addr, .writable = e.writable,
                                            .num_queues = v.num_queues, .logical_block_size = v.logical_block_size};
    for (const std::string& id : v.queue_iothreads) {
        auto it = iothreads_.find(id);
        if (it == iothreads_.end()) return fail(ENOENT, "export '" + e.id + "': no iothread '" + id + "'");
        o.queue_contexts.push_back(&it->second->ctx());
    }
    if (auto r = vhost_user::check_vhost_user_blk_options(o); !r)
        return fail(r.error().code, "export '" + e.id + "': " + r.error().message);
    if (auto r = block::BlockBackend::can_attach(*node, e.writable, block::kAnonymousUser); !r) return r;
    if (auto r = move_to_export_iothread(e, *node); !r) return r;
    auto exp = vhost_user::VhostUserBlkExport::start(main_loop_.ctx(), std::move(o), node);
    if (!exp) return std::unexpected(exp.error());
    LOG_INFO("export '%s': node '%s' served as vhost-user-blk on %s%s", e.id.c_str(), e.node_name.c_str(),
             describe(v.addr).c_str(), e.writable ? "" : " (read-only)");
    exports_.push_back({e, nullptr, nullptr, std::move(*exp)});
    return {};
}

Result<void> StorageDaemon::add_9p_export(const ExportOptions& e) {
    AioContext* ctx = &main_loop_.ctx();
    if (e.iothread) {
        auto it = iothreads_.find(*e.iothread);
        if (it == iothreads_.end()) return fail(ENOENT, "export '" + e.id + "': no iothread '" + *e.iothread + "'");
        ctx = &it->second->ctx();
    }
    fs9p::Fs9pExportOptions o{.id = e.id,
                              .path = e.fs9p->path,
                              .addr = e.fs9p->addr,
                              .readonly = e.fs9p->readonly,
                              .max_connections = e.fs9p->max_connections,
                              .security_model = *fs9p::parse_security_model(e.fs9p->security_model),
                              .memory_budget = &buffer_memory_,
                              .descriptors = descriptors_,
                              .descriptors_per_connection = descriptors_per_connection_};
    auto exp = fs9p::Fs9pExport::start(main_loop_.ctx(), *ctx, std::move(o));
    if (!exp) return std::unexpected(exp.error());
    exports_.push_back({e, nullptr, std::move(*exp)});
    return {};
}

Result<void> StorageDaemon::del_export(const std::string& id, bool hard) {
    for (size_t i = 0; i < exports_.size(); i++) {
        if (exports_[i].options.id != id) continue;
        if (!hard && exports_[i].connection_count() > 0)
            return fail(EBUSY, "export '" + id + "' still in use (use mode='hard' to disconnect its clients)");
        remove_export_at(i);
        return {};
    }
    return fail(ENOENT, "Export '" + id + "' is not found");
}

void StorageDaemon::remove_export_at(size_t index) {
    Export e = std::move(exports_[index]);
    exports_.erase(exports_.begin() + ptrdiff_t(index));
    if (e.nbd) nbd_server_->remove_export(e.nbd.get());  // waits until its clients are gone
    e.fs9p.reset();                                       // so does this
    e.vhost_user_blk.reset();                             // and this (its requests complete)
    LOG_INFO("export '%s' removed", e.options.id.c_str());
    dispatcher_.emit_event("BLOCK_EXPORT_DELETED", {{"id", e.options.id}});
}

Result<void> StorageDaemon::set_iothread(const std::string& node_name, const std::optional<std::string>& iothread,
                                         bool force) {
    auto node = graph_.find(node_name);
    if (!node) return fail(ENOENT, "Failed to find node with node-name='" + node_name + "'");
    if (node->has_parent_nodes())
        return fail(EBUSY, "Node '" + node_name + "' is not a root node: move its root instead");
    if (!force && !node->users().empty())
        return fail(EBUSY, "Node " + node_name + " is associated with a BlockBackend and could be in use "
                           "(use force=true to override this check)");
    for (const Export& e : exports_)
        if (e.node_name() == node_name && e.options.fixed_iothread)
            return fail(EBUSY, "Node '" + node_name + "' is exported by '" + e.options.id + "' with fixed-iothread=on");
    AioContext* target = &main_loop_.ctx();
    if (iothread) {
        auto it = iothreads_.find(*iothread);
        if (it == iothreads_.end()) return fail(ENOENT, "Cannot find iothread " + *iothread);
        target = &it->second->ctx();
    }
    if (&node->ctx() == target) return {};
    return block::change_aio_context(*node, *target);
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
    // qemu-storage-daemon's order, which QEMU's iotests see (qsd-jobs):
    // exports, then jobs, each with its events, then quit's response.
    dispatcher_.stop_commands();
    while (!exports_.empty()) remove_export_at(0);  // oldest first, as QSD; disconnects their clients
    if (nbd_server_) {
        nbd_server_.reset();  // stops listening, disconnects clients still negotiating
        LOG_INFO("nbd server stopped");
    }
    jobs_.cancel_all_and_wait();
    dispatcher_.send_deferred_responses();
    monitors_.clear();  // sends what they can at once, then disconnects
    const bool flushed = flush_all_nodes();
    // Nodes go back to the main loop before their IOThreads stop.
    for (auto& node : graph_.nodes())
        (void)block::change_aio_context(*node, main_loop_.ctx());
    for (auto& [id, io] : iothreads_) {
        io->stop();
        LOG_INFO("iothread '%s' stopped", id.c_str());
    }
    iothreads_.clear();
    return flushed;
}

}  // namespace ioplane::daemon
