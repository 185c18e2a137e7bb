// Image operations of the monitor: blockdev-create (a job), block_resize,
// and the snapshot actions (blockdev-snapshot, blockdev-snapshot-sync, and
// blockdev-snapshot-internal-sync's refusal), which the commands of the
// same names and `transaction` run (transaction.h).
#include "daemon/storage_daemon.h"
#include "daemon/transaction_actions.h"

#include <optional>

#include "ioplane/block/backend.h"
#include "ioplane/block/create.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"

namespace ioplane::daemon {

namespace {

// blockdev-create's job (QEMU's JOB_TYPE_CREATE: dismissed by the user).
class CreateJob final : public block::Job {
public:
    CreateJob(std::string id, block::BlockGraph& graph, OptionTree options)
        : Job(std::move(id), "create", true, false), graph_(graph), options_(std::move(options)) {}

private:
    Task<Result<void>> run() override {
        set_progress(0, 1);
        auto r = co_await block::co_create_image(graph_, options_);
        if (r) set_progress(1, 1);
        co_return r;
    }
    block::BlockGraph& graph_;
    const OptionTree options_;
};

}  // namespace

Result<void> StorageDaemon::create_image(const std::string& job_id, OptionTree options) {
    assert_in_main_thread();
    return jobs_.start(std::make_unique<CreateJob>(job_id, graph_, std::move(options)));
}

// QEMU's block_resize: a user of the node with the resize permission, for
// the truncate, in the node's context.
Result<void> StorageDaemon::resize_node(const std::string& node_name, uint64_t size) {
    assert_in_main_thread();
    auto node = graph_.find(node_name);
    if (!node) return fail(ENOENT, "Cannot find device='' nor node-name='" + node_name + "'");
    if (!node->op_blocker().empty()) return fail(EBUSY, "Device '" + node_name + "' is in use");
    if (auto r = block::BlockBackend::can_attach(*node, true, "block_resize", true); !r) return r;
    block::BlockBackend blk(node, true, "block_resize", true);
    return block::run_to_completion(node->ctx(), blk.co_truncate(size));
}

// blockdev-snapshot-sync's image: made (unless mode=existing) with the
// node's image as its backing file, then opened without a backing child.
Result<std::shared_ptr<block::BlockNode>> StorageDaemon::open_overlay(const SnapshotSyncOptions& o,
                                                                     const block::BlockNode& node) {
    assert_in_main_thread();
    if (!o.existing) {
        const nlohmann::json file = {{"driver", "file"}, {"filename", o.file}, {"size", 0}};
        const nlohmann::json qcow2 = {{"driver", "qcow2"},
                                      {"file", {{"driver", "file"}, {"filename", o.file}}},
                                      {"size", node.driver().length()},
                                      {"backing-file", node.driver().filename()},
                                      {"backing-fmt", node.driver().format_name()}};
        auto create = [](block::BlockGraph& graph, const nlohmann::json& file,
                         const nlohmann::json& qcow2) -> Task<Result<void>> {
            // Named: GCC 12 destroys an aggregate temporary in a co_await
            // expression twice.
            const OptionTree file_tree{file, OptionSyntax::json}, qcow2_tree{qcow2, OptionSyntax::json};
            if (auto r = co_await block::co_create_image(graph, file_tree); !r) co_return r;
            co_return co_await block::co_create_image(graph, qcow2_tree);
        };
        if (auto r = block::run_to_completion(main_loop_.ctx(), create(graph_, file, qcow2)); !r)
            return std::unexpected(r.error());
    }
    nlohmann::json options = {{"driver", o.format},
                              {"file", {{"driver", "file"}, {"filename", o.file}}},
                              {"backing", nullptr}};
    if (!o.snapshot_node_name.empty()) options["node-name"] = o.snapshot_node_name;
    const OptionTree tree{options, OptionSyntax::json};
    return o.snapshot_node_name.empty() ? graph_.open_unnamed(tree, main_loop_.ctx())
                                        : graph_.open(tree, main_loop_.ctx());
}

void StorageDaemon::close_overlay(const SnapshotSyncOptions& o) {
    assert_in_main_thread();
    // An unnamed overlay goes with its last holder.
    if (!o.snapshot_node_name.empty()) (void)graph_.remove(o.snapshot_node_name);
}

// Requests in flight finished on `node` when it was drained; the next ones
// go to `overlay`, which the caller drained too, so that they wait until
// the caller's sections end.
Result<void> StorageDaemon::install_overlay(const std::shared_ptr<block::BlockNode>& node,
                                            const std::shared_ptr<block::BlockNode>& overlay) {
    assert_in_main_thread();
    if (overlay == node) return fail(EINVAL, "The overlay cannot be the node itself");
    if (auto r = node->check_not_blocked(); !r) return r;
    // QEMU blocks a snapshot of a backing node (its backing_blocker).
    if (auto r = node->check_not_backing(); !r) return r;
    if (!overlay->users().empty() || overlay->has_parent_nodes()) return fail(EBUSY, "The overlay is already in use");
    if (overlay->child(block::ChildRole::backing)) return fail(EINVAL, "The overlay already has a backing image");
    if (!overlay->driver().supports_backing()) return fail(ENOTSUP, "The overlay does not support backing images");
    IOPLANE_ASSERT(node->quiesced() && overlay->quiesced());
    AioContext& overlay_ctx = overlay->ctx();
    if (&overlay_ctx != &node->ctx())
        if (auto r = block::change_aio_context(*overlay, node->ctx()); !r) return r;
    auto edge = overlay->attach_child(block::ChildRole::backing, node);
    Result<void> r = edge ? block::replace_node(*node, overlay, *edge) : Result<void>(std::unexpected(edge.error()));
    if (!r) {
        if (edge) overlay->detach_child(**edge);
        (void)block::change_aio_context(*overlay, overlay_ctx);  // back where it was, as it was there
        return r;
    }
    LOG_INFO("node '%s': now the active layer over node '%s'", overlay->node_name().c_str(), node->node_name().c_str());
    return {};
}

// The backing edge goes first, so that the users moving back find the
// node's permissions as they were before the overlay came.
void StorageDaemon::uninstall_overlay(const std::shared_ptr<block::BlockNode>& node,
                                      const std::shared_ptr<block::BlockNode>& overlay, AioContext& overlay_ctx) {
    assert_in_main_thread();
    IOPLANE_ASSERT(node->quiesced() && overlay->quiesced());
    if (block::BlockEdge* backing = overlay->child(block::ChildRole::backing)) overlay->detach_child(*backing);
    if (auto r = block::replace_node(*overlay, node, nullptr); !r)  // what held before: cannot fail
        LOG_ERROR("node '%s': cannot give its users back to node '%s': %s", overlay->node_name().c_str(),
                  node->node_name().c_str(), r.error().describe().c_str());
    if (&overlay_ctx != &overlay->ctx())
        if (auto r = block::change_aio_context(*overlay, overlay_ctx); !r)
            LOG_ERROR("node '%s': cannot move back: %s", overlay->node_name().c_str(), r.error().describe().c_str());
    LOG_INFO("node '%s': the snapshot onto node '%s' is undone", overlay->node_name().c_str(),
             node->node_name().c_str());
}

namespace {

using nlohmann::json;

// blockdev-snapshot and blockdev-snapshot-sync (QEMU's external_snapshot_*
// actions): prepare drains the node, finds (or makes and opens) the overlay,
// drains it and installs it; abort gives the node its place back (and
// closes an overlay it opened); the image made stays, as in QEMU.
class SnapshotAction final : public TransactionAction {
public:
    // blockdev-snapshot: `overlay` is an existing node.
    SnapshotAction(std::string node, std::string overlay)
        : node_name_(std::move(node)), overlay_name_(std::move(overlay)) {}
    // blockdev-snapshot-sync.
    explicit SnapshotAction(StorageDaemon::SnapshotSyncOptions o) : node_name_(o.node_name), sync_(std::move(o)) {}

