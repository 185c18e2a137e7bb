// The request path of a node: every read, write, zero, discard, flush,
// block-status and truncate on its way from a parent (through an edge) into
// the node's driver. In order:
//  - checks: bounds, read-only, the edge's permissions;
//  - counting: the request is tracked in the node (in_flight_, for drains;
//    its range, for serialising requests) for its whole life;
//  - waiting for older overlapping serialising requests, if there are any;
//  - alignment: a request not aligned to the driver's request_alignment, or
//    with buffers the driver cannot take, goes through an aligned bounce
//    buffer; an unaligned write reads the edges of its first and last
//    blocks first (read-modify-write), serialised against overlapping
//    requests so that racing writes end as some sequential order would;
//  - splitting at the driver's max_transfer;
//  - copy-on-read, and serialising writes, when the caller asks for them;
//  - FUA emulated by a flush when the driver has no native FUA;
//  - dirty bitmaps: a write, write-zeroes or discard marks the node's
//    enabled bitmaps over its range when it finishes, failed or not (QEMU's
//    bdrv_co_write_req_finish), and a read-only bitmap refuses it;
//  - a flush also flushes the children the node writes to.
// The common case (aligned, small, nothing serialising, no bitmaps) costs a
// check, two counter updates and a list insertion, and no coroutine beyond
// the driver's.
#include <algorithm>
#include <cstring>

#include "io_vector.h"
#include "ioplane/block/edge.h"
#include "ioplane/block/node.h"
#include "tracked_request.h"

