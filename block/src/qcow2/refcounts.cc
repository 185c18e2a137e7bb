// Refcounts: the refcount table and blocks, allocation of clusters, frees.
//
// Crash safety (docs/QCOW2.md): a new refcount block is on disk before the
// table points to it; a new refcount table (with the blocks that describe
// it) is on disk before the header points to it; a refcount goes down only
// after the L2 change that dropped the reference is on disk (free_later,
// applied after a flush), so a crash leaves leaked clusters, never a cluster
// in use with no refcount.
#include <algorithm>
#include <cstring>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {

Task<Result<TableRef>> Qcow2Driver::co_refblock_for(uint64_t cluster_index, bool create) {
    const uint64_t rt = cluster_index / refblock_entries_;
    if (rt < reftable_.size() && reftable_[rt] != 0) co_return co_await co_get_table(*refblock_cache_, reftable_[rt], true);
    if (!create) co_return TableRef{};
    if (rt >= reftable_.size()) {
        if (auto r = co_await co_grow_reftable(rt + 1); !r) co_return std::unexpected(r.error());
        // Growing may have made this block (it covers the new table).
        if (reftable_[rt] != 0) co_return co_await co_get_table(*refblock_cache_, reftable_[rt], true);
    }
    auto found = co_await co_find_free(1);
    if (!found) co_return std::unexpected(found.error());
    const uint64_t block_index = *found;
    const uint64_t block_offset = block_index * cluster_size();
    if (auto r = co_await co_grow_file(block_offset + cluster_size()); !r) co_return std::unexpected(r.error());
    const bool describes_itself = block_index / refblock_entries_ == rt;
    if (!describes_itself)
        // Its refcount lives in another block (made the same way if need
        // be, further up the file: the recursion ends).
        if (auto r = co_await co_update_refcount(block_index, 1); !r) co_return std::unexpected(r.error());
    image_end_ = std::max(image_end_, block_offset + cluster_size());
    fresh_from_ = std::max(fresh_from_, block_offset + cluster_size());
    if (auto r = co_await co_claim_region(block_offset, cluster_size(), Region::refblock); !r)
        co_return std::unexpected(r.error());
    auto block = co_await co_get_table(*refblock_cache_, block_offset, false);
    if (!block) co_return std::unexpected(block.error());
    if (describes_itself) set_refcount(block->data(), block_index % refblock_entries_, header_.refcount_order, 1);
    block->mark_dirty();
    // The block, then the table entry pointing to it.
    if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return std::unexpected(r.error());
    if (auto r = co_await co_flush_file(); !r) co_return std::unexpected(r.error());
    uint8_t entry[8];
    store_be64(entry, block_offset);
    if (auto r = co_await co_check_overlap(header_.refcount_table_offset + 8 * rt, 8, Region::reftable); !r)
        co_return std::unexpected(r.error());
    if (auto r = co_await co_write_file(header_.refcount_table_offset + 8 * rt, entry, 8); !r)
        co_return std::unexpected(r.error());
    reftable_[rt] = block_offset;
    co_return block;
}

Task<Result<void>> Qcow2Driver::co_update_refcount(uint64_t cluster_index, int64_t addend) {
    auto block = co_await co_refblock_for(cluster_index, true);
    if (!block) co_return std::unexpected(block.error());
    const uint64_t index = cluster_index % refblock_entries_;
    const uint64_t old = get_refcount(block->data(), index, header_.refcount_order);
    const uint64_t offset = cluster_index * cluster_size();
    if ((addend < 0 && old < uint64_t(-addend)) || (addend > 0 && refcount_max_ - old < uint64_t(addend))) {
        const std::string what = "refcount of cluster at " + std::to_string(offset) +
                                 (addend < 0 ? " would drop below zero" : " would overflow");
        co_await co_signal_corruption(what);
        co_return fail(EIO, "qcow2: " + what);
    }
    const uint64_t now = old + uint64_t(addend);
    set_refcount(block->data(), index, header_.refcount_order, now);
    block->mark_dirty();
    if (now > 0) {
        image_end_ = std::max(image_end_, offset + cluster_size());
    } else {
        free_cluster_index_ = std::min(free_cluster_index_, cluster_index);
        // A freed table is no longer metadata; its cached copy must not be
        // written over whatever the cluster holds next.
        l2_cache_->discard(offset);
        refblock_cache_->discard(offset);
        remove_region(offset);
    }
    co_return Result<void>{};
}

