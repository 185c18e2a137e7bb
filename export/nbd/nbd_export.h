// NbdExport: one block node offered to NBD clients under a name. It owns the
// BlockBackend through which its connections do I/O and follows the node when
// the node moves to another AioContext (its connections' fds move with it).
// While the node is drained it disconnects clients that do not read their
// replies (see drained_begin()). It offers dirty bitmaps as QEMU's
// qemu:dirty-bitmap:NAME contexts, and holds them busy while it exists.
//
// Thread contract: main thread, except transmission_flags()/limits() (any
// thread; constant while the export exists) and bitmap_extents() (the
// node's context, inside a counted request).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "export_stats.h"
#include "ioplane/block/backend.h"
#include "ioplane/block/dirty_bitmap.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/timer.h"
#include "nbd/extent_list.h"
#include "nbd/meta_context.h"
#include "nbd/protocol.h"

namespace ioplane::nbd {

class Connection;

// A dirty bitmap an export offers (the daemon found it and checked it may be
// used). Its node is the exported node or one connected to it by edges, so
// it lives in the same context and the same drained sections.
struct ExportedBitmap {
    std::shared_ptr<block::BlockNode> node;  // keeps the bitmap's node, and so the bitmap, alive
    block::DirtyBitmap* bitmap = nullptr;
};

struct NbdExportOptions {
    std::string id;
    std::string name;  // what clients ask for; defaults to the node-name
    std::string description;
    bool writable = false;
    bool allocation_depth = false;  // offer the qemu:allocation-depth meta context
    std::vector<ExportedBitmap> bitmaps;  // offered as qemu:dirty-bitmap:NAME, marked busy meanwhile
};

class NbdExport final : public block::BlockBackend::Owner {
public:
    NbdExport(NbdExportOptions options, std::shared_ptr<block::BlockNode> node);
    ~NbdExport();

    const std::string& id() const { return options_.id; }
    const std::string& name() const { return options_.name; }
    const std::string& description() const { return options_.description; }
    block::BlockBackend& blk() { return *blk_; }
    // Connections record their requests here (in the node's context).
    ExportStats& stats() { return stats_; }
    size_t connection_count() const { return connections_.size(); }
    bool read_only() const { return !options_.writable || blk_->node().read_only(); }

    // Any thread (constant): the meta contexts clients may select.
    const MetaContextOffer& meta_contexts() const { return offer_; }
    // The node's context, inside a request the caller counts on blk():
    // the dirty and clean runs of the offered bitmap `index` over
    // [offset, offset + length) (QEMU's bitmap_to_extents). EIO if the
    // bitmap's node has left the exported node's context (a graph change
    // took it away).
    Result<void> bitmap_extents(size_t index, uint64_t offset, uint64_t length, ExtentList& out);
    // Main thread: the bitmaps are no longer busy, and not read again.
    // When the export is removed (its clients are gone by then), else
    // when it is destroyed.
    void release_bitmaps();
    uint16_t transmission_flags(bool structured_replies) const;
    ExportLimits limits(bool structured_replies, bool meta_context_selected) const;
    // NBD_INFO_BLOCK_SIZE: any request is taken (the node's request path
    // pads what its driver cannot take), requests of the preferred size go
    // without read-modify-write.
    uint32_t min_block() const { return 1; }
    uint32_t preferred_block() const;

    // Connections in the transmission phase of this export.
    void add_connection(std::shared_ptr<Connection> c) { connections_.push_back(std::move(c)); }
    void remove_connection(const std::shared_ptr<Connection>& c);
    bool has_connection(const Connection* c) const;
    // Coroutine in the main loop: returns once the node is not drained (no
    // move under way). Joining connections wait here, in the one context that
    // outlives every IOThread, never in the node's.
    Task<void> wait_until_settled();

    // A drained section waits until every request has sent its reply. A
    // client that stops reading would hold it, and the command or shutdown
    // behind it, forever: while the node is drained, a connection whose
    // replies have found no room in its socket for kReplyStallNs is
    // disconnected, which ends its requests.
    static constexpr int64_t kReplyStallNs = 5'000'000'000;
    void drained_begin() override;
    void drained_end() override;
    void detach_aio_context() override;
    void attach_aio_context(AioContext& ctx) override;

private:
    void disconnect_stalled_readers();

    NbdExportOptions options_;
    MetaContextOffer offer_;  // constant
    std::unique_ptr<block::BlockBackend> blk_;
    std::vector<std::shared_ptr<Connection>> connections_;
    AioContext* detached_from_ = nullptr;  // set while the node moves
    Timer stall_check_;                    // main loop; armed while drained
    CoQueue settled_;                      // woken when the node's drained section ends
    ExportStats stats_;
};

}  // namespace ioplane::nbd