    Result<void> prepare(Transaction& txn) override {
        if (auto r = txn.require_individual(); !r) return r;
        daemon_ = &txn.daemon();
        node_ = daemon_->graph().find(node_name_);
        if (!node_)
            return fail(ENOENT, "Cannot find device='" + (sync_ ? node_name_ : std::string()) + "' nor node-name='" +
                                    node_name_ + "'");
        txn.drain(*node_);
        if (sync_) {
            if (auto r = open_sync_overlay(); !r) return r;
        } else {
            overlay_ = daemon_->graph().find(overlay_name_);
            if (!overlay_) return fail(ENOENT, "Cannot find device='' nor node-name='" + overlay_name_ + "'");
        }
        overlay_ctx_ = &overlay_->ctx();
        txn.drain(*overlay_);
        if (auto r = daemon_->install_overlay(node_, overlay_); !r) {
            if (sync_) daemon_->close_overlay(*sync_);
            return r;
        }
        return {};
    }
    void abort() override {
        daemon_->uninstall_overlay(node_, overlay_, *overlay_ctx_);
        if (sync_) daemon_->close_overlay(*sync_);
    }

private:
    // QEMU's checks of the new node-name come before the image is made.
    Result<void> open_sync_overlay() {
        if (sync_->format != "qcow2") return fail(ENOTSUP, "snapshot format '" + sync_->format + "' is not supported");
        if (sync_->named_by_node_name && sync_->snapshot_node_name.empty())
            return fail(EINVAL, "New overlay node-name missing");
        if (!sync_->snapshot_node_name.empty() && daemon_->graph().find(sync_->snapshot_node_name))
            return fail(EEXIST, "New overlay node-name already in use");
        auto overlay = daemon_->open_overlay(*sync_, *node_);
        if (!overlay) return std::unexpected(overlay.error());
        overlay_ = std::move(*overlay);
        return {};
    }

