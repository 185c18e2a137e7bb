// The qcow2 format driver. One class, its members in files by subject:
//   open.cc        options, header, tables, the header's updates
//   refcounts.cc   refcount table and blocks, cluster allocation and frees
//   mapping.cc     L1/L2 lookups, L2 tables made and copied, links
//   io.cc          reads, writes with copy-on-write, zeroes, discard, flush
//   compressed.cc  deflate and zstd clusters
//   bitmaps.cc     persistent dirty bitmaps: loaded at open, stored at close
// The ordering of metadata writes that keeps the image consistent after a
// crash is described in docs/QCOW2.md; each place that relies on it says so.
//
// Thread contract: the Driver's (co_* in the node's context); every member
// that touches metadata (the tables, the caches, the allocator) runs with
// lock_ held.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../drivers.h"
#include "format.h"
#include "ioplane/block/dirty_bits.h"
#include "ioplane/block/edge.h"
#include "ioplane/block/node.h"
#include "ioplane/core/co_mutex.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/timer.h"
#include "table_cache.h"

namespace ioplane::block::qcow2 {

struct CacheOptions {
    uint64_t l2_cache_bytes = 0;        // 0: QEMU's default
    uint64_t refcount_cache_bytes = 0;  // 0: QEMU's default
    uint64_t clean_interval_s = 600;    // 0: never
};

// What a guest range maps to, for a run of clusters (or subclusters) of the
// same kind.
struct Mapping {
    enum Kind { unallocated, zero, data, compressed } kind = unallocated;
    uint64_t bytes = 0;  // how far the run goes
    uint64_t host = 0;   // data: host offset of the run's first byte
    uint64_t l2_entry = 0;  // compressed: the descriptor
    bool copied = false;    // data: refcount one, writable in place
};

class Qcow2Driver final : public Driver {
public:
    explicit Qcow2Driver(CacheOptions cache);
    ~Qcow2Driver() override;

    const char* format_name() const override { return "qcow2"; }
    std::string filename() const override { return file().child().driver().filename(); }
    bool direct_io() const override { return file().child().driver().direct_io(); }
    uint64_t allocated_bytes() const override { return file().child().driver().allocated_bytes(); }
    uint64_t length() const override { return header_.size; }
    void add_image_info(nlohmann::json& image) const override;
    DriverCaps caps() const override;
    uint64_t cluster_size() const override { return header_.cluster_size(); }
    // bitmaps.cc: QEMU's checks for a new persistent bitmap; the image's
    // bitmaps become the node's at open (finish_open) and go back into
    // the image at close and when the node becomes read-only.
    Result<void> can_store_bitmap(const std::string& name, uint64_t granularity) const override;
    Result<void> finish_open() override;
    Task<Result<void>> co_remove_persistent_bitmap(const std::string& name) override;
    bool supports_backing() const override { return true; }
    std::optional<BackingFile> backing_file() const override;

    Task<Result<void>> co_open() override;
    Task<Result<void>> co_close() override;
    bool needs_close() const override { return writable_ && !corrupt_; }
    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override;
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override;
    Task<Result<void>> co_flush() override;
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override;
    // Grows the image (shrinking is refused).
    Task<Result<void>> co_truncate(uint64_t size) override;
    Task<Result<void>> co_change_backing_file(const std::string& file, const std::string& format) override;
    Result<void> reopen(bool read_only) override;
    // Preallocation over guest [offset, end) (blockdev-create): metadata,
    // and with `reserve` the file's space too.
    Task<Result<void>> co_preallocate(uint64_t offset, uint64_t end, bool reserve);

    void detach_aio_context() override;
    void attach_aio_context(AioContext& ctx) override;

    // Any thread: the parsed header (snapshots listed from it), for
    // query-named-block-nodes.
    const Header& header() const { return header_; }
    const std::vector<Snapshot>& snapshots() const { return snapshots_; }

private:
    // --- geometry (constant after open) ---
    uint64_t cluster_offset(uint64_t v) const { return v & ~(cluster_size() - 1); }
    uint64_t offset_in_cluster(uint64_t v) const { return v & (cluster_size() - 1); }
    uint64_t subcluster_size() const { return extended_ ? cluster_size() / 32 : cluster_size(); }
    // Guest offset -> L1 index and L2 index.
    uint64_t l1_index(uint64_t guest) const { return guest >> (header_.cluster_bits + l2_bits_); }
    uint64_t l2_index(uint64_t guest) const { return (guest >> header_.cluster_bits) & (l2_entries_ - 1); }
    BlockEdge& file() const { return child(ChildRole::file); }
    BlockEdge* backing() const;

    // --- open.cc ---
    Task<Result<void>> co_read_header();
    Task<Result<void>> co_read_tables();
    Task<Result<void>> co_write_header();
    Task<Result<void>> co_write_incompatible_features();
    void size_caches();
    // The node's context.
    void start_clean_timer(AioContext& ctx);
    // Marks the image corrupt (in memory and, if it can be written, in the
    // header) after `what` was found, and refuses writes from now on.
    Task<void> co_signal_corruption(const std::string& what);
    Result<void> check_writable() const;
    void note_overlap(const std::optional<std::string>& overlap);

