// StorageDaemon: what one run of ioplane-storage-daemon holds — IOThreads,
// block nodes, the NBD server, exports and QMP monitors — and the operations
// that change it, shared by the command line (at startup) and the QMP
// commands (live). Each operation checks everything before it changes
// anything, so a refused one leaves the daemon as it was.
//
// Thread contract: main thread, under the BQL, for every member. Operations
// that touch a node in an IOThread do so inside a drained section or by
// running code in that IOThread (they wait with nested main-loop iterations).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/options.h"
#include "ioplane/block/graph.h"
#include "ioplane/block/job.h"
#include "ioplane/core/budget.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"
#include "fs9p_export.h"
#include "vhost_user_blk_export.h"
#include "nbd/server.h"
#include "qmp_server.h"

namespace ioplane::daemon {

class StorageDaemon {
public:
    explicit StorageDaemon(MainLoop& main_loop)
        : main_loop_(main_loop),
          jobs_([this](const std::string& name, nlohmann::json data) { dispatcher_.emit_event(name, data); }) {}
    ~StorageDaemon();

    // Builds everything the command line asks for, kind by kind (iothreads,
    // nodes, the NBD server, exports, monitors). Errors name the object.
    Result<void> start(const DaemonConfig& config);
    // Makes the main loop return (quit, a signal); no command starts any
    // more.
    void request_shutdown();
    // As qemu-storage-daemon exits: closes the exports (a
    // BLOCK_EXPORT_DELETED each) and the NBD server, cancels the jobs (with
    // their events), sends quit's response, closes the monitors, flushes
    // every node and stops the IOThreads. No SHUTDOWN event: QSD sends none.
    // False if a flush failed (data may not be on stable storage).
    // Idempotent.
    bool shutdown();

    // Live operations (QMP). Errors are one line for the client.
    Result<void> add_object(const ObjectOptions& options);
    // An IOThread or a throttle group, refused while in use.
    Result<void> del_object(const std::string& id);
    Result<void> add_iothread(const IOThreadOptions& options);
    Result<void> del_iothread(const std::string& id);
    Result<void> add_throttle_group(const ThrottleGroupOptions& options);
    // qom-get/qom-set: the `limits` of a throttle group at `path` ("g" or
    // "/objects/g").
    Result<nlohmann::json> qom_get(const std::string& path, const std::string& property) const;
    Result<void> qom_set(const std::string& path, const std::string& property, const nlohmann::json& value);
    // blockdev-reopen: each element is a node's complete options, as for
    // blockdev-add; see docs/QMP.md for what may change.
    Result<void> reopen_blockdevs(const nlohmann::json& options_list);
    Result<void> add_blockdev(const BlockdevOptions& options);
    Result<void> del_blockdev(const std::string& node_name);
    Result<void> start_nbd_server(const NbdServerOptions& options);
    Result<void> stop_nbd_server();
    Result<void> add_export(const ExportOptions& options);
    // hard: disconnect the export's clients; safe: refuse while it has any.
    Result<void> del_export(const std::string& id, bool hard);
    // Moves the graph under a root node, with its exports, to an IOThread
    // (or the main loop if `iothread` is empty). Without `force`, a node that
    // exports use is refused, as QEMU refuses a node with a BlockBackend.
    Result<void> set_iothread(const std::string& node_name, const std::optional<std::string>& iothread, bool force);
    // blockdev-create: a job that makes the image `options` describe.
    Result<void> create_image(const std::string& job_id, OptionTree options);
    // block_resize: the node grows (or shrinks) to `size` bytes.
    Result<void> resize_node(const std::string& node_name, uint64_t size);
    // The steps of blockdev-snapshot and blockdev-snapshot-sync, which
    // run as transaction actions (image_commands.cc):
    struct SnapshotSyncOptions {
        std::string node_name;           // device or node-name
        std::string file;                // snapshot-file
        std::string snapshot_node_name;  // empty: an automatic one
        std::string format = "qcow2";
        bool existing = false;  // mode=existing: the file is already an image
        bool named_by_node_name = false;  // node-name given (not device)
    };
    // blockdev-snapshot-sync's overlay for `node`: the image made (unless
    // `existing`) with the node's image as its backing file, then opened
    // without a backing child (with a snapshot_node_name, as the monitor's
    // node).
    Result<std::shared_ptr<block::BlockNode>> open_overlay(const SnapshotSyncOptions& options,
                                                           const block::BlockNode& node);
    // Undoes open_overlay (the image file stays, as in QEMU).
    void close_overlay(const SnapshotSyncOptions& options);
    // Drained section of `node` and `overlay`: `overlay` (no backing child,
    // no users, moved to the node's context if needed) takes `node` as
    // backing child and its place under every parent and user.
    Result<void> install_overlay(const std::shared_ptr<block::BlockNode>& node,
                                 const std::shared_ptr<block::BlockNode>& overlay);
    // In the same drained sections: undoes install_overlay; the overlay
    // goes back to `overlay_ctx`.
    void uninstall_overlay(const std::shared_ptr<block::BlockNode>& node,
                           const std::shared_ptr<block::BlockNode>& overlay, AioContext& overlay_ctx);
    block::JobManager& jobs() { return jobs_; }