namespace ioplane::block {
namespace {

enum class Access { read, write };

// The checks every request passes: inline, with the messages built out of
// line only for a request that fails them.
[[gnu::cold, gnu::noinline]] Result<void> request_error(const BlockEdge& edge, uint64_t offset, uint64_t bytes,
                                                          Access access) {
    const BlockNode& node = edge.child();
    const uint64_t size = node.length();
    if (offset > size || bytes > size - offset)
        return fail(access == Access::write ? ENOSPC : EINVAL, "node '" + node.node_name() + "': request past the end");
    if (node.read_only()) return fail(EPERM, "node '" + node.node_name() + "': read-only");
    return fail(EPERM, "node '" + node.node_name() + "': " + edge.parent_name() + " has no write permission");
}

// QEMU refuses with EPERM too (bdrv_has_readonly_bitmaps).
[[gnu::cold, gnu::noinline]] Result<void> readonly_bitmaps_error(const BlockNode& node) {
    return fail(EPERM, "node '" + node.node_name() + "': a read-only dirty bitmap forbids writes");
}

// Inside the request (before its NodeRequest ends), so that a drained
// section that sees the request finished also sees its marks. The caller's
// range, not the padded one: padding rewrites bytes that stay as they were.
void mark_dirty(BlockNode& node, uint64_t offset, uint64_t bytes) {
    DirtyBitmaps& bitmaps = node.dirty_bitmaps();
    if (bitmaps.tracking()) bitmaps.mark(offset, bytes);
}

inline bool request_ok(const BlockEdge& edge, uint64_t offset, uint64_t bytes, Access access) {
    const BlockNode& node = edge.child();
    const uint64_t size = node.length();
    if (offset > size || bytes > size - offset) return false;
    return access == Access::read ||
           (!node.read_only() && (edge.perm() & (kPermWrite | kPermWriteUnchanged)));
}

uint64_t align_down(uint64_t v, uint64_t a) { return v - v % a; }
uint64_t align_up(uint64_t v, uint64_t a) { return align_down(v + a - 1, a); }

bool needs_bounce(const NodeLimits& l, uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    if (l.request_alignment == 1 && l.memory_alignment == 1) return false;  // the common case, cheaply
    return offset % l.request_alignment || bytes % l.request_alignment || !iov_aligned(iov, l.memory_alignment);
}

// Reads or writes through the driver, in pieces of at most max_transfer.
Task<Result<void>> transfer_split(BlockNode& node, Access access, uint64_t offset, uint64_t bytes,
                                  std::span<const iovec> iov, uint32_t flags) {
    Driver& drv = node.driver();
    const uint64_t max = node.limits().max_transfer;
    for (uint64_t done = 0; done < bytes;) {
        const uint64_t n = std::min(max, bytes - done);
        const std::vector<iovec> part = iov_slice(iov, done, n);
        // (Not `cond ? co_await a : co_await b`: GCC 12 destroys such a
        // result twice.)
        Result<void> r;
        if (access == Access::read) r = co_await drv.co_preadv(offset + done, n, part);
        else r = co_await drv.co_pwritev(offset + done, n, part, flags);
        if (!r) co_return r;
        done += n;
    }
    co_return Result<void>{};
}

// Not a coroutine: a request within one transfer costs no frame of its own.
Task<Result<void>> transfer(BlockNode& node, Access access, uint64_t offset, uint64_t bytes,
                            std::span<const iovec> iov, uint32_t flags) {
    const uint64_t max = node.limits().max_transfer;
    if (max != 0 && bytes > max) return transfer_split(node, access, offset, bytes, iov, flags);
    Driver& drv = node.driver();
    return access == Access::read ? drv.co_preadv(offset, bytes, iov) : drv.co_pwritev(offset, bytes, iov, flags);
}

// Reads the aligned blocks around [offset, offset + bytes) into a bounce
// buffer and copies the asked part out.
Task<Result<void>> bounced_read(BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    const uint64_t align = node.limits().request_alignment;
    const uint64_t start = align_down(offset, align), end = align_up(offset + bytes, align);
    AlignedBuffer buf(node.limits().memory_alignment, end - start);
    if (!buf) co_return fail(ENOMEM, "bounce buffer");
    const iovec whole = buf.whole();
    auto r = co_await transfer(node, Access::read, start, end - start, std::span(&whole, 1), 0);
    if (r) buffer_to_iov(buf.data() + (offset - start), iov, 0, bytes);
    co_return r;
}

// Writes [offset, offset + bytes) from `iov` (zeroes when `iov` is empty)
// as whole aligned blocks: the first and last blocks are read first when the
// write covers them only in part. The caller has made the request
// serialising over those blocks.
Task<Result<void>> bounced_write(BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                 uint32_t flags) {
    const uint64_t align = node.limits().request_alignment;
    const uint64_t start = align_down(offset, align), end = align_up(offset + bytes, align);
    AlignedBuffer buf(node.limits().memory_alignment, end - start);
    if (!buf) co_return fail(ENOMEM, "bounce buffer");
    if (offset > start) {
        iovec head{buf.data(), align};
        if (auto r = co_await transfer(node, Access::read, start, align, std::span(&head, 1), 0); !r) co_return r;
    }
    if (offset + bytes < end && end - align >= start + (offset > start ? align : 0)) {
        iovec tail{buf.data() + (end - align - start), align};
        if (auto r = co_await transfer(node, Access::read, end - align, align, std::span(&tail, 1), 0); !r) co_return r;
    }
    if (iov.empty()) std::memset(buf.data() + (offset - start), 0, bytes);
    else iov_to_buffer(iov, 0, buf.data() + (offset - start), bytes);
    const iovec whole = buf.whole();
    co_return co_await transfer(node, Access::write, start, end - start, std::span(&whole, 1), flags);
}

// The driver's flush, then the children's that this node writes to: data
// acknowledged by a flush of the node is on stable storage, wherever the
// layers below keep it (QEMU's bdrv_co_flush).
Task<Result<void>> flush_node(BlockNode& node) {
    auto r = co_await node.driver().co_flush();
    for (const auto& edge : node.children())
        if (edge->perm() & (kPermWrite | kPermWriteUnchanged))
            if (auto c = co_await edge->co_flush(); !c && r) r = c;
    co_return r;
}

// Copy-on-read (QEMU's bdrv_co_do_copy_on_readv): reads the aligned range
// and writes what the node does not allocate itself (what its backing chain
// supplies) into it, so that later reads find it here; then hands the asked
// part to the caller. The caller has made the request serialising over the
// range: a write slipping between the read and the copy's write would be
// overwritten with old data.
Task<Result<void>> copy_on_read(BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    Driver& drv = node.driver();
    const uint64_t align = node.limits().request_alignment;
    const uint64_t start = align_down(offset, align), end = align_up(offset + bytes, align);
    AlignedBuffer buf(node.limits().memory_alignment, end - start);
    if (!buf) co_return fail(ENOMEM, "bounce buffer");
    for (uint64_t pos = start; pos < end;) {
        auto st = co_await drv.co_block_status(pos, end - pos, StatusQuery::exact);
        if (!st) co_return std::unexpected(st.error());
        const uint64_t n = std::clamp<uint64_t>(st->bytes, 1, end - pos);
        iovec part{buf.data() + (pos - start), n};
        if (auto r = co_await transfer(node, Access::read, pos, n, std::span(&part, 1), 0); !r) co_return r;
        if (!st->allocated)
            if (auto r = co_await transfer(node, Access::write, pos, n, std::span(&part, 1), 0); !r) co_return r;
        pos += n;
    }
    buffer_to_iov(buf.data() + (offset - start), iov, 0, bytes);
    co_return Result<void>{};
}

// A driver without native FUA gets the write without it, then a flush.
bool emulate_fua(const BlockNode& node, uint32_t flags) { return (flags & kWriteFua) && !node.limits().native_fua; }

// The full paths of reads and writes: copy-on-read, padding, splitting,
// FUA emulation, waiting for serialising requests.
Task<Result<void>> preadv_slow(BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                               uint32_t flags) {
    NodeRequest req(node, offset, bytes);
    const bool copy = (flags & kCopyOnRead) && !node.read_only() && bytes > 0;
    if (copy) req.make_serialising(node.limits().request_alignment);
    if (req.may_conflict()) co_await req.wait_for_conflicts();
    if (bytes == 0) co_return Result<void>{};
    if (copy) co_return co_await copy_on_read(node, offset, bytes, iov);
    if (needs_bounce(node.limits(), offset, bytes, iov)) co_return co_await bounced_read(node, offset, bytes, iov);
    co_return co_await transfer(node, Access::read, offset, bytes, iov, 0);
}

Task<Result<void>> pwritev_slow(BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                uint32_t flags) {
    if (node.dirty_bitmaps().refuse_writes()) co_return readonly_bitmaps_error(node);
    NodeRequest req(node, offset, bytes);
    const uint32_t align = node.limits().request_alignment;
    if ((flags & kSerialising) || (align > 1 && (offset % align || bytes % align))) req.make_serialising(align);
    flags &= ~kSerialising;
    if (req.may_conflict()) co_await req.wait_for_conflicts();
    if (bytes == 0) co_return Result<void>{};
    const bool fua = emulate_fua(node, flags);
    if (fua) flags &= ~kWriteFua;
    Result<void> r;  // (see transfer_split on conditional co_awaits)
    if (needs_bounce(node.limits(), offset, bytes, iov)) r = co_await bounced_write(node, offset, bytes, iov, flags);
    else r = co_await transfer(node, Access::write, offset, bytes, iov, flags);
    mark_dirty(node, offset, bytes);
    if (r && fua) r = co_await flush_node(node);
    co_return r;
}

// The common read or write: counted and tracked around the driver's own
// Task. A coroutine's set-up grows with its awaits, and this one has two,
// so the most frequent requests pay for no more than that.
Task<Result<void>> tracked(BlockNode& node, uint64_t offset, uint64_t bytes, Task<Result<void>> inner) {
    NodeRequest req(node, offset, bytes);
    if (req.may_conflict()) co_await req.wait_for_conflicts();
    co_return co_await std::move(inner);
}

// Whether a read or write can go straight to the driver: some bytes,
// aligned, within one transfer. (A write also needs a node without dirty
// bitmaps to track: see co_pwritev.)
bool direct(const BlockNode& node, uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    const NodeLimits& l = node.limits();
    return bytes > 0 && !needs_bounce(l, offset, bytes, iov) && (l.max_transfer == 0 || bytes <= l.max_transfer);
}

[[gnu::cold]] Task<Result<void>> failed(Result<void> r) { co_return r; }

}  // namespace

// Not coroutines: they pick the Task the request needs.
Task<Result<void>> BlockEdge::co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                        uint32_t flags) {
    BlockNode& node = child();
    if (!request_ok(*this, offset, bytes, Access::read)) return failed(request_error(*this, offset, bytes, Access::read));
    if (!(flags & kCopyOnRead) && direct(node, offset, bytes, iov))
        return tracked(node, offset, bytes, node.driver().co_preadv(offset, bytes, iov));
    return preadv_slow(node, offset, bytes, iov, flags);
}

