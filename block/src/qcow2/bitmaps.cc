// qcow2's persistent dirty bitmaps (qcow2.rst, "Bitmaps extension"), as
// QEMU 7.2 keeps them (block/qcow2-bitmap.c):
//  - open: the directory is read and checked; each bitmap becomes a
//    persistent DirtyBitmap of the node, with its bits unless the image
//    marks it in use (then it is inconsistent: a writer did not store it);
//    a writable open then marks them all in use in the image before any
//    guest write, a read-only open makes them read-only;
//  - close and reopen read-only: every persistent bitmap the node may
//    change is written into new clusters with a new table, then a new
//    directory, and only once that is on disk the header points to it and
//    the old clusters are freed;
//  - block-dirty-bitmap-remove of a persistent bitmap: a new directory
//    without it, then its clusters freed.
// Crash safety (docs/QCOW2.md): data, tables and the directory, with their
// refcounts, are flushed before the header names the directory; what the
// header no longer names is freed after; at worst clusters leak. While the
// directory is rewritten in place the autoclear bit is off, so a crash
// then leaves bitmaps any reader drops as inconsistent.
#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#include "ioplane/block/dirty_bitmap.h"
#include "ioplane/block/node.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/thread_contract.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

// What the bits of an image's bitmaps may take in memory together: a
// hostile directory could otherwise ask for 65535 bitmaps of 512 MiB.
constexpr uint64_t kMaxLoadedBitmapMemory = uint64_t{1} << 30;

}  // namespace

Result<void> Qcow2Driver::check_bitmap_constraints(const std::string& name, uint64_t granularity) const {
    const unsigned bits = unsigned(std::countr_zero(granularity));
    if (bits > kMaxBitmapGranularityBits)
        return fail(EINVAL, "Granularity exceeds maximum (" + std::to_string(uint64_t{1} << kMaxBitmapGranularityBits) +
                                " bytes)");
    if (bits < kMinBitmapGranularityBits)
        return fail(EINVAL, "Granularity is under minimum (" +
                                std::to_string(uint64_t{1} << kMinBitmapGranularityBits) + " bytes)");
    const uint64_t chunks = length() / granularity + (length() % granularity != 0);
    const uint64_t data_bytes = chunks / 8 + (chunks % 8 != 0);
    if (data_bytes > kMaxBitmapPhysSize || data_bytes > kMaxBitmapTableSize * cluster_size())
        return fail(EINVAL, "Too much space will be occupied by the bitmap. Use larger granularity");
    if (name.size() > kMaxBitmapNameSize)
        return fail(EINVAL, "Name length exceeds maximum (" + std::to_string(kMaxBitmapNameSize) + " characters)");
    return {};
}

// QEMU's qcow2_co_can_store_new_dirty_bitmap: a name in use is refused
// as such; the other refusals are prefixed with what could not be done.
Result<void> Qcow2Driver::can_store_bitmap(const std::string& name, uint64_t granularity) const {
    assert_in_main_thread();
    const DirtyBitmaps& bitmaps = node().dirty_bitmaps();
    if (bitmaps.find(name)) return fail(EEXIST, "Bitmap already exists: " + name);
    auto refuse = [&](const std::string& why) {
        return fail(EINVAL, "Can't make bitmap '" + name + "' persistent in '" + node().node_name() + "': " + why);
    };
    if (header_.version < 3) return refuse("Cannot store dirty bitmaps in qcow2 v2 files");
    if (auto r = check_bitmap_constraints(name, granularity); !r) return refuse(r.error().message);
    uint64_t count = 1, directory = bitmap_dir_entry_size(name.size());
    for (const auto& b : bitmaps.list())
        if (b->persistent()) {
            count++;
            directory += bitmap_dir_entry_size(b->name().size());
        }
    if (count > kMaxBitmaps) return refuse("Maximum number of persistent bitmaps is already reached");
    if (directory > kMaxBitmapDirectorySize) return refuse("Not enough space in the bitmap directory");
    return {};
}

uint64_t Qcow2Driver::kept_autoclear() const { return header_.bitmaps ? uint64_t{kAutoclearBitmaps} : 0; }

Task<Result<uint64_t>> Qcow2Driver::co_refcount(uint64_t cluster_index) {
    auto block = co_await co_refblock_for(cluster_index, false);
    if (!block) co_return std::unexpected(block.error());
    if (!*block) co_return uint64_t{0};
    co_return get_refcount(block->data(), cluster_index % refblock_entries_, header_.refcount_order);
}