// QEMU's alloc_clusters_noref: the search moves free_cluster_index_ past what
// it returns, so that allocations made while the caller sets the refcounts
// (a new refcount block) never return the same clusters.
Task<Result<uint64_t>> Qcow2Driver::co_find_free(uint64_t n) {
    const uint64_t cs = cluster_size();
    uint64_t idx = free_cluster_index_, start = idx, run = 0;
    while (run < n) {
        if ((idx + n - run) * cs > kMaxHostOffset) co_return fail(ENOSPC, "qcow2: image file is full");
        if (run == 0) start = idx;
        // Past every cluster with a refcount, all are free.
        if (idx * cs >= image_end_) break;
        auto block = co_await co_refblock_for(idx, false);
        if (!block) co_return std::unexpected(block.error());
        const uint64_t block_end = (idx / refblock_entries_ + 1) * refblock_entries_;
        if (!*block) {  // no refcount block: none of its clusters is used
            const uint64_t take = std::min(block_end - idx, n - run);
            run += take;
            idx += take;
            continue;
        }
        // The block's entries in a plain loop (a hostile image may mark
        // millions of clusters used).
        const uint8_t* data = block->data();
        for (; idx < block_end && run < n; idx++) {
            if (get_refcount(data, idx % refblock_entries_, header_.refcount_order) != 0) {
                run = 0;
                start = idx + 1;
            } else {
                run++;
            }
        }
    }
    free_cluster_index_ = start + n;
    co_return start;
}

Task<Result<Qcow2Driver::Allocated>> Qcow2Driver::co_alloc_clusters(uint64_t n) {
    auto start = co_await co_find_free(n);
    if (!start) co_return std::unexpected(start.error());
    const uint64_t offset = *start * cluster_size(), end = offset + n * cluster_size();
    if (auto r = co_await co_grow_file(end); !r) co_return std::unexpected(r.error());
    for (uint64_t i = 0; i < n; i++)
        if (auto r = co_await co_update_refcount(*start + i, 1); !r) co_return std::unexpected(r.error());
    const bool fresh = offset >= fresh_from_;
    fresh_from_ = std::max(fresh_from_, end);
    co_return Allocated{offset, fresh};
}

// The file grows in steps of at least a MiB, and an eighth of its size (at
// most kMaxGrowStep): each step is a truncate, which waits for the file's
// writes in flight (the inode's lock), so a job writing a large image must
// not pay one per MiB. co_close() gives back the part never used.
Task<Result<void>> Qcow2Driver::co_grow_file(uint64_t end) {
    BlockNode& f = file().child();
    if (end <= f.length()) co_return Result<void>{};
    if (!f.driver().caps().can_truncate) co_return fail(ENOSPC, "qcow2: image file is full and cannot grow");
    constexpr uint64_t kMiB = 1 << 20, kMaxGrowStep = 256 * kMiB;
    const uint64_t step = std::max({cluster_size(), kMiB, std::min(kMaxGrowStep, f.length() / 8 / kMiB * kMiB)});
    co_return co_await file().co_truncate((end + step - 1) / step * step);
}

Task<Result<void>> Qcow2Driver::co_trim_file_tail() {
    BlockNode& f = file().child();
    if (f.length() <= fresh_from_ || !f.driver().caps().can_truncate) co_return Result<void>{};
    co_return co_await file().co_truncate(fresh_from_);
}