    // --- metadata I/O (io helpers shared by the files) ---
    Task<Result<void>> co_read_file(uint64_t offset, void* buf, uint64_t bytes);
    Task<Result<void>> co_write_file(uint64_t offset, const void* buf, uint64_t bytes);
    Task<Result<void>> co_flush_file();
    // Host range [offset, offset + bytes) about to be written with `kind`
    // of data: refused (and the image marked corrupt) if it overlaps
    // metadata of another kind or lies past the clusters allocated.
    enum class Region { data, l2, refblock, l1, reftable, header, snapshots, bitmap_directory, bitmap_table,
                        bitmap_data, other };
    Task<Result<void>> co_check_overlap(uint64_t offset, uint64_t bytes, Region kind);
    // Records a metadata region; what it overlaps (another kind, or a
    // different extent) is returned and the region not recorded.
    std::optional<std::string> add_region(uint64_t offset, uint64_t bytes, Region kind);
    // add_region for newly allocated metadata: an overlap marks the image
    // corrupt and fails.
    Task<Result<void>> co_claim_region(uint64_t offset, uint64_t bytes, Region kind);
    void remove_region(uint64_t offset);

    // --- table cache I/O ---
    Task<Result<TableRef>> co_get_table(TableCache& cache, uint64_t offset, bool read);
    Task<Result<void>> co_write_back(TableCache& cache, TableCache::Entry& e);
    Task<Result<void>> co_write_dirty(TableCache& cache);

    // --- refcounts.cc ---
    uint64_t refblock_entries() const { return refblock_entries_; }
    Task<Result<void>> co_update_refcount(uint64_t cluster_index, int64_t addend);
    // `n` contiguous free clusters, their refcounts set to one; the file
    // grown to hold them. `fresh`: never written since the file was opened
    // (they read as zeroes).
    struct Allocated {
        uint64_t offset;
        bool fresh;
    };
    Task<Result<Allocated>> co_alloc_clusters(uint64_t n);
    Task<Result<uint64_t>> co_find_free(uint64_t n);
    Task<Result<TableRef>> co_refblock_for(uint64_t cluster_index, bool create);
    Task<Result<void>> co_grow_reftable(uint64_t min_entries);
    Task<Result<void>> co_grow_file(uint64_t end);
    // At close: the file ends at the last cluster ever allocated again.
    Task<Result<void>> co_trim_file_tail();
    // The host clusters under [offset, offset + bytes) lose one reference
    // once the L2 change that dropped it is on disk (after the next flush).
    void free_later(uint64_t offset, uint64_t bytes) { pending_frees_.emplace_back(offset, bytes); }
    // The same for what an L2 entry points to: its data cluster, or the
    // sectors of its compressed data.
    void free_entry_later(uint64_t l2_entry);
    Task<Result<void>> co_apply_pending_frees();

    // --- mapping.cc ---
    // The mapping of [offset, offset + bytes) from offset on, within one L2
    // table.
    Task<Result<Mapping>> co_map(uint64_t offset, uint64_t bytes);
    // The L2 table for guest `offset`: null ref if none (read), or one made
    // (allocated, or copied when shared) for writing.
    Task<Result<TableRef>> co_l2_for_read(uint64_t offset);
    Task<Result<TableRef>> co_l2_for_write(uint64_t offset);
    Result<void> check_l2_entry(uint64_t entry, uint64_t l2_offset);
    uint64_t l2_bitmap(const TableRef& l2, uint64_t index) const {
        return extended_ ? l2.get(2 * index + 1) : 0;
    }
    uint64_t l2_word(const TableRef& l2, uint64_t index) const { return l2.get(extended_ ? 2 * index : index); }
    void set_l2(TableRef& l2, uint64_t index, uint64_t entry, uint64_t bitmap);

    // --- io.cc ---
    // Reads guest data into `iov` following `m` (the part at iov's start).
    Task<Result<void>> co_read_mapped(uint64_t offset, const Mapping& m, uint64_t n, std::span<const iovec> iov);
    Task<Result<void>> co_read_backing(uint64_t offset, uint64_t n, std::span<const iovec> iov);
    // The current content of guest [offset, offset + n) into `buf`.
    Task<Result<void>> co_read_guest(uint64_t offset, uint64_t n, uint8_t* buf);
    // One allocating step of a write: returns the bytes it wrote.
    Task<Result<uint64_t>> co_write_allocating(uint64_t offset, uint64_t bytes, std::span<const iovec> iov);
    // Zeroes or discards the whole clusters (or subclusters) [offset,
    // offset + bytes) as metadata; `discard` frees them.
    Task<Result<void>> co_zero_clusters(uint64_t offset, uint64_t bytes, bool discard, bool unmap);
    // Waits while an allocation of a guest cluster in [first, last] is in
    // flight (releasing lock_ meanwhile). Returns whether it waited.
    Task<bool> co_wait_for_allocations(uint64_t first, uint64_t last);
    Task<Result<void>> co_flush_locked();