// --- open ---

Task<Result<void>> Qcow2Driver::co_read_bitmaps() {
    if (header_.stale_bitmaps)
        LOG_WARN("qcow2: node '%s': %s; some clusters may be leaked, run 'qemu-img check -r' on the image file to fix",
                 node().node_name().c_str(),
                 header_.version < 3 ? "this qcow2 v2 image contains bitmaps, but they may have been modified by a "
                                       "program without persistent bitmap support; so now they must all be "
                                       "considered inconsistent"
                                     : "a program lacking bitmap support modified this file, so all bitmaps are now "
                                       "considered inconsistent");
    if (!header_.bitmaps) co_return Result<void>{};
    const BitmapsExtension ext = *header_.bitmaps;
    const uint64_t file_size = file().child().length();
    if (ext.directory_size == 0) co_return fail(EINVAL, "Requested bitmap directory size is zero");
    if (ext.directory_offset > file_size || ext.directory_size > file_size - ext.directory_offset)
        co_return fail(EINVAL, "Failed to read bitmap directory: it lies past the end of the image file");
    std::vector<uint8_t> raw(ext.directory_size);
    if (auto r = co_await co_read_file(ext.directory_offset, raw.data(), raw.size()); !r)
        co_return fail(r.error().code, "Failed to read bitmap directory: " + r.error().message);
    auto entries = parse_bitmap_directory(raw, ext.nb_bitmaps, cluster_size(), header_.size);
    if (!entries) co_return std::unexpected(entries.error());
    uint64_t memory = 0;
    for (const BitmapEntry& e : *entries) memory += DirtyBits::memory_needed(header_.size, e.granularity());
    if (memory > kMaxLoadedBitmapMemory)
        co_return fail(ENOMEM, "The bitmaps of this image would take " + std::to_string(memory >> 20) +
                                   " MiB of memory, more than the " + std::to_string(kMaxLoadedBitmapMemory >> 20) +
                                   " MiB allowed");
    note_overlap(add_region(ext.directory_offset, ext.directory_size, Region::bitmap_directory));
    bitmap_dir_ = std::move(*entries);
    loaded_bits_.clear();
    loaded_bits_.resize(bitmap_dir_.size());
    for (size_t i = 0; i < bitmap_dir_.size(); i++)
        if (!(bitmap_dir_[i].flags & kBitmapInUse))
            if (auto r = co_await co_load_bitmap(bitmap_dir_[i], i); !r) co_return r;
    co_return Result<void>{};
}

