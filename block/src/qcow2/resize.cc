// Growing a qcow2 image (block_resize, and blockdev-create, which makes an
// empty image and grows it): a bigger L1 table when the new size needs one,
// then the size in the header; and metadata preallocation.
//
// Crash safety (docs/QCOW2.md): the new L1 table is on disk before the
// header points to it; the old one is freed only once the header is; the
// size changes last, so a crash leaves the old size (and a leaked table).
#include <algorithm>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {

Task<Result<void>> Qcow2Driver::co_truncate(uint64_t size) {
    assert_in_context(node().ctx());
    if (auto r = check_writable(); !r) co_return r;
    if (size < header_.size) co_return fail(ENOTSUP, "qcow2: shrinking images is not supported");
    if (size == header_.size) co_return Result<void>{};
    if (!snapshots_.empty()) co_return fail(ENOTSUP, "qcow2: cannot resize an image with internal snapshots");
    if (auto r = check_bitmaps_resizable(); !r) co_return r;
    co_await lock_.lock();
    auto r = co_await co_grow_locked(size);
    lock_.unlock();
    co_return r;
}

Task<Result<void>> Qcow2Driver::co_grow_locked(uint64_t size) {
    const uint64_t cs = cluster_size();
    const uint64_t table_span = cs << l2_bits_;
    const uint64_t l1_entries = (size + table_span - 1) / table_span;
    if (l1_entries * 8 > kMaxL1Bytes) co_return fail(EFBIG, "qcow2: L1 table would be too large for this size");
    if (l1_entries > l1_.size()) {
        const uint64_t bytes = l1_entries * 8, clusters = (bytes + cs - 1) / cs;
        auto table = co_await co_alloc_clusters(clusters);
        if (!table) co_return std::unexpected(table.error());
        if (auto r = co_await co_claim_region(table->offset, clusters * cs, Region::l1); !r) co_return r;
        std::vector<uint8_t> raw(clusters * cs, 0);
        for (size_t i = 0; i < l1_.size(); i++) store_be64(&raw[8 * i], l1_[i]);
        if (auto r = co_await co_write_file(table->offset, raw.data(), raw.size()); !r) co_return r;
        // The table's refcounts, then the table, on disk before the header
        // points to it.
        if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return r;
        if (auto r = co_await co_flush_file(); !r) co_return r;
        uint8_t fields[12];
        store_be32(fields, uint32_t(l1_entries));
        store_be64(fields + 4, table->offset);
        if (auto r = co_await co_write_file(36, fields, sizeof fields); !r) co_return r;
        if (auto r = co_await co_flush_file(); !r) co_return r;
        const uint64_t old_offset = header_.l1_table_offset, old_bytes = l1_.size() * 8;
        header_.l1_table_offset = table->offset;
        header_.l1_size = uint32_t(l1_entries);
        l1_.resize(l1_entries, 0);
        if (old_bytes) {
            remove_region(old_offset);
            for (uint64_t c = 0; c < (old_bytes + cs - 1) / cs; c++)
                if (auto r = co_await co_update_refcount(old_offset / cs + c, -1); !r) co_return r;
        }
    }
    uint8_t field[8];
    store_be64(field, size);
    if (auto r = co_await co_write_file(24, field, sizeof field); !r) co_return r;
    if (auto r = co_await co_flush_file(); !r) co_return r;
    header_.size = size;
    co_return Result<void>{};
}

// preallocation=metadata: every cluster of [offset, end) gets a host
// cluster (zeroed unless fresh) and an L2 entry; `reserve` (falloc, full):
// the file allocates their space too.
Task<Result<void>> Qcow2Driver::co_preallocate(uint64_t offset, uint64_t end, bool reserve) {
    const uint64_t cs = cluster_size();
    co_await lock_.lock();
    Result<void> r;
    for (uint64_t pos = offset / cs * cs; pos < end && r;) {
        const uint64_t table_end = std::min(end, (pos / (cs << l2_bits_) + 1) * (cs << l2_bits_));
        auto l2 = co_await co_l2_for_write(pos);
        if (!l2) {
            r = std::unexpected(l2.error());
            break;
        }
        const uint64_t n = (table_end - pos + cs - 1) / cs;
        auto got = co_await co_alloc_clusters(n);
        if (!got) {
            r = std::unexpected(got.error());
            break;
        }
        // Reused space may hold old data: zeroed first (fresh space reads
        // as zeroes already).
        if (!got->fresh || reserve)
            if (auto z = co_await file().co_pwrite_zeroes(got->offset, n * cs); !z) {
                r = z;
                break;
            }
        for (uint64_t i = 0; i < n; i++) {
            const uint64_t idx = l2_index(pos + i * cs);
            if (l2_word(*l2, idx) != 0) {
                free_later(got->offset + i * cs, cs);  // already allocated
                continue;
            }
            set_l2(*l2, idx, (got->offset + i * cs) | kOflagCopied, extended_ ? 0xffffffffu : 0);
        }
        pos += n * cs;
    }
    if (r) r = co_await co_flush_locked();
    lock_.unlock();
    co_return r;
}

}  // namespace ioplane::block::qcow2