    // One of nbd, fs9p and vhost_user_blk is set, by options.type.
    struct Export {
        ExportOptions options;
        std::shared_ptr<nbd::NbdExport> nbd;
        std::shared_ptr<fs9p::Fs9pExport> fs9p;
        std::shared_ptr<vhost_user::VhostUserBlkExport> vhost_user_blk;
        size_t connection_count() const {
            return nbd ? nbd->connection_count() : fs9p ? fs9p->connection_count() : vhost_user_blk->connection_count();
        }
        // Main thread: the node a block export serves now, as QEMU reports
        // it (blk_bs): a snapshot or a mirror's completion moves the export
        // onto another node. A 9P export has none: the name it was given.
        const std::string& node_name() const {
            return nbd              ? nbd->blk().node().node_name()
                   : vhost_user_blk ? vhost_user_blk->node().node_name()
                                    : options.node_name;
        }
    };
    const std::vector<Export>& exports() const { return exports_; }
    const std::map<std::string, std::unique_ptr<IOThread>>& iothreads() const { return iothreads_; }
    const block::BlockGraph& graph() const { return graph_; }
    // For commands whose jobs add nodes of their own (a backup's filter).
    block::BlockGraph& graph() { return graph_; }
    monitor::QmpDispatcher& dispatcher() { return dispatcher_; }

private:
    Result<void> add_monitor(const MonitorOptions& monitor, const std::vector<ChardevOptions>& chardevs);
    // Sets the descriptor budget from the open-files limit.
    void set_descriptor_budget();
    Result<void> add_9p_export(const ExportOptions& options);
    Result<void> add_vhost_user_blk_export(const ExportOptions& options);
    // Moves `node` to the export's iothread, if it names one.
    Result<void> move_to_export_iothread(const ExportOptions& e, block::BlockNode& node);
    // Closes the export, waits for its clients to be gone and sends
    // BLOCK_EXPORT_DELETED: before the running command's response, as
    // qemu-storage-daemon does.
    void remove_export_at(size_t index);
    bool flush_all_nodes();

    MainLoop& main_loop_;
    // Before the exports and the NBD server, whose connections charge them.
    Budget buffer_memory_{default_buffer_memory()};
    std::shared_ptr<Budget> descriptors_ = std::make_shared<Budget>(UINT64_MAX);  // 9P fids
    uint64_t descriptors_per_connection_ = UINT64_MAX;
    monitor::QmpDispatcher dispatcher_;
    std::map<std::string, std::unique_ptr<IOThread>> iothreads_;
    block::BlockGraph graph_;
    block::JobManager jobs_;  // before the graph goes: jobs use it
    std::unique_ptr<nbd::NbdServer> nbd_server_;
    std::vector<Export> exports_;
    std::vector<std::unique_ptr<monitor::QmpMonitor>> monitors_;
    bool shut_down_ = false;
};

}  // namespace ioplane::daemon