// QEMU's load_bitmap for a bitmap not in use: its table (entries checked),
// then each data cluster into the bits. Every cluster it names must lie in
// the file and have a refcount: a bitmap over free clusters would be freed
// again at the next store, below zero, or would share a cluster with data
// allocated later.
Task<Result<void>> Qcow2Driver::co_load_bitmap(const BitmapEntry& e, size_t index) {
    const uint64_t cs = cluster_size();
    const uint64_t file_size = file().child().length();
    auto bad_data = [&](const std::string& why) {
        return fail(EINVAL, "Could not read bitmap '" + e.name + "' from image: " + why);
    };
    auto bad_table = [&](const std::string& why) {
        return fail(EINVAL, "Could not read bitmap_table table from image for bitmap '" + e.name + "': " + why);
    };
    // The table holds exactly the clusters the bits need (QEMU's
    // load_bitmap_data); that also bounds the table by the bits' memory.
    if (bitmap_table_entries(header_.size, e.granularity_bits, cs) != e.table_size)
        co_return bad_data("Invalid argument");
    const uint64_t table_bytes = uint64_t{e.table_size} * 8;
    if (e.table_offset > file_size || table_bytes > file_size - e.table_offset)
        co_return bad_table("the table lies past the end of the image file");
    std::vector<uint8_t> raw(table_bytes);
    if (auto r = co_await co_read_file(e.table_offset, raw.data(), raw.size()); !r)
        co_return bad_table(r.error().message);
    std::vector<uint64_t> table(e.table_size);
    for (size_t i = 0; i < table.size(); i++) {
        table[i] = load_be64(&raw[8 * i]);
        if (!valid_bitmap_table_entry(table[i], cs)) co_return bad_table("Invalid argument");
        const uint64_t off = table[i] & kBitmapTableOffsetMask;
        if (off != 0 && (off > file_size || cs > file_size - off))
            co_return bad_data("a data cluster lies past the end of the image file");
    }
    raw = {};
    auto check_refcount = [](Qcow2Driver& d, const BitmapEntry& entry, uint64_t offset) -> Task<Result<void>> {
        auto refcount = co_await d.co_refcount(offset / d.cluster_size());
        if (!refcount) co_return std::unexpected(refcount.error());
        if (*refcount == 0)
            co_return fail(EINVAL, "Bitmap '" + entry.name + "' uses the cluster at " + std::to_string(offset) +
                                       ", which has no refcount (repair the image with 'qemu-img check -r all')");
        co_return Result<void>{};
    };
    for (uint64_t c = 0; c < (table_bytes + cs - 1) / cs; c++)
        if (auto r = co_await check_refcount(*this, e, e.table_offset + c * cs); !r) co_return r;
    note_overlap(add_region(e.table_offset, table_bytes, Region::bitmap_table));

    std::unique_ptr<DirtyBits> bits;
    try {
        bits = std::make_unique<DirtyBits>(header_.size, e.granularity());
    } catch (const std::bad_alloc&) {
        co_return fail(ENOMEM, "Not enough memory for bitmap '" + e.name + "'");
    }
    const uint64_t serialized = bits->serialized_size();
    std::vector<uint8_t> buf(cs);
    for (size_t i = 0; i < table.size(); i++) {
        const uint64_t pos = i * cs, n = std::min(cs, serialized - pos);
        const uint64_t off = table[i] & kBitmapTableOffsetMask;
        if (off == 0) {
            if (table[i] & kBitmapTableAllOnes) (void)bits->deserialize_fill(pos, n, true);
            continue;
        }
        if (auto r = co_await check_refcount(*this, e, off); !r) co_return r;
        note_overlap(add_region(off, cs, Region::bitmap_data));
        if (auto r = co_await co_read_file(off, buf.data(), cs); !r) co_return bad_data(r.error().message);
        (void)bits->deserialize(pos, std::span(buf.data(), n));  // within serialized_size(): cannot fail
    }
    loaded_bits_[index] = std::move(bits);
    co_return Result<void>{};
}

// QEMU's qcow2_load_dirty_bitmaps, its second half: the node's bitmaps
// made from the directory read in co_open, newest (last) first as QEMU
// lists them; then, on a writable image, every loaded one marked in use
// on disk before the node takes a write.
Result<void> Qcow2Driver::finish_open() {
    assert_in_main_thread();
    std::vector<std::unique_ptr<DirtyBits>> loaded = std::move(loaded_bits_);
    if (bitmap_dir_.empty()) return {};
    DrainedSection drained(node());
    DirtyBitmaps& bitmaps = node().dirty_bitmaps();
    std::vector<DirtyBitmap*> created;
    auto undo = [&] {
        for (DirtyBitmap* b : created) bitmaps.release(*b);
    };
    bool needs_update = false;
    for (size_t i = 0; i < bitmap_dir_.size(); i++) {
        const BitmapEntry& e = bitmap_dir_[i];
        auto b = bitmaps.create(e.name, e.granularity());
        if (!b) {
            undo();
            return std::unexpected(b.error());
        }
        created.push_back(*b);
        (*b)->set_persistent(true);
        if (e.flags & kBitmapInUse) {
            (*b)->set_inconsistent();
        } else {
            (*b)->bits() = std::move(*loaded[i]);
            needs_update = true;
        }
        if (!(e.flags & kBitmapAuto)) (*b)->set_enabled(false);
    }
    const bool can_write = writable_ && !corrupt_;
    if (needs_update && can_write) {
        std::vector<BitmapEntry> marked = bitmap_dir_;
        for (BitmapEntry& e : marked) e.flags |= kBitmapInUse;
        if (auto r = run_to_completion(node().ctx(), co_rewrite_bitmap_dir(std::move(marked))); !r) {
            undo();
            return fail(r.error().code, "Can't update bitmap directory: " + r.error().message);
        }
    }
    if (!can_write)
        for (DirtyBitmap* b : created) b->set_readonly(true);
    return {};
}

// --- writing the directory ---

