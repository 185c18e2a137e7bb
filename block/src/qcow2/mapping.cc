// Mapping guest offsets to host clusters: L1 and L2 lookups, the L2 tables
// a write needs (new, or copied when a snapshot shares them).
#include <cstring>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

// What one unit (a cluster, or a subcluster with extended L2 entries) holds.
struct Unit {
    Mapping::Kind kind;
    uint64_t host_cluster;  // data
    bool copied;
};

}  // namespace

Task<Result<TableRef>> Qcow2Driver::co_l2_for_read(uint64_t offset) {
    const uint64_t i = l1_index(offset);
    if (i >= l1_.size()) co_return TableRef{};
    const uint64_t l2 = l1_[i] & kOffsetMask;
    if (l2 == 0) co_return TableRef{};
    if (offset_in_cluster(l2)) {
        co_await co_signal_corruption("L1 entry " + std::to_string(i) + " points to an unaligned L2 table");
        co_return fail(EIO, "qcow2: corrupt L1 entry");
    }
    co_return co_await co_get_table(*l2_cache_, l2, true);
}

Result<void> Qcow2Driver::check_l2_entry(uint64_t entry, uint64_t l2_offset) {
    if (!(entry & kOflagCompressed) && offset_in_cluster(entry & kOffsetMask))
        return fail(EIO, "qcow2: L2 table at " + std::to_string(l2_offset) + " has an unaligned cluster offset");
    return {};
}

Task<Result<Mapping>> Qcow2Driver::co_map(uint64_t offset, uint64_t bytes) {
    // The run ends at the end of the L2 table's range at most.
    const uint64_t table_span = cluster_size() << l2_bits_;
    const uint64_t limit = std::min(offset + bytes, (offset / table_span + 1) * table_span);
    auto l2 = co_await co_l2_for_read(offset);
    if (!l2) co_return std::unexpected(l2.error());
    if (!*l2) co_return Mapping{.kind = Mapping::unallocated, .bytes = limit - offset};

    const uint64_t unit_size = subcluster_size();
    auto unit_at = [&](uint64_t guest) -> Result<Unit> {
        const uint64_t idx = l2_index(guest);
        const uint64_t e = l2_word(*l2, idx);
        if (auto r = check_l2_entry(e, l2->offset()); !r) return std::unexpected(r.error());
        const uint64_t host = e & kOffsetMask;
        const bool copied = e & kOflagCopied;
        if (e & kOflagCompressed) return Unit{Mapping::compressed, 0, false};
        if (!extended_) {
            if (header_.version >= 3 && (e & kOflagZero)) return Unit{Mapping::zero, 0, false};
            if (host == 0) return Unit{Mapping::unallocated, 0, false};
            return Unit{Mapping::data, host, copied};
        }
        const uint64_t bitmap = l2_bitmap(*l2, idx);
        const uint32_t sc = uint32_t(offset_in_cluster(guest) / unit_size);
        const bool alloc = (bitmap >> sc) & 1, zero = (bitmap >> (32 + sc)) & 1;
        if (alloc && (zero || host == 0))
            return fail(EIO, "qcow2: L2 table at " + std::to_string(l2->offset()) + " has an invalid subcluster bitmap");
        if (alloc) return Unit{Mapping::data, host, copied};
        return Unit{zero ? Mapping::zero : Mapping::unallocated, 0, false};
    };

    auto first = unit_at(offset);
    if (!first) {
        co_await co_signal_corruption(first.error().message);
        co_return std::unexpected(first.error());
    }
    Mapping m{.kind = first->kind, .copied = first->copied};
    if (m.kind == Mapping::compressed) {
        m.l2_entry = l2_word(*l2, l2_index(offset));
        m.bytes = std::min(limit, cluster_offset(offset) + cluster_size()) - offset;
        co_return m;
    }
    m.host = first->host_cluster + offset_in_cluster(offset);
    // Following units of the same kind (data: contiguous on the host).
    uint64_t pos = (offset / unit_size + 1) * unit_size;
    while (pos < limit) {
        auto next = unit_at(pos);
        if (!next || next->kind != m.kind || next->copied != m.copied) break;
        if (m.kind == Mapping::data && next->host_cluster + offset_in_cluster(pos) != m.host + (pos - offset)) break;
        pos += unit_size;
    }
    m.bytes = std::min(pos, limit) - offset;
    co_return m;
}

void Qcow2Driver::set_l2(TableRef& l2, uint64_t index, uint64_t entry, uint64_t bitmap) {
    if (extended_) {
        l2.set(2 * index, entry);
        l2.set(2 * index + 1, bitmap);
    } else {
        l2.set(index, entry);
    }
}

// Crash safety (docs/QCOW2.md): a new L2 table (and its refcount) is on disk
// before the L1 entry points to it.
Task<Result<TableRef>> Qcow2Driver::co_l2_for_write(uint64_t offset) {
    const uint64_t i = l1_index(offset);
    if (i >= l1_.size()) co_return fail(EIO, "qcow2: offset past the L1 table");
    const uint64_t old = l1_[i] & kOffsetMask;
    if (old != 0 && (l1_[i] & kOflagCopied)) {
        if (offset_in_cluster(old)) co_return fail(EIO, "qcow2: corrupt L1 entry");
        co_return co_await co_get_table(*l2_cache_, old, true);
    }
    auto allocated = co_await co_alloc_clusters(1);
    if (!allocated) co_return std::unexpected(allocated.error());
    const uint64_t table = allocated->offset;
    if (auto r = co_await co_claim_region(table, cluster_size(), Region::l2); !r) co_return std::unexpected(r.error());
    auto l2 = co_await co_get_table(*l2_cache_, table, false);
    if (!l2) co_return std::unexpected(l2.error());
    if (old != 0) {
        // Shared with a snapshot: this copy becomes the active table; the
        // data clusters keep their counts (each table still points to them).
        auto shared = co_await co_get_table(*l2_cache_, old, true);
        if (!shared) co_return std::unexpected(shared.error());
        std::memcpy(l2->data(), shared->data(), cluster_size());
    }
    l2->mark_dirty();
    if (auto r = co_await co_write_back(*l2_cache_, l2->entry()); !r) co_return std::unexpected(r.error());
    if (auto r = co_await co_flush_file(); !r) co_return std::unexpected(r.error());
    uint8_t entry[8];
    store_be64(entry, table | kOflagCopied);
    const uint64_t at = header_.l1_table_offset + 8 * i;
    if (auto r = co_await co_check_overlap(at, 8, Region::l1); !r) co_return std::unexpected(r.error());
    if (auto r = co_await co_write_file(at, entry, 8); !r) co_return std::unexpected(r.error());
    l1_[i] = table | kOflagCopied;
    if (old != 0) free_later(old, cluster_size());
    co_return l2;
}

}  // namespace ioplane::block::qcow2