// A bigger refcount table, placed past every allocated cluster together
// with the refcount blocks that describe it (QEMU's qcow2_refcount_area).
Task<Result<void>> Qcow2Driver::co_grow_reftable(uint64_t min_entries) {
    const uint64_t cs = cluster_size();
    const uint64_t entries_per_cluster = cs / 8;
    uint64_t entries = std::max<uint64_t>(min_entries, reftable_.size() + reftable_.size() / 2);
    entries = (entries + entries_per_cluster - 1) / entries_per_cluster * entries_per_cluster;
    const uint64_t table_clusters = entries / entries_per_cluster;
    if (table_clusters * cs > kMaxRefcountTableBytes) co_return fail(ENOSPC, "qcow2: refcount table would be too large");
    const uint64_t first = std::max((image_end_ + cs - 1) / cs, free_cluster_index_);
    // Blocks for the area [first, first + blocks + table) where the table
    // has none, placed first; as many as that area needs.
    auto needs_block = [&](uint64_t rt) { return rt >= reftable_.size() || reftable_[rt] == 0; };
    uint64_t blocks = 0;
    for (;;) {
        const uint64_t last = first + blocks + table_clusters - 1;
        uint64_t need = 0;
        for (uint64_t rt = first / refblock_entries_; rt <= last / refblock_entries_; rt++) need += needs_block(rt);
        if (need == blocks) break;
        blocks = need;
    }
    const uint64_t area_end = first + blocks + table_clusters;
    if (area_end / refblock_entries_ >= entries) co_return fail(ENOSPC, "qcow2: refcount table would be too small");
    if (auto r = co_await co_grow_file(area_end * cs); !r) co_return r;

    std::vector<uint64_t> table = reftable_;
    table.resize(entries, 0);
    std::vector<std::vector<uint8_t>> new_blocks;
    std::vector<uint64_t> new_block_rt;
    uint64_t next_block = first;
    for (uint64_t rt = first / refblock_entries_; rt <= (area_end - 1) / refblock_entries_; rt++) {
        if (!needs_block(rt)) continue;
        table[rt] = next_block++ * cs;
        new_blocks.emplace_back(cs, 0);
        new_block_rt.push_back(rt);
    }
    // Every cluster of the area gets a refcount of one: in a new block, or
    // (written before the header switches) in an existing one.
    for (uint64_t c = first; c < area_end; c++) {
        const uint64_t rt = c / refblock_entries_;
        auto it = std::find(new_block_rt.begin(), new_block_rt.end(), rt);
        if (it != new_block_rt.end()) {
            set_refcount(new_blocks[it - new_block_rt.begin()].data(), c % refblock_entries_, header_.refcount_order, 1);
        } else if (auto r = co_await co_update_refcount(c, 1); !r) {
            co_return r;
        }
    }
    image_end_ = std::max(image_end_, area_end * cs);
    fresh_from_ = std::max(fresh_from_, area_end * cs);
    const uint64_t table_offset = (first + blocks) * cs;
    for (size_t i = 0; i < new_blocks.size(); i++)
        if (auto r = co_await co_claim_region(table[new_block_rt[i]], cs, Region::refblock); !r) co_return r;
    if (auto r = co_await co_claim_region(table_offset, table_clusters * cs, Region::reftable); !r) co_return r;
    for (size_t i = 0; i < new_blocks.size(); i++) {
        if (auto r = co_await co_write_file(table[new_block_rt[i]], new_blocks[i].data(), cs); !r) co_return r;
    }
    std::vector<uint8_t> raw(table_clusters * cs);
    for (uint64_t i = 0; i < entries; i++) store_be64(&raw[8 * i], table[i]);
    if (auto r = co_await co_write_file(table_offset, raw.data(), raw.size()); !r) co_return r;
    if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return r;
    if (auto r = co_await co_flush_file(); !r) co_return r;
    // The switch: offset and size in one write within the header's first
    // sector.
    uint8_t fields[12];
    store_be64(fields, table_offset);
    store_be32(fields + 8, uint32_t(table_clusters));
    if (auto r = co_await co_write_file(48, fields, sizeof fields); !r) co_return r;
    if (auto r = co_await co_flush_file(); !r) co_return r;
    const uint64_t old_offset = header_.refcount_table_offset, old_clusters = header_.refcount_table_clusters;
    remove_region(old_offset);
    header_.refcount_table_offset = table_offset;
    header_.refcount_table_clusters = uint32_t(table_clusters);
    reftable_ = std::move(table);
    // Nothing points to the old table any more (the header is on disk).
    for (uint64_t i = 0; i < old_clusters; i++)
        if (auto r = co_await co_update_refcount(old_offset / cs + i, -1); !r) co_return r;
    co_return Result<void>{};
}

void Qcow2Driver::free_entry_later(uint64_t l2_entry) {
    if (l2_entry & kOflagCompressed) {
        const CompressedRef ref = decode_compressed(l2_entry, header_.cluster_bits);
        free_later(ref.host_offset, ref.bytes);
    } else if (const uint64_t host = l2_entry & kOffsetMask) {
        free_later(host, cluster_size());
    }
}

Task<Result<void>> Qcow2Driver::co_apply_pending_frees() {
    std::vector<std::pair<uint64_t, uint64_t>> frees;
    frees.swap(pending_frees_);
    for (auto [offset, bytes] : frees) {
        const uint64_t first = offset / cluster_size(), last = (offset + bytes - 1) / cluster_size();
        for (uint64_t c = first; c <= last; c++)
            if (auto r = co_await co_update_refcount(c, -1); !r) co_return r;
    }
    co_return Result<void>{};
}

}  // namespace ioplane::block::qcow2