Task<Result<void>> Qcow2Driver::co_rewrite_bitmap_dir(std::vector<BitmapEntry> entries) {
    auto guard = co_await lock_.scoped_lock();
    if (!header_.bitmaps || entries.size() != header_.bitmaps->nb_bitmaps) co_return fail(EINVAL, "Invalid argument");
    const std::vector<uint8_t> raw = encode_bitmap_directory(entries);
    const BitmapsExtension ext = *header_.bitmaps;
    if (raw.size() != ext.directory_size) co_return fail(EINVAL, "Invalid argument");
    header_.autoclear_features &= ~kAutoclearBitmaps;
    if (auto r = co_await co_write_header(); !r) co_return r;
    if (auto r = co_await co_flush_file(); !r) co_return r;
    // The bit is off on disk: the directory may change.
    if (auto r = co_await co_check_overlap(ext.directory_offset, raw.size(), Region::bitmap_directory); !r) co_return r;
    if (auto r = co_await co_write_file(ext.directory_offset, raw.data(), raw.size()); !r) co_return r;
    if (auto r = co_await co_flush_file(); !r) co_return r;
    bitmap_dir_ = std::move(entries);
    header_.autoclear_features |= kAutoclearBitmaps;
    if (auto r = co_await co_write_header(); !r) co_return r;
    co_return co_await co_flush_file();
}

Task<Result<void>> Qcow2Driver::co_replace_bitmap_dir(std::vector<BitmapEntry> entries) {
    const uint64_t cs = cluster_size();
    const std::optional<BitmapsExtension> old = header_.bitmaps;
    const uint64_t old_autoclear = header_.autoclear_features;
    std::optional<BitmapsExtension> next;
    if (!entries.empty()) {
        if (entries.size() > kMaxBitmaps) co_return fail(EINVAL, "Invalid argument");
        const std::vector<uint8_t> raw = encode_bitmap_directory(entries);
        if (raw.size() > kMaxBitmapDirectorySize) co_return fail(EINVAL, "Invalid argument");
        const uint64_t clusters = (raw.size() + cs - 1) / cs;
        auto at = co_await co_alloc_clusters(clusters);
        if (!at) co_return std::unexpected(at.error());
        next = BitmapsExtension{uint32_t(entries.size()), raw.size(), at->offset};
        auto write = [](Qcow2Driver& d, uint64_t offset, const std::vector<uint8_t>& bytes) -> Task<Result<void>> {
            if (auto r = co_await d.co_claim_region(offset, bytes.size(), Region::bitmap_directory); !r) co_return r;
            if (auto r = co_await d.co_check_overlap(offset, bytes.size(), Region::bitmap_directory); !r) co_return r;
            if (auto r = co_await d.co_write_file(offset, bytes.data(), bytes.size()); !r) co_return r;
            // Refcounts (and the data and tables written before) on disk
            // before the header names the directory.
            if (auto r = co_await d.co_flush_locked(); !r) co_return r;
            co_return co_await d.co_flush_file();
        };
        if (auto r = co_await write(*this, at->offset, raw); !r) {
            for (uint64_t c = 0; c < clusters; c++) co_await co_release_cluster(at->offset + c * cs);
            co_return r;
        }
    }
    header_.bitmaps = next;
    header_.autoclear_features = next ? header_.autoclear_features | kAutoclearBitmaps
                                      : header_.autoclear_features & ~kAutoclearBitmaps;
    auto r = co_await co_write_header();
    if (r) r = co_await co_flush_file();
    if (!r) {
        header_.bitmaps = old;
        header_.autoclear_features = old_autoclear;
        if (next)
            for (uint64_t c = 0; c < (next->directory_size + cs - 1) / cs; c++)
                co_await co_release_cluster(next->directory_offset + c * cs);
        co_return r;
    }
    bitmap_dir_ = std::move(entries);
    if (old)
        for (uint64_t c = 0; c < (old->directory_size + cs - 1) / cs; c++)
            co_await co_release_cluster(old->directory_offset + c * cs);
    co_return Result<void>{};
}

// A cluster a bitmap structure named: one reference less. A cluster with
// no refcount, past the image's clusters or holding other metadata was
// never the bitmap's (a damaged table): it is left alone, as freeing it
// would corrupt what does own it.
Task<void> Qcow2Driver::co_release_cluster(uint64_t offset) {
    const uint64_t cs = cluster_size();
    if (offset == 0 || offset_in_cluster(offset) || offset >= image_end_) co_return;
    auto it = regions_.upper_bound(offset);
    if (it != regions_.begin()) {
        --it;
        if (offset < it->second.end && it->second.kind != Region::bitmap_directory &&
            it->second.kind != Region::bitmap_table && it->second.kind != Region::bitmap_data)
            co_return;
    }
    auto refcount = co_await co_refcount(offset / cs);
    if (!refcount || *refcount == 0) co_return;
    if (auto r = co_await co_update_refcount(offset / cs, -1); !r)
        LOG_WARN("qcow2: node '%s': freeing bitmap cluster %llu: %s", node().node_name().c_str(),
                 (unsigned long long)offset, r.error().message.c_str());
}

