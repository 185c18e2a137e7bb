// Guest I/O: reads through the chain, writes in place or into newly
// allocated clusters with copy-on-write, zeroes and discards as metadata,
// flushes in the order crash safety needs (docs/QCOW2.md).
//
// lock_ is held for lookups and metadata changes, never across a guest data
// transfer: many requests move data at once; allocating writes to the same
// guest clusters are ordered by the Allocation records (each cluster is
// allocated once).
#include <algorithm>
#include <cstring>

#include "../io_vector.h"
#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

// Past this many deferred frees a zeroing or discarding request flushes, so
// that freed clusters become reusable and the list stays bounded.
constexpr size_t kMaxPendingFrees = 4096;
// The most bytes one allocation step takes (bounded memory per step).
constexpr uint64_t kMaxAllocationBytes = 4u << 20;

bool all_zero(const std::vector<uint8_t>& buf) {
    return std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; });
}

// Bits of the subclusters of a cluster that [a, b) (offsets in the
// cluster) touches.
uint32_t subcluster_mask(uint64_t a, uint64_t b, uint64_t subcluster) {
    if (a >= b) return 0;
    const uint32_t first = uint32_t(a / subcluster), last = uint32_t((b - 1) / subcluster);
    const uint64_t bits = ((2ull << last) - 1) & ~((1ull << first) - 1);
    return uint32_t(bits);
}

}  // namespace

Task<Result<void>> Qcow2Driver::co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    assert_in_context(node().ctx());
    for (uint64_t done = 0; done < bytes;) {
        co_await lock_.lock();
        auto m = co_await co_map(offset + done, bytes - done);
        lock_.unlock();
        if (!m) co_return std::unexpected(m.error());
        const uint64_t n = std::min(m->bytes, bytes - done);
        Result<void> r;
        if (done == 0 && n == bytes) {
            r = co_await co_read_mapped(offset, *m, n, iov);
        } else {
            const std::vector<iovec> part = iov_slice(iov, done, n);
            r = co_await co_read_mapped(offset + done, *m, n, part);
        }
        if (!r) co_return r;
        done += n;
    }
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_mapped(uint64_t offset, const Mapping& m, uint64_t n,
                                               std::span<const iovec> iov) {
    switch (m.kind) {
        case Mapping::unallocated: co_return co_await co_read_backing(offset, n, iov);
        case Mapping::zero: iov_zero(iov, 0, n); co_return Result<void>{};
        case Mapping::data:
            if (m.host + n > file().child().length()) {
                co_await co_signal_corruption("data cluster at " + std::to_string(m.host) +
                                              " is past the end of the image file");
                co_return fail(EIO, "qcow2: node '" + node().node_name() + "': data cluster past the end of the file");
            }
            co_return co_await file().co_preadv(m.host, n, iov);
        case Mapping::compressed: {
            std::vector<uint8_t> cluster(cluster_size());
            if (auto r = co_await co_read_compressed(m.l2_entry, cluster.data()); !r) co_return r;
            buffer_to_iov(cluster.data() + offset_in_cluster(offset), iov, 0, n);
            co_return Result<void>{};
        }
    }
    co_return fail(EIO, "qcow2: bad mapping");
}

