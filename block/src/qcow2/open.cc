// Opening a qcow2 image: its options, header and tables; the header's later
// updates; the corrupt bit.
#include <algorithm>
#include <cstring>

#include "../graph_internal.h"
#include "ioplane/block/node.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

constexpr uint64_t kDefaultL2CacheMax = 32u << 20;  // QEMU's DEFAULT_L2_CACHE_MAX_SIZE
constexpr uint64_t kMinL2CacheTables = 2;
constexpr uint64_t kMinRefcountCacheTables = 4;

// Options QEMU's qcow2 takes that change nothing here: accepted, so that
// command lines written for qemu-storage-daemon work.
Result<void> read_accepted_options(OptionReader& opts) {
    for (const char* key : {"lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other"})
        if (auto v = opts.get_bool(key); !v) return std::unexpected(v.error());
    (void)opts.get_raw("overlap-check");  // every check runs (the map of regions makes them cheap)
    if (auto v = opts.get_size("l2-cache-entry-size"); !v) return std::unexpected(v.error());
    for (const char* key : {"data-file", "encrypt"})
        if (opts.get_raw(key) != nullptr) return fail(ENOTSUP, std::string("qcow2: '") + key + "' is not supported");
    return {};
}

Result<CacheOptions> read_cache_options(OptionReader& opts) {
    CacheOptions c;
    auto l2 = opts.get_size("l2-cache-size");
    if (!l2) return std::unexpected(l2.error());
    auto refcount = opts.get_size("refcount-cache-size");
    if (!refcount) return std::unexpected(refcount.error());
    auto total = opts.get_size("cache-size");
    if (!total) return std::unexpected(total.error());
    auto interval = opts.get_uint64("cache-clean-interval");
    if (!interval) return std::unexpected(interval.error());
    c.l2_cache_bytes = l2->value_or(0);
    c.refcount_cache_bytes = refcount->value_or(0);
    if (*total) {
        // QEMU: cache-size is split when the others are not given.
        if (*l2 && *refcount && **l2 + **refcount > **total)
            return fail(EINVAL, "l2-cache-size + refcount-cache-size may not exceed cache-size");
        if (!*l2 && !*refcount) c.l2_cache_bytes = **total - **total / 4;
        if (!*refcount) c.refcount_cache_bytes = **total - c.l2_cache_bytes;
        if (!*l2) c.l2_cache_bytes = **total - c.refcount_cache_bytes;
    }
    c.clean_interval_s = interval->value_or(600);
    if (c.clean_interval_s > UINT32_MAX) return fail(EINVAL, "cache-clean-interval is too large");
    return c;
}

}  // namespace

Qcow2Driver::Qcow2Driver(CacheOptions cache) : cache_options_(cache) {}

Qcow2Driver::~Qcow2Driver() { detach_aio_context(); }

DriverCaps Qcow2Driver::caps() const {
    return DriverCaps{.can_write = true,
                      .can_discard = true,
                      .can_write_zeroes = header_.version >= 3,
                      .can_fua = false,
                      .can_flush = true,
                      .can_block_status = true,
                      .can_truncate = true};
}

std::optional<BackingFile> Qcow2Driver::backing_file() const {
    if (header_.backing_file.empty()) return std::nullopt;
    return BackingFile{header_.backing_file, header_.backing_format};
}