    const std::string node_name_, overlay_name_;
    std::optional<StorageDaemon::SnapshotSyncOptions> sync_;
    StorageDaemon* daemon_ = nullptr;
    std::shared_ptr<block::BlockNode> node_, overlay_;
    AioContext* overlay_ctx_ = nullptr;  // where the overlay was before
};

// blockdev-snapshot-internal-sync: ioplane has no internal snapshots, so
// after QEMU's first checks (its internal_snapshot_prepare) every node
// gets QEMU's refusal for a format without them.
class InternalSnapshotAction final : public TransactionAction {
public:
    explicit InternalSnapshotAction(std::string device) : device_(std::move(device)) {}
    Result<void> prepare(Transaction& txn) override {
        if (auto r = txn.require_individual(); !r) return r;
        auto node = txn.daemon().graph().find(device_);
        if (!node) return fail(ENOENT, "Cannot find device='" + device_ + "' nor node-name='" + device_ + "'");
        if (node->has_parent_nodes()) return fail(EINVAL, "Need a root block node");
        if (node->read_only()) return fail(EROFS, "Device '" + device_ + "' is read only");
        return fail(ENOTSUP, "Block format '" + std::string(node->driver().format_name()) + "' used by device '" + device_ +
                                 "' does not support internal snapshots");
    }

private:
    const std::string device_;
};

}  // namespace

ParsedAction parse_snapshot_action(const json& data, const std::string& path) {
    OptionReader r(data, OptionSyntax::json, path);
    auto node = r.require_string("node");
    if (!node) return std::unexpected(node.error());
    auto overlay = r.require_string("overlay");
    if (!overlay) return std::unexpected(overlay.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return std::make_unique<SnapshotAction>(std::move(*node), std::move(*overlay));
}

ParsedAction parse_snapshot_sync_action(const json& data, const std::string& path) {
    OptionReader r(data, OptionSyntax::json, path);
    auto device = r.get_string("device");
    if (!device) return std::unexpected(device.error());
    auto node_name = r.get_string("node-name");
    if (!node_name) return std::unexpected(node_name.error());
    auto file = r.require_string("snapshot-file");
    if (!file) return std::unexpected(file.error());
    auto snapshot_name = r.get_string("snapshot-node-name");
    if (!snapshot_name) return std::unexpected(snapshot_name.error());
    auto format = r.get_string("format");
    if (!format) return std::unexpected(format.error());
    auto mode = r.get_string("mode");
    if (!mode) return std::unexpected(mode.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    if (!*device && !*node_name) return fail(EINVAL, "Cannot find device= nor node-name=");
    if (*mode && **mode != "existing" && **mode != "absolute-paths")
        return fail(EINVAL, "Parameter 'mode' does not accept value '" + **mode + "'");
    StorageDaemon::SnapshotSyncOptions o;
    o.node_name = node_name->value_or(device->value_or(""));
    o.named_by_node_name = node_name->has_value();
    o.file = *file;
    o.snapshot_node_name = snapshot_name->value_or("");
    o.format = format->value_or("qcow2");
    o.existing = *mode && **mode == "existing";
    return std::make_unique<SnapshotAction>(std::move(o));
}

ParsedAction parse_internal_snapshot_action(const json& data, const std::string& path) {
    OptionReader r(data, OptionSyntax::json, path);
    auto device = r.require_string("device");
    if (!device) return std::unexpected(device.error());
    auto name = r.require_string("name");
    if (!name) return std::unexpected(name.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return std::make_unique<InternalSnapshotAction>(std::move(*device));
}

}  // namespace ioplane::daemon