// What the chain below supplies: the backing node's data up to its end,
// zeroes past it (or without a backing node).
Task<Result<void>> Qcow2Driver::co_read_backing(uint64_t offset, uint64_t n, std::span<const iovec> iov) {
    BlockEdge* b = backing();
    uint64_t from_backing = 0;
    if (b != nullptr && offset < b->child().length()) from_backing = std::min(n, b->child().length() - offset);
    if (from_backing == n) co_return co_await b->co_preadv(offset, n, iov);
    if (from_backing > 0) {
        const std::vector<iovec> part = iov_slice(iov, 0, from_backing);
        if (auto r = co_await b->co_preadv(offset, from_backing, part); !r) co_return r;
    }
    iov_zero(iov, from_backing, n - from_backing);
    co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_guest(uint64_t offset, uint64_t n, uint8_t* buf) {
    iovec v{buf, n};
    co_return co_await co_preadv(offset, n, std::span(&v, 1));
}

Task<Result<void>> Qcow2Driver::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t) {
    assert_in_context(node().ctx());
    if (auto r = check_writable(); !r) co_return r;
    for (uint64_t done = 0; done < bytes;) {
        const uint64_t cur = offset + done, left = bytes - done;
        co_await lock_.lock();
        auto m = co_await co_map(cur, left);
        if (!m) {
            lock_.unlock();
            co_return std::unexpected(m.error());
        }
        if (m->kind == Mapping::data && m->copied) {
            // In place: the cluster is this image's alone.
            const uint64_t n = std::min(m->bytes, left);
            auto ok = co_await co_check_overlap(m->host, n, Region::data);
            lock_.unlock();
            if (!ok) co_return ok;
            Result<void> r;
            if (done == 0 && n == bytes) {
                r = co_await file().co_pwritev(m->host, n, iov);
            } else {
                const std::vector<iovec> part = iov_slice(iov, done, n);
                r = co_await file().co_pwritev(m->host, n, part);
            }
            if (!r) co_return r;
            done += n;
            continue;
        }
        lock_.unlock();
        const std::vector<iovec> rest = iov_slice(iov, done, left);
        auto n = co_await co_write_allocating(cur, left, rest);
        if (!n) co_return std::unexpected(n.error());
        done += *n;
    }
    co_return Result<void>{};
}

Task<bool> Qcow2Driver::co_wait_for_allocations(uint64_t first, uint64_t last) {
    for (Allocation* a : allocations_)
        if (a->first <= last && first <= a->last) {
            co_await a->waiters.wait(lock_);
            co_return true;
        }
    co_return false;
}