Task<Result<void>> BlockEdge::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                         uint32_t flags) {
    BlockNode& node = child();
    if (!request_ok(*this, offset, bytes, Access::write))
        return failed(request_error(*this, offset, bytes, Access::write));
    if (!(flags & kSerialising) && !emulate_fua(node, flags) && direct(node, offset, bytes, iov) &&
        !node.dirty_bitmaps().tracking())
        return tracked(node, offset, bytes, node.driver().co_pwritev(offset, bytes, iov, flags));
    return pwritev_slow(node, offset, bytes, iov, flags);
}

Task<Result<void>> BlockEdge::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    BlockNode& node = child();
    if (!request_ok(*this, offset, bytes, Access::write)) co_return request_error(*this, offset, bytes, Access::write);
    if (node.dirty_bitmaps().refuse_writes()) co_return readonly_bitmaps_error(node);
    if (!node.unmap()) flags &= ~kMayUnmap;  // zeroes, but stay allocated
    NodeRequest req(node, offset, bytes);
    Driver& drv = node.driver();
    const uint64_t align = node.limits().request_alignment;
    const uint64_t end = offset + bytes;
    // Unaligned head and tail are written as data (read-modify-write); the
    // aligned middle is zeroed by the driver.
    const uint64_t mid_start = std::min(align_up(offset, align), end);
    const uint64_t mid_end = std::max(align_down(end, align), mid_start);
    if (mid_start != offset || mid_end != end) {
        if (flags & kNoFallback) co_return fail(ENOTSUP, "node '" + node.node_name() + "': unaligned fast zero");
        req.make_serialising(align);
    }
    if (flags & kSerialising) req.make_serialising(align);
    flags &= ~kSerialising;
    if (req.may_conflict()) co_await req.wait_for_conflicts();
    const bool fua = emulate_fua(node, flags);
    if (fua) flags &= ~kWriteFua;
    Result<void> r;
    if (offset < mid_start) r = co_await bounced_write(node, offset, mid_start - offset, {}, flags & kWriteFua);
    if (r && mid_start < mid_end) r = co_await drv.co_pwrite_zeroes(mid_start, mid_end - mid_start, flags);
    if (r && mid_end < end) r = co_await bounced_write(node, mid_end, end - mid_end, {}, flags & kWriteFua);
    mark_dirty(node, offset, bytes);
    if (r && fua) r = co_await flush_node(node);
    co_return r;
}

