// VhostUserBlkExport: a block node served as a virtio-blk device to one
// vhost-user front end at a time (a QEMU process running a VM) on a unix
// socket. The control channel runs in the main loop; the virtqueues run in
// IOThreads: all in the node's context (they follow it when it moves), or,
// with queue iothreads, queue i in iothread i mod n (fixed; their requests
// hop to the node's context for the I/O and back).
//
// When the front end goes away the queues are stopped, their requests
// complete, the memory is unmapped, and the next front end to connect gets
// a fresh device. One front end at a time: a second connection while one is
// served is closed at once (qemu-storage-daemon stops accepting instead;
// either way QEMU's reconnect retries).
//
// Thread contract: main thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/core/listener.h"
#include "session.h"

namespace ioplane::vhost_user {

struct VhostUserBlkExportOptions {
    std::string id;
    ListenAddress addr;  // unix only
    bool writable = false;
    uint16_t num_queues = 1;
    uint32_t logical_block_size = 512;
    // Empty: the queues follow the node's context.
    std::vector<AioContext*> queue_contexts;
};

class VhostUserBlkExport final : public block::BlockBackend::Owner {
public:
    static Result<std::unique_ptr<VhostUserBlkExport>> start(AioContext& main_ctx, VhostUserBlkExportOptions options,
                                                             std::shared_ptr<block::BlockNode> node);
    // Disconnects the front end (its requests complete first).
    ~VhostUserBlkExport();

    const std::string& id() const { return options_.id; }
    size_t connection_count() const { return session_ ? 1 : 0; }
    // The node it serves now: a mirror's completion or a snapshot moves
    // the export's BlockBackend onto another node.
    block::BlockNode& node() const { return blk_->node(); }

    void detach_aio_context() override {}
    void attach_aio_context(AioContext& ctx) override;

private:
    VhostUserBlkExport(AioContext& main_ctx, VhostUserBlkExportOptions options, std::shared_ptr<block::BlockNode> node);
    void on_client(int fd);
    std::vector<AioContext*> queue_contexts() const;

    AioContext& main_ctx_;
    const VhostUserBlkExportOptions options_;
    const std::string name_;  // "vhost-user-blk export 'e0'"
    std::unique_ptr<block::BlockBackend> blk_;
    BlkDeviceConfig config_;
    bool writeback_ = true;  // the cache mode, across sessions (Session::Device::writeback)
    std::unique_ptr<Listener> listener_;
    std::shared_ptr<Session> session_;
};

// Checks num-queues and logical-block-size (as QEMU words its errors).
Result<void> check_vhost_user_blk_options(const VhostUserBlkExportOptions& options);

}  // namespace ioplane::vhost_user