// One step of an allocating write, from `offset`: a run of guest clusters
// that get new host clusters (unallocated, zero, compressed, or shared with
// a snapshot), or one cluster whose unallocated subclusters are filled in
// place. The bytes of the first and last cluster (or subcluster) that the
// write does not cover are copied from what the guest sees there now
// (copy-on-write); data and copies go to the file in one write; then the
// L2 entries link them. Returns the bytes written (0: the mapping changed
// meanwhile, the caller looks again).
Task<Result<uint64_t>> Qcow2Driver::co_write_allocating(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    const uint64_t cs = cluster_size(), scs = subcluster_size();
    co_await lock_.lock();
    const uint64_t c0 = offset / cs;
    const uint64_t table_last = (c0 / l2_entries_ + 1) * l2_entries_ - 1;
    const uint64_t wanted_last =
        std::min({(offset + bytes - 1) / cs, table_last, c0 + std::max<uint64_t>(1, kMaxAllocationBytes / cs) - 1});
    while (co_await co_wait_for_allocations(c0, wanted_last)) {
    }
    auto l2 = co_await co_l2_for_read(offset);
    if (!l2) {
        lock_.unlock();
        co_return std::unexpected(l2.error());
    }
    struct Old {
        uint64_t entry = 0, bitmap = 0;
    };
    auto old_at = [&](uint64_t c) {
        if (!*l2) return Old{};
        const uint64_t idx = c & (l2_entries_ - 1);
        return Old{l2_word(*l2, idx), l2_bitmap(*l2, idx)};
    };
    auto host_of = [](const Old& o) { return (o.entry & kOflagCompressed) ? 0 : o.entry & kOffsetMask; };
    // Writable in place as it is (the mapping changed since the caller looked).
    auto in_place = [&](const Old& o) { return host_of(o) && (o.entry & kOflagCopied) && !extended_ && !(header_.version >= 3 && (o.entry & kOflagZero)); };
    // Extended L2: this image's own cluster, some subclusters unallocated.
    auto reusable = [&](const Old& o) { return extended_ && host_of(o) && (o.entry & kOflagCopied); };
    // The old cluster holds data the new one must carry over whole.
    auto carries = [&](const Old& o) {
        return (o.entry & kOflagCompressed) || (host_of(o) && !(o.entry & kOflagCopied) &&
                                                 (!extended_ || (o.bitmap & 0xffffffffu)) &&
                                                 !(!extended_ && header_.version >= 3 && (o.entry & kOflagZero)));
    };

    const Old first = old_at(c0);
    if (in_place(first)) {
        lock_.unlock();
        co_return 0;
    }
    const bool reuse = reusable(first);
    uint64_t c1 = c0;
    if (!reuse)
        while (c1 < wanted_last) {
            const Old next = old_at(c1 + 1);
            if (in_place(next) || reusable(next)) break;
            c1++;
        }
    const uint64_t n = c1 - c0 + 1;
    const uint64_t run_start = c0 * cs, run_end = (c1 + 1) * cs;
    const uint64_t write_end = std::min(offset + bytes, run_end);
    const Old last = old_at(c1);

    // Copy-on-write ranges. Without subclusters (or when the old cluster's
    // data is carried) the rest of the cluster; with subclusters, the rest
    // of the subclusters the write touches, where they hold no data yet.
    auto sub_allocated = [&](const Old& o, uint64_t guest) {
        return reuse && ((o.bitmap >> (offset_in_cluster(guest) / scs)) & 1);
    };
    uint64_t head_start = offset, tail_end = write_end;
    if (!extended_ || carries(first)) head_start = run_start;
    else if (!sub_allocated(first, offset)) head_start = offset / scs * scs;
    if (!extended_ || carries(last)) tail_end = run_end;
    else if (!sub_allocated(last, write_end - 1)) tail_end = std::min(run_end, (write_end + scs - 1) / scs * scs);

    Allocation allocation{c0, c1, {}};
    allocations_.push_back(&allocation);
    auto finish = [&] {
        std::erase(allocations_, &allocation);
        allocation.waiters.restart_all();
        lock_.unlock();
    };
    uint64_t host = host_of(first);
    bool fresh = false;
    if (!reuse) {
        auto got = co_await co_alloc_clusters(n);
        if (!got) {
            finish();
            co_return std::unexpected(got.error());
        }
        host = got->offset;
        fresh = got->fresh;
    }
    if (auto r = co_await co_check_overlap(host, n * cs, Region::data); !r) {
        finish();
        co_return std::unexpected(r.error());
    }
    l2->reset();
    lock_.unlock();

    // The copies and the data, in one write.
    std::vector<uint8_t> head(offset - head_start), tail(tail_end - write_end);
    Result<void> r;
    if (!head.empty()) r = co_await co_read_guest(head_start, head.size(), head.data());
    if (r && !tail.empty()) r = co_await co_read_guest(write_end, tail.size(), tail.data());
    // Fresh clusters read as zeroes already: copies of zeroes need no write.
    if (fresh && all_zero(head)) {
        head_start = offset;
        head.clear();
    }
    if (fresh && all_zero(tail)) {
        tail_end = write_end;
        tail.clear();
    }
    if (r) {
        std::vector<iovec> v;
        if (!head.empty()) v.push_back({head.data(), head.size()});
        for (const iovec& d : iov_slice(iov, 0, write_end - offset)) v.push_back(d);
        if (!tail.empty()) v.push_back({tail.data(), tail.size()});
        r = co_await file().co_pwritev(host + (head_start - run_start), tail_end - head_start, v);
    }
    co_await lock_.lock();
    if (!r) {
        finish();  // the clusters leak (their refcounts are set): harmless
        co_return std::unexpected(r.error());
    }

    // Link.
    auto l2w = co_await co_l2_for_write(offset);
    if (!l2w) {
        finish();
        co_return std::unexpected(l2w.error());
    }
    for (uint64_t c = c0; c <= c1; c++) {
        const uint64_t idx = c & (l2_entries_ - 1);
        const Old o{l2_word(*l2w, idx), l2_bitmap(*l2w, idx)};
        const uint64_t new_host = reuse ? host : host + (c - c0) * cs;
        uint64_t bitmap = 0;
        if (extended_) {
            const uint64_t a = std::max(offset, c * cs) - c * cs, b = std::min(write_end, (c + 1) * cs) - c * cs;
            const uint32_t touched = subcluster_mask(a, b, scs);
            const uint32_t alloc = carries(o) ? 0xffffffffu : (reuse ? uint32_t(o.bitmap) : 0) | touched;
            const uint32_t zero = carries(o) ? 0 : uint32_t(o.bitmap >> 32) & ~alloc;
            bitmap = uint64_t(zero) << 32 | alloc;
        }
        set_l2(*l2w, idx, new_host | kOflagCopied, bitmap);
        if (!reuse) free_entry_later(o.entry);
    }
    // Crash safety: the data (and the copies) reach the disk before the L2
    // table that points to them.
    l2_needs_flush_ = true;
    finish();
    co_return write_end - offset;
}