// Discard is advisory: only the aligned blocks inside the range go, and
// only on a node opened with discard=unmap. Bitmaps record the whole range
// either way (as QEMU's do): what reads return there may have changed.
Task<Result<void>> BlockEdge::co_pdiscard(uint64_t offset, uint64_t bytes) {
    BlockNode& node = child();
    if (!request_ok(*this, offset, bytes, Access::write)) co_return request_error(*this, offset, bytes, Access::write);
    if (node.dirty_bitmaps().refuse_writes()) co_return readonly_bitmaps_error(node);
    if (!node.unmap()) co_return Result<void>{};
    NodeRequest req(node, offset, bytes);
    if (req.may_conflict()) co_await req.wait_for_conflicts();
    Driver& drv = node.driver();
    const uint64_t align = node.limits().request_alignment;
    const uint64_t start = align_up(offset, align), end = align_down(offset + bytes, align);
    Result<void> r;
    if (start < end) r = co_await drv.co_pdiscard(start, end - start);
    mark_dirty(node, offset, bytes);
    co_return r;
}

// A read-only node has nothing to flush (and its file may not allow it).
Task<Result<void>> BlockEdge::co_flush() {
    if (child().read_only()) co_return Result<void>{};
    NodeRequest req(child(), 0, 0);
    co_return co_await flush_node(child());
}

Task<Result<BlockStatus>> BlockEdge::co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) {
    BlockNode& node = child();
    if (!request_ok(*this, offset, bytes, Access::read))
        co_return std::unexpected(request_error(*this, offset, bytes, Access::read).error());
    if (bytes == 0) co_return fail(EINVAL, "node '" + node.node_name() + "': block status of no bytes");
    NodeRequest req(node, offset, bytes);
    auto st = co_await node.driver().co_block_status(offset, bytes, query);
    if (!st) co_return st;
    if (st->bytes == 0 || st->bytes > bytes)
        co_return fail(EIO, "node '" + node.node_name() + "': driver answered block status for " +
                                std::to_string(st->bytes) + " of " + std::to_string(bytes) + " bytes");
    // Not allocated here, and nothing below: reads return zeroes. "Below" is
    // the chain's next node, a backing child or a filter's child (a filter
    // passes on its child's answer, which already knows what is below).
    if (!st->allocated) {
        const BlockEdge* below = node.chain_child();
        if (below == nullptr || offset >= below->child().driver().length()) st->zero = true;
    }
    co_return st;
}

Task<Result<void>> BlockEdge::co_truncate(uint64_t size) {
    BlockNode& node = child();
    if (node.read_only()) co_return fail(EPERM, "node '" + node.node_name() + "': read-only");
    if (!(perm() & kPermResize))
        co_return fail(EPERM, "node '" + node.node_name() + "': " + parent_name() + " has no resize permission");
    NodeRequest req(node, 0, 0);
    auto r = co_await node.driver().co_truncate(size);
    if (r) {
        node.length_ = node.driver().length();
        node.dirty_bitmaps().resize(node.length_);  // new bytes are clean, as in QEMU
    }
    co_return r;
}

}  // namespace ioplane::block