// QEMU's free_bitmap_clusters: a table that cannot be read or holds a bad
// entry frees nothing (the clusters leak).
Task<void> Qcow2Driver::co_free_bitmap_clusters(const BitmapEntry& e) {
    const uint64_t cs = cluster_size();
    const uint64_t file_size = file().child().length();
    const uint64_t table_bytes = uint64_t{e.table_size} * 8;
    if (e.table_size == 0 || e.table_size > kMaxBitmapTableSize || e.table_offset > file_size ||
        table_bytes > file_size - e.table_offset)
        co_return;
    std::vector<uint8_t> raw(table_bytes);
    if (auto r = co_await co_read_file(e.table_offset, raw.data(), raw.size()); !r) co_return;
    for (size_t i = 0; i < e.table_size; i++)
        if (!valid_bitmap_table_entry(load_be64(&raw[8 * i]), cs)) co_return;
    for (size_t i = 0; i < e.table_size; i++)
        co_await co_release_cluster(load_be64(&raw[8 * i]) & kBitmapTableOffsetMask);
    for (uint64_t c = 0; c < (table_bytes + cs - 1) / cs; c++) co_await co_release_cluster(e.table_offset + c * cs);
}

// --- storing ---

// QEMU's store_bitmap_data and store_bitmap: a data cluster for each part
// of the serialised bits holding a set bit (the others stay 0 in the
// table), then the table.
Task<Result<void>> Qcow2Driver::co_store_bitmap_data(const DirtyBits& bits, BitmapEntry& e) {
    const uint64_t cs = cluster_size();
    const uint64_t entries = bitmap_table_entries(bits.length(), e.granularity_bits, cs);
    if (entries > kMaxBitmapTableSize || entries * cs > kMaxBitmapPhysSize)
        co_return fail(EINVAL, "Bitmap '" + e.name + "' is too big");
    std::vector<uint64_t> table(entries, 0);
    auto undo = [](Qcow2Driver& d, const std::vector<uint64_t>& written) -> Task<void> {
        for (uint64_t off : written) co_await d.co_release_cluster(off);
    };
    // Disk bytes one cluster of the serialised bits covers.
    const uint64_t coverage = cs * 8 * e.granularity();
    std::vector<uint8_t> buf(cs);
    std::vector<uint64_t> written;
    uint64_t offset = 0;
    while (auto dirty = bits.next_dirty(offset)) {
        const uint64_t i = *dirty / coverage;
        auto at = co_await co_alloc_clusters(1);
        if (!at) {
            co_await undo(*this, written);
            co_return fail(at.error().code, "Failed to allocate clusters for bitmap '" + e.name + "': " +
                                                at.error().message);
        }
        written.push_back(at->offset);
        table[i] = at->offset;
        bits.serialize(i * cs, buf);
        auto r = co_await co_claim_region(at->offset, cs, Region::bitmap_data);
        if (r) r = co_await co_check_overlap(at->offset, cs, Region::bitmap_data);
        if (r) r = co_await co_write_file(at->offset, buf.data(), cs);
        if (!r) {
            co_await undo(*this, written);
            co_return fail(r.error().code, "Failed to write bitmap '" + e.name + "' to file: " + r.error().message);
        }
        if (i + 1 >= entries) break;
        offset = (i + 1) * coverage;
    }
    const uint64_t table_clusters = (entries * 8 + cs - 1) / cs;
    auto at = co_await co_alloc_clusters(table_clusters);
    if (!at) {
        co_await undo(*this, written);
        co_return fail(at.error().code, "Failed to allocate clusters for bitmap '" + e.name + "': " +
                                            at.error().message);
    }
    for (uint64_t c = 0; c < table_clusters; c++) written.push_back(at->offset + c * cs);
    std::vector<uint8_t> raw(table_clusters * cs, 0);
    for (size_t i = 0; i < table.size(); i++) store_be64(&raw[8 * i], table[i]);
    auto r = co_await co_claim_region(at->offset, raw.size(), Region::bitmap_table);
    if (r) r = co_await co_check_overlap(at->offset, raw.size(), Region::bitmap_table);
    if (r) r = co_await co_write_file(at->offset, raw.data(), raw.size());
    if (!r) {
        co_await undo(*this, written);
        co_return fail(r.error().code, "Failed to write bitmap '" + e.name + "' to file: " + r.error().message);
    }
    e.table_offset = at->offset;
    e.table_size = uint32_t(entries);
    co_return Result<void>{};
}