// Going read-only, the persistent bitmaps and what the caches hold are
// written back first (the file is still writable: the node reopens before
// its file does), and the bitmaps become read-only (QEMU's
// qcow2_reopen_bitmaps_ro). Going writable, the checks of a read/write
// open apply, the autoclear bits are cleared as they are then, and the
// bitmaps are marked in use and writable again (QEMU's
// qcow2_reopen_bitmaps_rw; as there, a failure leaves them read-only but
// does not fail the reopen). The node is drained.
Result<void> Qcow2Driver::reopen(bool read_only) {
    assert_in_main_thread();
    if (read_only == !writable_) return {};
    if (read_only) {
        if (!corrupt_)
            if (auto r = run_to_completion(node().ctx(), co_store_and_flush()); !r) return r;
        writable_ = false;
        bitmaps_read_only();
        return {};
    }
    if (corrupt_)
        return fail(EACCES, "qcow2: image is corrupt; cannot be opened read/write (repair it with 'qemu-img check "
                            "-r all')");
    if (header_.incompatible_features & kIncompatDirty)
        return fail(ENOTSUP, "qcow2: image was not closed cleanly (dirty bit set); repair it with 'qemu-img check "
                             "-r all' before opening it read/write");
    writable_ = true;
    if (header_.autoclear_features != kept_autoclear() || header_.stale_bitmaps) {
        auto clear = [](Qcow2Driver& d) -> Task<Result<void>> {
            auto guard = co_await d.lock_.scoped_lock();
            d.header_.autoclear_features = d.kept_autoclear();
            d.header_.stale_bitmaps = false;
            auto r = co_await d.co_write_header();
            if (r) r = co_await d.co_flush_file();
            co_return r;
        };
        if (auto r = run_to_completion(node().ctx(), clear(*this)); !r) {
            writable_ = false;
            return r;
        }
    }
    if (auto r = bitmaps_writable(); !r)
        LOG_ERROR("%s: Failed to make dirty bitmaps writable: %s", node().node_name().c_str(),
                  r.error().message.c_str());
    return {};
}

// The header is rewritten in place (one sector-aligned write of the first
// cluster's used part), so a crash leaves the old name or the new one.
Task<Result<void>> Qcow2Driver::co_change_backing_file(const std::string& file, const std::string& format) {
    assert_in_context(node().ctx());
    if (auto r = check_writable(); !r) co_return r;
    if (file.size() > kMaxBackingFileName) co_return fail(EINVAL, "qcow2: backing file name too long");
    co_await lock_.lock();
    const std::string old_file = header_.backing_file, old_format = header_.backing_format;
    header_.backing_file = file;
    header_.backing_format = file.empty() ? "" : format;
    auto r = co_await co_write_header();
    if (r) r = co_await co_flush_file();
    if (!r) {
        header_.backing_file = old_file;
        header_.backing_format = old_format;
    }
    lock_.unlock();
    co_return r;
}

