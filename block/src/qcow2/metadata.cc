// Metadata I/O: reads and writes of the image file, the overlap checks
// before every write, and the table caches' loads and write-backs.
#include <cstring>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

const char* region_name(int kind) {
    static const char* const names[] = {"data",           "L2 table",         "refcount block", "L1 table",
                                        "refcount table", "header",           "snapshot table", "bitmap directory",
                                        "bitmap table",   "bitmap data cluster", "metadata"};
    return names[kind];
}

}  // namespace

Task<Result<void>> Qcow2Driver::co_read_file(uint64_t offset, void* buf, uint64_t bytes) {
    iovec iov{buf, bytes};
    co_return co_await file().co_preadv(offset, bytes, std::span(&iov, 1));
}

Task<Result<void>> Qcow2Driver::co_write_file(uint64_t offset, const void* buf, uint64_t bytes) {
    iovec iov{const_cast<void*>(buf), bytes};
    co_return co_await file().co_pwritev(offset, bytes, std::span(&iov, 1));
}

Task<Result<void>> Qcow2Driver::co_flush_file() {
    auto r = co_await file().co_flush();
    if (r) l2_needs_flush_ = false;
    co_return r;
}

std::optional<std::string> Qcow2Driver::add_region(uint64_t offset, uint64_t bytes, Region kind) {
    if (bytes == 0) return std::nullopt;
    const uint64_t end = offset + bytes;
    auto it = regions_.upper_bound(offset);
    if (it != regions_.begin()) --it;
    for (; it != regions_.end() && it->first < end; ++it) {
        if (it->second.end <= offset) continue;
        // An L2 table listed twice (shared by snapshots) is fine; a
        // refcount block is never shared.
        if (it->first == offset && it->second.end == end && it->second.kind == kind && kind != Region::refblock)
            return std::nullopt;
        if (it->first == offset && it->second.kind == kind)
            return std::string("the ") + region_name(int(kind)) + " at " + std::to_string(offset) + " is listed twice";
        return std::string("the ") + region_name(int(kind)) + " at " + std::to_string(offset) + " overlaps the " +
               region_name(int(it->second.kind)) + " at " + std::to_string(it->first);
    }
    regions_[offset] = RegionEntry{end, kind};
    return std::nullopt;
}

Task<Result<void>> Qcow2Driver::co_claim_region(uint64_t offset, uint64_t bytes, Region kind) {
    auto overlap = add_region(offset, bytes, kind);
    if (!overlap) co_return Result<void>{};
    // Allocation handed out a cluster that is metadata: its refcount lied.
    co_await co_signal_corruption("new " + *overlap);
    co_return fail(EIO, "qcow2: node '" + node().node_name() + "': new " + *overlap);
}

void Qcow2Driver::remove_region(uint64_t offset) { regions_.erase(offset); }

// Data may go only where no metadata is and where clusters are allocated;
// a table only over its own region. Anything else means the image's
// metadata contradicts itself (or was made to): writing would destroy
// metadata, so the image is marked corrupt instead.
Task<Result<void>> Qcow2Driver::co_check_overlap(uint64_t offset, uint64_t bytes, Region kind) {
    const uint64_t end = offset + bytes;
    std::string problem;
    if (end < offset || end > image_end_) {
        problem = std::string("a ") + region_name(int(kind)) + " write at " + std::to_string(offset) +
                  " is past the allocated clusters";
    } else {
        auto it = regions_.upper_bound(offset);
        if (it != regions_.begin()) --it;
        for (; it != regions_.end() && it->first < end; ++it) {
            if (it->second.end <= offset) continue;
            // A table's own write (or an entry's) stays inside its region.
            if (kind != Region::data && it->second.kind == kind && it->first <= offset && end <= it->second.end)
                continue;
            problem = std::string("a ") + region_name(int(kind)) + " write at " + std::to_string(offset) +
                      " would overwrite the " + region_name(int(it->second.kind)) + " at " + std::to_string(it->first);
            break;
        }
    }
    if (problem.empty()) co_return Result<void>{};
    co_await co_signal_corruption(problem);
    co_return fail(EIO, "qcow2: node '" + node().node_name() + "': " + problem);
}

Task<Result<TableRef>> Qcow2Driver::co_get_table(TableCache& cache, uint64_t offset, bool read) {
    if (TableCache::Entry* e = cache.find(offset)) {
        cache.touch(*e);
        co_return TableRef(*e);
    }
    TableCache::Entry* slot = cache.victim();
    if (slot == nullptr) co_return fail(EIO, "qcow2: metadata cache is full");
    TableRef pin(*slot);  // not cleaned while written back or read
    if (slot->offset != 0 && slot->dirty)
        if (auto r = co_await co_write_back(cache, *slot); !r) co_return std::unexpected(r.error());
    cache.assign(*slot, offset);
    if (read) {
        if (auto r = co_await co_read_file(offset, slot->data.get(), cache.table_bytes()); !r) {
            cache.discard(offset);
            co_return std::unexpected(r.error());
        }
    } else {
        std::memset(slot->data.get(), 0, cache.table_bytes());
    }
    co_return pin;
}

// Crash safety (docs/QCOW2.md): an L2 table is written only after the
// refcounts of the clusters it points to, and the data written into newly
// allocated clusters, are on disk.
Task<Result<void>> Qcow2Driver::co_write_back(TableCache& cache, TableCache::Entry& e) {
    const bool l2 = &cache == l2_cache_.get();
    TableRef pin(e);
    if (l2) {
        if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return r;
        if (l2_needs_flush_)
            if (auto r = co_await co_flush_file(); !r) co_return r;
    }
    if (auto r = co_await co_check_overlap(e.offset, cache.table_bytes(), l2 ? Region::l2 : Region::refblock); !r)
        co_return r;
    e.dirty = false;
    auto r = co_await co_write_file(e.offset, e.data.get(), cache.table_bytes());
    if (!r) {
        e.dirty = true;
        co_return r;
    }
    if (!l2) l2_needs_flush_ = true;
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_write_dirty(TableCache& cache) {
    for (TableCache::Entry* e : cache.dirty_entries())
        if (e->dirty)
            if (auto r = co_await co_write_back(cache, *e); !r) co_return r;
    co_return Result<void>{};
}

}  // namespace ioplane::block::qcow2