// QEMU's qcow2_store_persistent_dirty_bitmaps. The node's list is read in
// its context: the main thread waits for this coroutine (close, reopen),
// so neither the list nor the flags change meanwhile. Bitmaps that are
// read-only (the image was) or inconsistent keep their entries as they are.
Task<Result<void>> Qcow2Driver::co_store_bitmaps() {
    std::vector<BitmapEntry> dir = bitmap_dir_;
    uint64_t dir_size = 0;
    for (const BitmapEntry& e : dir) dir_size += bitmap_dir_entry_size(e.name.size());
    std::vector<BitmapEntry> drop;                            // old tables of bitmaps stored again
    std::vector<std::pair<std::string, const DirtyBits*>> store;  // by name: dir may grow
    for (const auto& b : node().dirty_bitmaps().list()) {
        if (!b->persistent() || b->inconsistent() || b->readonly() || b->name().empty()) continue;
        if (auto r = check_bitmap_constraints(b->name(), b->granularity()); !r)
            co_return fail(r.error().code, "Bitmap '" + b->name() + "' doesn't satisfy the constraints: " +
                                               r.error().message);
        auto it = std::find_if(dir.begin(), dir.end(), [&](const BitmapEntry& e) { return e.name == b->name(); });
        if (it == dir.end()) {
            if (dir.size() + 1 > kMaxBitmaps) co_return fail(EINVAL, "Too many persistent bitmaps");
            dir_size += bitmap_dir_entry_size(b->name().size());
            if (dir_size > kMaxBitmapDirectorySize) co_return fail(EINVAL, "Bitmap directory is too large");
            dir.push_back(BitmapEntry{.name = b->name()});
            it = dir.end() - 1;
        } else {
            if (!(it->flags & kBitmapInUse))
                co_return fail(EEXIST, "Bitmap '" + b->name() + "' already exists in the image");
            drop.push_back(*it);
        }
        it->table_offset = 0;
        it->table_size = 0;
        it->flags = b->enabled() ? uint32_t{kBitmapAuto} : 0;
        it->granularity_bits = uint8_t(std::countr_zero(b->granularity()));
        store.emplace_back(b->name(), &b->bits());
    }
    if (store.empty()) co_return Result<void>{};
    if (!writable_ || corrupt_) co_return fail(EACCES, "No write access");
    std::vector<BitmapEntry*> stored;
    auto undo = [](Qcow2Driver& d, const std::vector<BitmapEntry*>& entries) -> Task<void> {
        for (const BitmapEntry* e : entries) co_await d.co_free_bitmap_clusters(*e);
    };
    for (const auto& [name, bits] : store) {
        auto it = std::find_if(dir.begin(), dir.end(), [&](const BitmapEntry& e) { return e.name == name; });
        if (auto r = co_await co_store_bitmap_data(*bits, *it); !r) {
            co_await undo(*this, stored);
            co_return r;
        }
        stored.push_back(&*it);
    }
    if (auto r = co_await co_replace_bitmap_dir(dir); !r) {
        co_await undo(*this, stored);
        co_return fail(r.error().code, "Failed to update bitmap extension: " + r.error().message);
    }
    // Nothing names the old tables any more (the header is on disk).
    for (const BitmapEntry& e : drop) co_await co_free_bitmap_clusters(e);
    co_return Result<void>{};
}

// Close and reopen read-only: the bitmaps, then what the caches hold.
Task<Result<void>> Qcow2Driver::co_store_and_flush() {
    auto guard = co_await lock_.scoped_lock();
    auto stored = co_await co_store_bitmaps();
    auto r = co_await co_flush_locked();
    if (r) r = co_await co_flush_file();
    if (!stored) co_return stored;
    co_return r;
}