// QEMU's ImageInfo fields for qcow2 (ImageInfoSpecificQCow2, SnapshotInfo).
void Qcow2Driver::add_image_info(nlohmann::json& image) const {
    image["cluster-size"] = cluster_size();
    image["dirty-flag"] = bool(header_.incompatible_features & kIncompatDirty);
    nlohmann::json data = {{"compat", header_.version >= 3 ? "1.1" : "0.10"},
                           {"refcount-bits", header_.refcount_bits()},
                           {"compression-type", header_.compression == Compression::zstd ? "zstd" : "zlib"}};
    if (header_.version >= 3) {
        data["lazy-refcounts"] = bool(header_.compatible_features & kCompatLazyRefcounts);
        data["corrupt"] = corrupt_;
        data["extended-l2"] = extended_;
    }
    if (header_.version >= 3 && !bitmap_dir_.empty()) data["bitmaps"] = bitmap_info();
    image["format-specific"] = {{"type", "qcow2"}, {"data", data}};
    if (!snapshots_.empty()) {
        nlohmann::json list = nlohmann::json::array();
        for (const Snapshot& s : snapshots_) {
            nlohmann::json item = {{"id", s.id},
                                   {"name", s.name},
                                   {"vm-state-size", s.vm_state_size},
                                   {"date-sec", s.date_sec},
                                   {"date-nsec", s.date_nsec},
                                   {"vm-clock-sec", s.vm_clock_nsec / 1'000'000'000},
                                   {"vm-clock-nsec", s.vm_clock_nsec % 1'000'000'000}};
            if (s.icount != UINT64_MAX) item["icount"] = s.icount;
            list.push_back(std::move(item));
        }
        image["snapshots"] = list;
    }
    if (!header_.backing_file.empty()) {
        image["backing-filename"] = header_.backing_file;
        if (!header_.backing_format.empty()) image["backing-filename-format"] = header_.backing_format;
    }
}

BlockEdge* Qcow2Driver::backing() const { return node().child(ChildRole::backing); }

void Qcow2Driver::size_caches() {
    // QEMU's defaults: an L2 cache that covers the whole image, up to 32
    // MiB; a refcount cache a quarter of it, at least four blocks.
    const uint64_t table = cluster_size();
    const uint64_t entry_bytes = extended_ ? 16 : 8;
    const uint64_t cover = (header_.size + cluster_size() - 1) / cluster_size() * entry_bytes;
    uint64_t l2 = cache_options_.l2_cache_bytes ? cache_options_.l2_cache_bytes : std::min(cover, kDefaultL2CacheMax);
    uint64_t refcount = cache_options_.refcount_cache_bytes ? cache_options_.refcount_cache_bytes : l2 / 4;
    const uint64_t l2_tables = std::max(kMinL2CacheTables, (l2 + table - 1) / table);
    const uint64_t ref_tables = std::max(kMinRefcountCacheTables, (refcount + table - 1) / table);
    l2_cache_ = std::make_unique<TableCache>(table, l2_tables);
    refblock_cache_ = std::make_unique<TableCache>(table, ref_tables);
}

Task<Result<void>> Qcow2Driver::co_read_header() {
    const uint64_t file_size = file().child().length();
    std::vector<uint8_t> head(std::min<uint64_t>(file_size, kHeaderProbeBytes));
    if (auto r = co_await co_read_file(0, head.data(), head.size()); !r) co_return r;
    auto header = parse_header(head, file_size);
    // The extensions and the backing file name may reach to the end of the
    // first cluster.
    if (header && header->cluster_size() > head.size() && file_size > head.size()) {
        head.resize(std::min<uint64_t>(file_size, header->cluster_size()));
        if (auto r = co_await co_read_file(0, head.data(), head.size()); !r) co_return r;
        header = parse_header(head, file_size);
    }
    if (!header) co_return std::unexpected(header.error());
    header_ = std::move(*header);
    extended_ = header_.extended_l2();
    l2_entries_ = header_.l2_entries();
    l2_bits_ = uint32_t(__builtin_ctzll(l2_entries_));
    refblock_entries_ = cluster_size() * 8 / header_.refcount_bits();
    refcount_max_ = header_.refcount_order == 6 ? UINT64_MAX : (1ull << header_.refcount_bits()) - 1;
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_open() {
    assert_in_context(node().ctx());
    const bool writable = !node().read_only();
    auto guard = co_await lock_.scoped_lock();  // (reopen() repeats the checks of a writable open)
    if (auto r = co_await co_read_header(); !r) co_return r;
    size_caches();
    if (auto r = co_await co_read_tables(); !r) co_return r;
    if (header_.incompatible_features & kIncompatCorrupt) {
        if (writable)
            co_return fail(EACCES, "qcow2: image is corrupt; cannot be opened read/write (repair it with "
                                   "'qemu-img check -r all')");
        corrupt_ = true;
    }
    if (writable && (header_.incompatible_features & kIncompatDirty))
        co_return fail(ENOTSUP, "qcow2: image was not closed cleanly (dirty bit set); repair it with "
                                "'qemu-img check -r all' before opening it read/write");
    writable_ = writable;
    // The bitmaps' directory, tables and data (made the node's bitmaps in
    // finish_open); their clusters join the metadata regions.
    if (auto r = co_await co_read_bitmaps(); !r) co_return r;
    // Metadata that overlaps other metadata: readable, never written.
    if (!open_problem_.empty()) co_await co_signal_corruption(open_problem_);
    start_clean_timer(node().ctx());
    if (writable_ && !corrupt_ && (header_.autoclear_features != kept_autoclear() || header_.stale_bitmaps)) {
        // Bits for features this writer does not keep consistent are
        // cleared, as the format requires of such writers; so is a stale
        // bitmaps extension (QEMU drops it too).
        header_.autoclear_features = kept_autoclear();
        header_.stale_bitmaps = false;
        if (auto r = co_await co_write_header(); !r) co_return r;
        if (auto r = co_await co_flush_file(); !r) co_return r;
    }
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_tables() {
    const uint64_t file_size = file().child().length();
    // The header's tables.
    l1_.resize(header_.l1_size);
    if (header_.l1_size) {
        std::vector<uint8_t> raw(uint64_t(header_.l1_size) * 8);
        if (auto r = co_await co_read_file(header_.l1_table_offset, raw.data(), raw.size()); !r) co_return r;
        for (size_t i = 0; i < l1_.size(); i++) {
            l1_[i] = load_be64(&raw[8 * i]);
            if (l1_[i] & kL1ReservedMask) LOG_WARN("qcow2: L1 entry %zu has reserved bits set", i);
        }
        note_overlap(add_region(header_.l1_table_offset, raw.size(), Region::l1));
    }
    const uint64_t reftable_bytes = uint64_t(header_.refcount_table_clusters) * cluster_size();
    {
        std::vector<uint8_t> raw(reftable_bytes);
        if (auto r = co_await co_read_file(header_.refcount_table_offset, raw.data(), raw.size()); !r) co_return r;
        reftable_.resize(reftable_bytes / 8);
        for (size_t i = 0; i < reftable_.size(); i++) reftable_[i] = load_be64(&raw[8 * i]) & ~uint64_t(511);
        note_overlap(add_region(header_.refcount_table_offset, reftable_bytes, Region::reftable));
    }
    note_overlap(add_region(0, cluster_size(), Region::header));
    if (header_.nb_snapshots) {
        const uint64_t want = std::min(max_snapshot_table_bytes(header_.nb_snapshots), file_size - header_.snapshots_offset);
        std::vector<uint8_t> raw(want);
        if (auto r = co_await co_read_file(header_.snapshots_offset, raw.data(), raw.size()); !r) co_return r;
        auto snapshots = parse_snapshots(raw, header_.nb_snapshots, header_, file_size, snapshot_table_bytes_);
        if (!snapshots) co_return std::unexpected(snapshots.error());
        snapshots_ = std::move(*snapshots);
        note_overlap(add_region(header_.snapshots_offset, snapshot_table_bytes_, Region::snapshots));
        for (const Snapshot& s : snapshots_)
            if (s.l1_size) note_overlap(add_region(s.l1_table_offset, uint64_t(s.l1_size) * 8, Region::l1));
    }
    // Refcount blocks and active L2 tables are metadata too; and the end of
    // the allocated clusters decides where the file may grow.
    image_end_ = cluster_size();
    for (uint64_t i = 0; i < reftable_.size(); i++) {
        const uint64_t off = reftable_[i];
        if (off == 0) continue;
        if (offset_in_cluster(off) || off > file_size - std::min(file_size, cluster_size()))
            co_return fail(EINVAL, "qcow2: refcount block " + std::to_string(i) + " is outside the image file");
        if (auto overlap = add_region(off, cluster_size(), Region::refblock)) {
            // Not read as a refcount block: it is something else.
            note_overlap(overlap);
            continue;
        }
        // The last refcount block in use bounds the allocated clusters.
        auto block = co_await co_get_table(*refblock_cache_, off, true);
        if (!block) co_return std::unexpected(block.error());
        for (uint64_t j = refblock_entries_; j-- > 0;)
            if (get_refcount(block->data(), j, header_.refcount_order) != 0) {
                image_end_ = std::max(image_end_, ((i * refblock_entries_) + j + 1) * cluster_size());
                break;
            }
    }
    for (uint64_t i = 0; i < l1_.size(); i++) {
        const uint64_t off = l1_[i] & kOffsetMask;
        if (off == 0) continue;
        if (off > file_size - std::min(file_size, cluster_size()))
            co_return fail(EINVAL, "qcow2: L2 table " + std::to_string(i) + " is outside the image file");
        note_overlap(add_region(off, cluster_size(), Region::l2));
    }
    // Bitmap directories and tables, and anything else a reader of the
    // image does not know of, are guarded by their refcounts: allocation
    // never hands out a cluster that has one.
    fresh_from_ = std::max((file_size + cluster_size() - 1) & ~(cluster_size() - 1), image_end_);
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_write_header() {
    auto bytes = encode_header(header_);
    if (!bytes) co_return std::unexpected(bytes.error());
    // Only what the header uses; the rest of the cluster is not touched.
    uint64_t used = bytes->size();
    while (used > 0 && (*bytes)[used - 1] == 0) used--;
    used = std::max<uint64_t>((used + 511) & ~uint64_t(511), 512);
    co_return co_await co_write_file(0, bytes->data(), std::min<uint64_t>(used, bytes->size()));
}

Task<Result<void>> Qcow2Driver::co_write_incompatible_features() {
    uint8_t field[8];
    store_be64(field, header_.incompatible_features);
    co_return co_await co_write_file(72, field, 8);
}

Task<void> Qcow2Driver::co_signal_corruption(const std::string& what) {
    LOG_ERROR("qcow2: node '%s': %s; the image is marked corrupt and no longer written", node().node_name().c_str(),
              what.c_str());
    if (corrupt_) co_return;
    corrupt_ = true;
    if (writable_ && header_.version >= 3) {
        header_.incompatible_features |= kIncompatCorrupt;
        if (auto r = co_await co_write_incompatible_features(); r) (void)co_await co_flush_file();
    }
}

void Qcow2Driver::note_overlap(const std::optional<std::string>& overlap) {
    if (overlap && open_problem_.empty()) open_problem_ = *overlap;
}

Result<void> Qcow2Driver::check_writable() const {
    if (corrupt_) return fail(EIO, "qcow2: node '" + node().node_name() + "': image is corrupt");
    return {};
}

// QEMU's qcow2_close: the persistent bitmaps go into the image (a failure
// loses them, as in QEMU, but the rest is still written back).
Task<Result<void>> Qcow2Driver::co_close() {
    assert_in_context(node().ctx());
    if (!writable_ || corrupt_) co_return Result<void>{};
    auto r = co_await co_store_and_flush();
    if (!r && !corrupt_) {
        LOG_ERROR("Lost persistent bitmaps during inactivation of node '%s': %s", node().node_name().c_str(),
                  r.error().message.c_str());
        r = co_await co_flush();
        if (r) r = co_await co_flush_file();
    }
    // Only what co_grow_file() added beyond any cluster goes.
    if (r) r = co_await co_trim_file_tail();
    co_return r;
}

// The cache-clean timer lives in the node's context: made, armed and
// destroyed there.
void Qcow2Driver::detach_aio_context() {
    if (clean_timer_) run_in_context_sync(clean_timer_->context(), [this] { clean_timer_.reset(); });
}

void Qcow2Driver::attach_aio_context(AioContext& ctx) {
    run_in_context_sync(ctx, [this, &ctx] { start_clean_timer(ctx); });
}

void Qcow2Driver::start_clean_timer(AioContext& ctx) {
    assert_in_context(ctx);
    if (cache_options_.clean_interval_s == 0 || !l2_cache_) return;
    const int64_t interval_ns = int64_t(cache_options_.clean_interval_s) * 1'000'000'000;
    clean_timer_ = std::make_unique<Timer>(ctx, [this, interval_ns] {
        // Only clean, unpinned tables go: safe beside a coroutine holding
        // lock_ (what it uses is pinned).
        l2_cache_->clean();
        refblock_cache_->clean();
        clean_timer_->arm_in(interval_ns);
    });
    clean_timer_->arm_in(interval_ns);
}

}  // namespace ioplane::block::qcow2

namespace ioplane::block {

Result<Opened> open_qcow2(OptionReader& opts, const OpenContext& oc) {
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    if (auto r = qcow2::read_accepted_options(opts); !r) return std::unexpected(r.error());
    auto cache = qcow2::read_cache_options(opts);
    if (!cache) return std::unexpected(cache.error());
    auto backing = read_backing_option(opts);
    if (!backing) return std::unexpected(backing.error());
    // The header is read in co_open, through the file edge.
    return Opened{.driver = std::make_unique<qcow2::Qcow2Driver>(*cache),
                  .children = {{ChildRole::file, *file}},
                  .backing = std::move(*backing)};
}

}  // namespace ioplane::block