Task<Result<void>> Qcow2Driver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    assert_in_context(node().ctx());
    if (auto r = check_writable(); !r) co_return r;
    // Version 2 has no zero flag: only where nothing shows through from
    // below can clusters simply go.
    if (header_.version < 3 && backing() != nullptr) co_return co_await Driver::co_pwrite_zeroes(offset, bytes, flags);
    const uint64_t unit = header_.version >= 3 ? subcluster_size() : cluster_size();
    const uint64_t end = offset + bytes;
    uint64_t mid_start = std::min((offset + unit - 1) / unit * unit, end);
    uint64_t mid_end = std::max(end / unit * unit, mid_start);
    if (end == header_.size) mid_end = std::max(mid_start, (end + unit - 1) / unit * unit);
    if (offset < mid_start)
        if (auto r = co_await Driver::co_pwrite_zeroes(offset, mid_start - offset, flags); !r) co_return r;
    if (mid_start < mid_end)
        if (auto r = co_await co_zero_clusters(mid_start, std::min(mid_end, header_.size) - mid_start, false,
                                               flags & kMayUnmap);
            !r)
            co_return r;
    if (mid_end < end) co_return co_await Driver::co_pwrite_zeroes(mid_end, end - mid_end, flags);
    co_return Result<void>{};
}

// Discards whole clusters (a partial one is left as it is, as QEMU does);
// the last cluster counts as whole up to the image's end.
Task<Result<void>> Qcow2Driver::co_pdiscard(uint64_t offset, uint64_t bytes) {
    assert_in_context(node().ctx());
    if (auto r = check_writable(); !r) co_return r;
    const uint64_t cs = cluster_size();
    const uint64_t start = (offset + cs - 1) / cs * cs;
    uint64_t end = (offset + bytes) / cs * cs;
    if (offset + bytes == header_.size) end = header_.size;
    if (start >= end) co_return Result<void>{};
    co_return co_await co_zero_clusters(start, end - start, true, true);
}

