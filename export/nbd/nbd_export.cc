#include "nbd/nbd_export.h"

#include <algorithm>

#include "ioplane/block/node.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/main_loop.h"
#include "nbd/connection.h"

namespace ioplane::nbd {

NbdExport::NbdExport(NbdExportOptions options, std::shared_ptr<block::BlockNode> node)
    : options_(std::move(options)),
      blk_(std::make_unique<block::BlockBackend>(std::move(node), options_.writable, block::kAnonymousUser)),
      stall_check_(*main_context(), [this] { disconnect_stalled_readers(); }) {
    if (options_.name.empty()) options_.name = blk_->node().node_name();
    offer_.allocation_depth = options_.allocation_depth;
    // QMP refuses to change or remove a busy bitmap (QEMU's nbd_export_create).
    for (const ExportedBitmap& b : options_.bitmaps) {
        offer_.bitmaps.push_back(b.bitmap->name());
        block::DrainedSection drained(*b.node);
        b.bitmap->set_busy(true);
    }
    // Connections count each request from receipt to reply; I/O inside one
    // must not wait for a drained section that waits for it.
    blk_->disable_request_queuing();
    blk_->set_owner(this);
}

NbdExport::~NbdExport() {
    release_bitmaps();
    blk_->set_owner(nullptr);
}

void NbdExport::release_bitmaps() {
    assert_in_main_thread();
    for (const ExportedBitmap& b : options_.bitmaps) {
        block::DrainedSection drained(*b.node);
        b.bitmap->set_busy(false);
    }
    options_.bitmaps.clear();
}

// Bits change in the node's context (writes mark them), and a drained
// section that could change them otherwise (QMP's clear, merge: refused
// for a busy bitmap anyway) waits for our caller's request: reading them
// here needs no lock. A bitmap's node that a graph change took out of the
// exported node's component may sit in another context; it is not read.
Result<void> NbdExport::bitmap_extents(size_t index, uint64_t offset, uint64_t length, ExtentList& out) {
    assert_in_context(blk_->ctx());
    IOPLANE_ASSERT(index < options_.bitmaps.size());
    const ExportedBitmap& b = options_.bitmaps[index];
    if (&b.node->ctx() != &blk_->ctx())
        return fail(EIO, "bitmap '" + b.bitmap->name() + "' is on node '" + b.node->node_name() +
                             "', which is no longer in the export's I/O thread");
    const block::DirtyBits& bits = b.bitmap->bits();
    const uint64_t end = offset + length;
    uint64_t off = offset;
    // Runs as long as the bitmap knows, then clean to the end: a bitmap of
    // a shorter node down the chain says nothing of the bytes past it.
    while (off < end && off < bits.length()) {
        const block::DirtyRun run = bits.run_at(off, end - off);
        if (!out.add(run.bytes, run.dirty ? NBD_STATE_DIRTY : 0)) return {};
        off += run.bytes;
    }
    if (off < end) out.add(end - off, 0);
    return {};
}

void NbdExport::remove_connection(const std::shared_ptr<Connection>& c) {
    connections_.erase(std::remove(connections_.begin(), connections_.end(), c), connections_.end());
}

bool NbdExport::has_connection(const Connection* c) const {
    return std::any_of(connections_.begin(), connections_.end(), [c](auto& p) { return p.get() == c; });
}

uint32_t NbdExport::preferred_block() const { return std::max<uint32_t>(4096, blk_->node().limits().request_alignment); }

uint16_t NbdExport::transmission_flags(bool structured) const {
    const block::DriverCaps caps = blk_->node().driver().caps();
    // Every connection of an export shares one node: a flush on any of them
    // covers writes completed on all of them, so multi-conn is safe.
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE |
                     NBD_FLAG_CAN_MULTI_CONN;
    if (structured) flags |= NBD_FLAG_SEND_DF;
    if (read_only()) {
        flags |= NBD_FLAG_READ_ONLY;
    } else {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
        if (caps.can_write_zeroes) flags |= NBD_FLAG_SEND_FAST_ZERO;
    }
    return flags;
}

ExportLimits NbdExport::limits(bool structured, bool meta_context_selected) const {
    const uint16_t flags = transmission_flags(structured);
    ExportLimits l;
    l.size = blk_->length();
    l.read_only = read_only();
    l.structured_replies = structured;
    l.max_payload = kDefaultMaxPayload;
    l.min_block = min_block();
    l.can_trim = flags & NBD_FLAG_SEND_TRIM;
    l.can_write_zeroes = flags & NBD_FLAG_SEND_WRITE_ZEROES;
    l.can_fast_zero = flags & NBD_FLAG_SEND_FAST_ZERO;
    l.can_cache = flags & NBD_FLAG_SEND_CACHE;
    l.can_flush = flags & NBD_FLAG_SEND_FLUSH;
    l.can_fua = flags & NBD_FLAG_SEND_FUA;
    l.meta_context_selected = meta_context_selected;
    return l;
}

namespace {
constexpr int64_t kStallCheckPeriodNs = 1'000'000'000;
}  // namespace

void NbdExport::drained_begin() { stall_check_.arm_in(kStallCheckPeriodNs); }

void NbdExport::drained_end() {
    stall_check_.cancel();
    settled_.restart_all();  // after quiesced() became false: wait_while() cannot miss it
}

Task<void> NbdExport::wait_until_settled() {
    assert_in_context(*main_context());
    while (blk_->node().quiesced()) co_await settled_.wait_while([this] { return blk_->node().quiesced(); });
}

// The timer fires while the main loop runs inside the drained section: in
// drained_begin()'s wait, or in a move's waits for the other contexts. The
// check runs in the node's context, where the connections are; not while
// they move (a BH scheduled earlier runs before the move's own, in order).
void NbdExport::disconnect_stalled_readers() {
    stall_check_.arm_in(kStallCheckPeriodNs);
    if (detached_from_ != nullptr) return;
    blk_->ctx().schedule_oneshot([conns = connections_] {
        const int64_t now = now_ns();
        for (auto& c : conns) c->disconnect_if_not_reading(now, kReplyStallNs);
    });
}

// Called drained: no request of ours is in flight; connections wait on their
// sockets (or to be admitted). Their fds leave the old context from inside it.
// The list is copied here, in the main thread: the main loop runs while we
// wait for the other context, and connections may come and go meanwhile
// (joiners wait for the move to end; leavers have dropped their fd).
void NbdExport::detach_aio_context() {
    detached_from_ = &blk_->ctx();
    auto conns = connections_;
    run_in_context_sync(*detached_from_, [&conns] {
        for (auto& c : conns) c->detach_aio_context();
    });
}

void NbdExport::attach_aio_context(AioContext& ctx) {
    auto conns = connections_;
    run_in_context_sync(ctx, [&conns, &ctx] {
        for (auto& c : conns) c->attach_aio_context(ctx);
    });
    detached_from_ = nullptr;
}

}  // namespace ioplane::nbd