Task<Result<void>> Qcow2Driver::co_remove_persistent_bitmap(const std::string& name) {
    assert_in_context(node().ctx());
    auto guard = co_await lock_.scoped_lock();
    auto it = std::find_if(bitmap_dir_.begin(), bitmap_dir_.end(), [&](const BitmapEntry& e) { return e.name == name; });
    if (it == bitmap_dir_.end()) co_return Result<void>{};
    if (!writable_ || corrupt_) co_return fail(EACCES, "Failed to update bitmap extension: No write access");
    const BitmapEntry removed = *it;
    std::vector<BitmapEntry> rest = bitmap_dir_;
    rest.erase(rest.begin() + (it - bitmap_dir_.begin()));
    if (auto r = co_await co_replace_bitmap_dir(std::move(rest)); !r)
        co_return fail(r.error().code, "Failed to update bitmap extension: " + r.error().message);
    co_await co_free_bitmap_clusters(removed);
    co_return Result<void>{};
}

// --- resize ---

// The node's list is read in its context: it changes only while the node
// is drained, and a resize is a request.
Result<void> Qcow2Driver::check_bitmaps_resizable() const {
    for (const BitmapEntry& e : bitmap_dir_) {
        const auto& list = node().dirty_bitmaps().list();
        auto it = std::find_if(list.begin(), list.end(), [&](const auto& b) { return b->name() == e.name; });
        if (it == list.end())
            return fail(ENOTSUP, "Cannot resize qcow2 with persistent bitmaps that were not loaded into memory");
        if (auto r = (*it)->check(kBitmapDefault); !r) return fail(ENOTSUP, r.error().message);
    }
    return {};
}

// --- reopen ---

// QEMU's qcow2_reopen_bitmaps_ro, after the store: the node's persistent
// bitmaps follow the image.
void Qcow2Driver::bitmaps_read_only() {
    assert_in_main_thread();
    for (const auto& b : node().dirty_bitmaps().list())
        if (b->persistent()) b->set_readonly(true);
}

// QEMU's qcow2_reopen_bitmaps_rw: every bitmap of the image must be the
// node's; the read-only ones are marked in use on disk, then writable.
Result<void> Qcow2Driver::bitmaps_writable() {
    assert_in_main_thread();
    if (bitmap_dir_.empty()) return {};
    DirtyBitmaps& bitmaps = node().dirty_bitmaps();
    const std::string image = filename();
    std::vector<BitmapEntry> entries = bitmap_dir_;
    std::vector<DirtyBitmap*> read_only;
    bool needs_update = false;
    for (BitmapEntry& e : entries) {
        DirtyBitmap* b = bitmaps.find(e.name);
        if (b == nullptr) return fail(EINVAL, "Unexpected bitmap '" + e.name + "' in image '" + image + "'");
        if (!(e.flags & kBitmapInUse)) {
            if (!b->readonly())
                return fail(EINVAL, "Corruption: bitmap '" + e.name + "' is not marked IN_USE in the image '" + image +
                                        "' and not marked readonly in RAM");
            if (b->inconsistent())
                return fail(EINVAL, "Corruption: bitmap '" + e.name + "' is inconsistent but is not marked IN_USE "
                                    "in the image '" + image + "'");
            e.flags |= kBitmapInUse;
            needs_update = true;
        } else if (b->readonly() && !b->inconsistent()) {
            return fail(EINVAL, "Corruption: bitmap '" + e.name + "' is marked IN_USE in the image '" + image +
                                    "' but it is readonly and consistent in RAM");
        }
        if (b->readonly()) read_only.push_back(b);
    }
    if (needs_update)
        if (auto r = run_to_completion(node().ctx(), co_rewrite_bitmap_dir(std::move(entries))); !r)
            return fail(r.error().code, "Cannot update bitmap directory: " + r.error().message);
    for (DirtyBitmap* b : read_only) b->set_readonly(false);
    return {};
}

// --- query ---

// QEMU's Qcow2BitmapInfo list: what the image's directory says (a loaded
// bitmap shows "in-use" while the node has it).
nlohmann::json Qcow2Driver::bitmap_info() const {
    nlohmann::json list = nlohmann::json::array();
    for (const BitmapEntry& e : bitmap_dir_) {
        nlohmann::json flags = nlohmann::json::array();
        if (e.flags & kBitmapInUse) flags.push_back("in-use");
        if (e.flags & kBitmapAuto) flags.push_back("auto");
        list.push_back({{"flags", flags}, {"name", e.name}, {"granularity", e.granularity()}});
    }
    return list;
}

}  // namespace ioplane::block::qcow2
