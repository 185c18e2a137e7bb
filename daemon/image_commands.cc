// Image operations of the monitor: blockdev-create (a job), block_resize,
// blockdev-snapshot and blockdev-snapshot-sync.
#include "daemon/storage_daemon.h"
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

// QEMU's blockdev-snapshot (external_snapshot_action): `overlay` gets
// `node` as its backing child and takes its place under every parent and
// user, in one drained section: requests in flight finish on `node`, the
// next ones go to `overlay`.
Result<void> StorageDaemon::snapshot(const std::string& node_name, const std::string& overlay_name) {
    assert_in_main_thread();
    auto node = graph_.find(node_name);
    if (!node) return fail(ENOENT, "Cannot find device='' nor node-name='" + node_name + "'");
    auto overlay = graph_.find(overlay_name);
    if (!overlay) return fail(ENOENT, "Cannot find device='' nor node-name='" + overlay_name + "'");
    return install_overlay(node, overlay);
}

Result<void> StorageDaemon::install_overlay(const std::shared_ptr<block::BlockNode>& node,
                                            const std::shared_ptr<block::BlockNode>& overlay) {
    if (overlay == node) return fail(EINVAL, "The overlay cannot be the node itself");
    if (auto r = node->check_not_blocked(); !r) return r;
    if (!overlay->users().empty() || overlay->has_parent_nodes()) return fail(EBUSY, "The overlay is already in use");
    if (overlay->child(block::ChildRole::backing)) return fail(EINVAL, "The overlay already has a backing image");
    if (!overlay->driver().supports_backing()) return fail(ENOTSUP, "The overlay does not support backing images");
    if (&overlay->ctx() != &node->ctx())
        if (auto r = block::change_aio_context(*overlay, node->ctx()); !r) return r;
    block::DrainedSection drained(*node);
    auto edge = overlay->attach_child(block::ChildRole::backing, node);
    if (!edge) return std::unexpected(edge.error());
    if (auto r = block::replace_node(*node, overlay, *edge); !r) {
        overlay->detach_child(**edge);
        return r;
    }
    LOG_INFO("node '%s': now the active layer over node '%s'", overlay->node_name().c_str(), node->node_name().c_str());
    return {};
}

// QEMU's blockdev-snapshot-sync: the overlay image is made (unless
// mode=existing) with the node's file as its backing file, opened, and
// installed as blockdev-snapshot does.
Result<void> StorageDaemon::snapshot_sync(const SnapshotSyncOptions& o) {
    assert_in_main_thread();
    auto node = graph_.find(o.node_name);
    if (!node) return fail(ENOENT, "Cannot find device='" + o.node_name + "' nor node-name='" + o.node_name + "'");
    if (o.format != "qcow2") return fail(ENOTSUP, "snapshot format '" + o.format + "' is not supported");
    if (!o.existing) {
        const nlohmann::json file = {{"driver", "file"}, {"filename", o.file}, {"size", 0}};
        const nlohmann::json qcow2 = {{"driver", "qcow2"},
                                      {"file", {{"driver", "file"}, {"filename", o.file}}},
                                      {"size", node->driver().length()},
                                      {"backing-file", node->driver().filename()},
                                      {"backing-fmt", node->driver().format_name()}};
        auto create = [](block::BlockGraph& graph, const nlohmann::json& file,
                         const nlohmann::json& qcow2) -> Task<Result<void>> {
            // Named: GCC 12 destroys an aggregate temporary in a co_await
            // expression twice.
            const OptionTree file_tree{file, OptionSyntax::json}, qcow2_tree{qcow2, OptionSyntax::json};
            if (auto r = co_await block::co_create_image(graph, file_tree); !r) co_return r;
            co_return co_await block::co_create_image(graph, qcow2_tree);
        };
        if (auto r = block::run_to_completion(main_loop_.ctx(), create(graph_, file, qcow2)); !r) return r;
    }
    nlohmann::json options = {{"driver", o.format},
                              {"file", {{"driver", "file"}, {"filename", o.file}}},
                              {"backing", nullptr}};
    if (!o.snapshot_node_name.empty()) options["node-name"] = o.snapshot_node_name;
    const OptionTree tree{options, OptionSyntax::json};
    auto overlay = o.snapshot_node_name.empty() ? graph_.open_unnamed(tree, main_loop_.ctx())
                                                : graph_.open(tree, main_loop_.ctx());
    if (!overlay) return std::unexpected(overlay.error());
    auto r = install_overlay(node, *overlay);
    if (!r && !o.snapshot_node_name.empty()) (void)graph_.remove(o.snapshot_node_name);
    return r;
}

}  // namespace ioplane::daemon