Task<Result<void>> Qcow2Driver::co_zero_clusters(uint64_t offset, uint64_t bytes, bool discard, bool unmap) {
    const uint64_t cs = cluster_size(), end = offset + bytes;
    const uint64_t unit = discard || !extended_ ? cs : subcluster_size();
    std::vector<std::pair<uint64_t, uint64_t>> as_data;  // partly zeroed compressed clusters
    co_await lock_.lock();
    Result<void> r;
    while (offset < end && r) {
        const uint64_t c0 = offset / cs;
        const uint64_t chunk_end = std::min(end, (c0 / l2_entries_ + 1) * l2_entries_ * cs);
        const uint64_t c_last = (chunk_end - 1) / cs;
        if (co_await co_wait_for_allocations(c0, c_last)) continue;
        const bool hide_backing = backing() != nullptr;
        {
            auto existing = co_await co_l2_for_read(offset);
            if (!existing) {
                r = std::unexpected(existing.error());
                break;
            }
            // Unallocated with nothing below already reads as zeroes.
            if (!*existing && !hide_backing) {
                offset = chunk_end;
                continue;
            }
        }
        auto l2 = co_await co_l2_for_write(offset);
        if (!l2) {
            r = std::unexpected(l2.error());
            break;
        }
        for (uint64_t c = c0; c <= c_last; c++) {
            const uint64_t idx = c & (l2_entries_ - 1);
            const uint64_t e = l2_word(*l2, idx), bm = l2_bitmap(*l2, idx);
            const bool compressed = e & kOflagCompressed;
            const uint64_t host = compressed ? 0 : e & kOffsetMask;
            const bool copied = e & kOflagCopied;
            const uint64_t a = std::max(offset, c * cs) - c * cs;
            const uint64_t b = std::min(chunk_end, (c + 1) * cs) - c * cs;
            uint64_t new_entry = 0, new_bitmap = 0;
            if (!extended_) {
                if (header_.version >= 3 && (!discard || hide_backing)) new_entry = kOflagZero;
                // A zeroed cluster of its own keeps its space unless unmap
                // is allowed (preallocation stays preallocated).
                if (header_.version >= 3 && !discard && !unmap && host && copied) new_entry |= host | kOflagCopied;
            } else {
                const uint32_t mask = (b - a == cs) ? 0xffffffffu : subcluster_mask(a, b, unit);
                if (compressed && mask != 0xffffffffu) {
                    as_data.emplace_back(c * cs + a, b - a);
                    continue;
                }
                const uint32_t alloc = compressed ? 0 : uint32_t(bm) & ~mask;
                const uint32_t zero = (discard && !hide_backing) ? uint32_t(bm >> 32) & ~mask : uint32_t(bm >> 32) | mask;
                new_bitmap = uint64_t(zero & ~alloc) << 32 | alloc;
                if (alloc != 0 || (host && copied && !discard && !unmap)) new_entry = e;
            }
            if (compressed || (host && !(new_entry & kOffsetMask))) free_entry_later(e);
            set_l2(*l2, idx, new_entry, new_bitmap);
        }
        offset = chunk_end;
        if (pending_frees_.size() > kMaxPendingFrees) r = co_await co_flush_locked();
    }
    lock_.unlock();
    for (auto [at, n] : as_data)
        if (r) r = co_await Driver::co_pwrite_zeroes(at, n, 0);
    co_return r;
}

// A corrupt image gets no more metadata writes: what is cached stays
// unwritten (the image was refused writes from the moment it was found).
Task<Result<void>> Qcow2Driver::co_flush() {
    assert_in_context(node().ctx());
    if (!writable_ || corrupt_) co_return Result<void>{};
    co_await lock_.lock();
    auto r = co_await co_flush_locked();
    lock_.unlock();
    co_return r;
}

// Refcounts, then (after a flush) the L2 tables that rely on them; then the
// deferred frees, whose L2 changes are now on disk. The request path
// flushes the file after this.
Task<Result<void>> Qcow2Driver::co_flush_locked() {
    if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return r;
    if (l2_needs_flush_)
        if (auto r = co_await co_flush_file(); !r) co_return r;
    if (auto r = co_await co_write_dirty(*l2_cache_); !r) co_return r;
    if (!pending_frees_.empty()) {
        if (auto r = co_await co_flush_file(); !r) co_return r;
        if (auto r = co_await co_apply_pending_frees(); !r) co_return r;
        if (auto r = co_await co_write_dirty(*refblock_cache_); !r) co_return r;
    }
    co_return Result<void>{};
}

Task<Result<BlockStatus>> Qcow2Driver::co_block_status(uint64_t offset, uint64_t bytes, StatusQuery) {
    assert_in_context(node().ctx());
    co_await lock_.lock();
    auto m = co_await co_map(offset, bytes);
    lock_.unlock();
    if (!m) co_return std::unexpected(m.error());
    const uint64_t n = std::min(m->bytes, bytes);
    switch (m->kind) {
        case Mapping::unallocated: co_return BlockStatus{.bytes = n, .data = false, .allocated = false};
        case Mapping::zero: co_return BlockStatus{.bytes = n, .data = false, .zero = true};
        case Mapping::data: co_return BlockStatus{.bytes = n, .file = &file().child(), .offset = m->host};
        case Mapping::compressed: co_return BlockStatus{.bytes = n};
    }
    co_return fail(EIO, "qcow2: bad mapping");
}

}  // namespace ioplane::block::qcow2