    // --- resize.cc ---
    Task<Result<void>> co_grow_locked(uint64_t size);

    // --- bitmaps.cc ---
    // QEMU's check_constraints_on_bitmap (messages without a prefix).
    Result<void> check_bitmap_constraints(const std::string& name, uint64_t granularity) const;
    // co_open: the directory the bitmaps extension points to, checked, and
    // the data of each bitmap not in use read into loaded_bits_.
    Task<Result<void>> co_read_bitmaps();
    Task<Result<void>> co_load_bitmap(const BitmapEntry& e, size_t index);
    Task<Result<uint64_t>> co_refcount(uint64_t cluster_index);
    // Writes every persistent bitmap the node may change into new clusters
    // and a new directory (QEMU's qcow2_store_persistent_dirty_bitmaps).
    Task<Result<void>> co_store_bitmaps();
    Task<Result<void>> co_store_bitmap_data(const DirtyBits& bits, BitmapEntry& e);
    // A new directory of `entries` (none: the extension goes), the header
    // pointing to it, the old one freed (QEMU's update_ext_header_and_dir).
    Task<Result<void>> co_replace_bitmap_dir(std::vector<BitmapEntry> entries);
    // The same directory with other flags, written over the old one while
    // the autoclear bit is off (QEMU's update_ext_header_and_dir_in_place).
    Task<Result<void>> co_rewrite_bitmap_dir(std::vector<BitmapEntry> entries);
    // A bitmap's table and data clusters lose its reference.
    Task<void> co_free_bitmap_clusters(const BitmapEntry& e);
    Task<void> co_release_cluster(uint64_t offset);
    // QEMU's qcow2_truncate_bitmaps_check: every bitmap of the image is
    // the node's and may change (the node's context, inside the request).
    Result<void> check_bitmaps_resizable() const;
    // Store at close / reopen read-only, and the flags of a reopen.
    Task<Result<void>> co_store_and_flush();
    void bitmaps_read_only();
    Result<void> bitmaps_writable();
    // The autoclear bits a writer keeps: the bitmaps bit while the image
    // has a directory this writer keeps current.
    uint64_t kept_autoclear() const;
    // format-specific "bitmaps" of ImageInfo: the image's directory.
    nlohmann::json bitmap_info() const;

    // --- compressed.cc ---
    Task<Result<void>> co_read_compressed(uint64_t l2_entry, uint8_t* cluster_buf);

    Header header_;
    CacheOptions cache_options_;
    // Geometry, from the header (co_open).
    bool extended_ = false;
    uint32_t l2_bits_ = 0;  // log2 of entries per L2 table
    uint64_t l2_entries_ = 0;
    uint64_t refblock_entries_ = 0;
    uint64_t refcount_max_ = 0;
    std::vector<Snapshot> snapshots_;
    uint64_t snapshot_table_bytes_ = 0;
    // The image's bitmap directory as on disk (lock_; changed only by
    // coroutines the main thread waits for, so the main thread reads it).
    std::vector<BitmapEntry> bitmap_dir_;
    // co_open to finish_open: the bits of each entry of bitmap_dir_ (null
    // for one in use).
    std::vector<std::unique_ptr<DirtyBits>> loaded_bits_;

    std::vector<uint64_t> l1_;        // host order, lock_
    std::vector<uint64_t> reftable_;  // host order, lock_
    std::unique_ptr<TableCache> l2_cache_;
    std::unique_ptr<TableCache> refblock_cache_;
    CoMutex lock_;

    // Metadata regions by host offset: [start, end) and kind (overlap checks).
    struct RegionEntry {
        uint64_t end;
        Region kind;
    };
    std::map<uint64_t, RegionEntry> regions_;

    // Guest clusters [first, last] being allocated: others wanting to
    // allocate or zero them wait (lock_).
    struct Allocation {
        uint64_t first, last;
        CoQueue waiters;
    };
    std::vector<Allocation*> allocations_;

    std::vector<std::pair<uint64_t, uint64_t>> pending_frees_;  // lock_
    uint64_t free_cluster_index_ = 0;      // lock_: no free cluster below it
    uint64_t image_end_ = 0;               // lock_: end of the highest cluster with a refcount
    uint64_t fresh_from_ = 0;              // lock_: clusters at or above it were never written
    // Refcount blocks or data were written since the last flush of the file:
    // an L2 table must not be written before the next one.
    bool l2_needs_flush_ = false;
    bool corrupt_ = false;
    std::string open_problem_;  // metadata found to contradict itself at open
    bool writable_ = false;  // opened read-write
    std::unique_ptr<Timer> clean_timer_;
};

// blockdev-create for qcow2 (create.cc): the main context.
Task<Result<void>> co_create_qcow2(BlockGraph& graph, OptionReader& opts);

}  // namespace ioplane::block::qcow2
