#include "copy_before_write.h"

#include <algorithm>

#include "drivers.h"
#include "graph_internal.h"
#include "io_vector.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/thread_contract.h"
#include "ioplane/core/timer.h"
#include "tracked_request.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kDefaultChunk = 64 * 1024;  // QEMU's BLOCK_COPY_CLUSTER_SIZE_DEFAULT
constexpr uint64_t kMaxCopy = 1024 * 1024;     // bytes one copy moves at most (QEMU's BLOCK_COPY_MAX_BUFFER)
constexpr uint64_t kBufferAlign = 4096;
constexpr size_t kKeptBuffers = 16;  // a backup's copies in flight (BackupJob's kMaxCopies)

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

// Registers a range in one of the lists for its scope; at the end, those
// waiting for it run again (after it left the list, so that they do not
// find it once more).
class CopyBeforeWrite::BusyRange {
public:
    BusyRange(std::list<Busy>& list, uint64_t offset, uint64_t end) : list_(list) {
        list_.emplace_front();
        it_ = list_.begin();
        it_->offset = offset;
        it_->end = end;
    }
    ~BusyRange() {
        std::list<Busy> gone;
        gone.splice(gone.begin(), list_, it_);
        gone.front().waiters.restart_all();
    }
    BusyRange(const BusyRange&) = delete;
    BusyRange& operator=(const BusyRange&) = delete;

private:
    std::list<Busy>& list_;
    std::list<Busy>::iterator it_;
};

CopyBeforeWrite::CopyBeforeWrite(uint64_t length, uint64_t chunk, const DirtyBits* initial, OnCbwError on_error,
                                 int64_t timeout_ns)
    : chunk_(chunk),
      on_error_(on_error),
      timeout_ns_(timeout_ns),
      pending_(length, chunk),
      access_(length, chunk),
      done_(length, chunk),
      buffers_(kBufferAlign, std::max(kMaxCopy, chunk), kKeptBuffers) {
    if (initial) pending_.merge(*initial);
    else pending_.set_all();
    access_ = pending_;
}

CopyBeforeWrite::Busy* CopyBeforeWrite::find_overlap(std::list<Busy>& list, uint64_t offset, uint64_t end) {
    for (Busy& b : list)
        if (b.offset < end && offset < b.end) return &b;
    return nullptr;
}

uint32_t CopyBeforeWrite::target_write_flags() const {
    for (const BlockEdge* e = target().child().chain_child(); e; e = e->child().chain_child())
        if (&e->child() == &edge().child()) return kSerialising;
    return 0;
}

Task<std::optional<CopyBeforeWrite::CopyError>> CopyBeforeWrite::co_copy(uint64_t offset, uint64_t bytes,
                                                                         const bool* stop) {
    assert_in_context(node().ctx());
    const uint64_t length = pending_.length();
    const uint64_t end = std::min(align_up(offset + bytes, chunk_), length);
    uint64_t pos = align_down(offset, chunk_);
    while (pos < end && !(stop && *stop)) {
        // A copy of these chunks in flight: wait for it, then look again
        // (it may have failed and left its chunks pending).
        if (Busy* busy = find_overlap(copies_, pos, end)) {
            co_await busy->waiters.wait();
            continue;
        }
        const auto extent = pending_.next_dirty_extent(pos, end - pos, kMaxCopy);
        if (!extent) break;
        pending_.reset(extent->offset, extent->bytes);
        std::optional<CopyError> error;
        {
            BusyRange busy(copies_, extent->offset, extent->offset + extent->bytes);
            error = co_await co_copy_run(extent->offset, extent->bytes);
        }
        if (error) {
            pending_.set(extent->offset, extent->bytes);
            co_return error;
        }
        if (progress_) progress_(extent->bytes);
        pos = extent->offset + extent->bytes;
    }
    co_return std::nullopt;
}

// One run of chunks: zeroes where the source reads as zeroes (without
// deallocating: a fleecing target must not fall through to its backing
// file), else the data.
Task<std::optional<CopyBeforeWrite::CopyError>> CopyBeforeWrite::co_copy_run(uint64_t offset, uint64_t bytes) {
    const uint32_t flags = target_write_flags();
    auto status = co_await edge().co_block_status(offset, bytes, StatusQuery::quick);
    if (status && status->zero && status->bytes >= bytes) {
        auto r = co_await target().co_pwrite_zeroes(offset, bytes, flags);
        if (!r) co_return CopyError{r.error(), false};
        co_return std::nullopt;
    }
    const BufferPool::Lease buf = buffers_.take(bytes);
    if (!buf) co_return CopyError{Error{ENOMEM, "copy-before-write: no memory for a copy"}, true};
    const iovec iov = buf.first(bytes);
    auto r = co_await edge().co_preadv(offset, bytes, std::span(&iov, 1));
    if (!r) co_return CopyError{r.error(), true};
    r = co_await target().co_pwritev(offset, bytes, std::span(&iov, 1), flags);
    if (!r) co_return CopyError{r.error(), false};
    co_return std::nullopt;
}

// QEMU's cbw_do_copy_before_write: copy, record the chunks as the
// snapshot's in the target, and wait for snapshot reads of the source
// there to end before the source changes.
Task<Result<void>> CopyBeforeWrite::co_before_write(uint64_t offset, uint64_t bytes) {
    if (snapshot_error_) co_return Result<void>{};
    const uint64_t start = align_down(offset, chunk_);
    const uint64_t end = std::min(align_up(offset + bytes, chunk_), pending_.length());
    std::optional<CopyError> error;
    if (timeout_ns_ > 0) error = co_await co_copy_with_timeout(start, end - start);
    else error = co_await co_copy(start, end - start);
    if (error) {
        if (on_error_ == OnCbwError::break_guest_write) co_return std::unexpected(error->error);
        LOG_WARN("copy-before-write node '%s': a copy failed, the snapshot is broken: %s", node().node_name().c_str(),
                 error->error.describe().c_str());
        if (!snapshot_error_) snapshot_error_ = error->error;
    } else {
        done_.set(start, end - start);
    }
    while (Busy* read = find_overlap(snapshot_reads_, start, end)) co_await read->waiters.wait();
    co_return Result<void>{};
}

struct CopyBeforeWrite::TimedCopy {
    bool finished = false;  // the copy ended (error says how)
    bool stop = false;      // the waiter gave up: copy no further runs
    std::optional<CopyError> error;
    CoQueue done;
};

// QEMU's block_copy with a timeout (qemu_co_timeout): the copy runs in a
// coroutine of its own, which this one waits for until the timer fires.
Task<std::optional<CopyBeforeWrite::CopyError>> CopyBeforeWrite::co_copy_with_timeout(uint64_t offset,
                                                                                      uint64_t bytes) {
    auto copy = std::make_shared<TimedCopy>();
    spawn_now(co_copy_in_background(copy, node().shared_from_this(), offset, bytes));  // counted at once
    bool timed_out = false;
    Timer timer(node().ctx(), [&timed_out, copy] {
        timed_out = true;
        copy->done.restart_all();
    });
    timer.arm_in(timeout_ns_);
    co_await copy->done.wait_while([&timed_out, &copy] { return !copy->finished && !timed_out; });
    if (copy->finished) co_return copy->error;
    copy->stop = true;
    co_return CopyError{Error{ETIMEDOUT, "copy-before-write: the copy took longer than cbw-timeout"}, false};
}

Task<void> CopyBeforeWrite::co_copy_in_background(std::shared_ptr<TimedCopy> copy, std::shared_ptr<BlockNode> keep,
                                                  uint64_t offset, uint64_t bytes) {
    {
        // Counted in the node from before the guest write it serves ends:
        // a drain of the node waits for this copy too.
        NodeRequest counted(*keep, offset, bytes);
        copy->error = co_await co_copy(offset, bytes, &copy->stop);
        copy->finished = true;
        copy->done.restart_all();
    }
    aio_wait_kick();  // a drain waiting for the count to drop
}

Task<Result<void>> CopyBeforeWrite::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                               uint32_t flags) {
    auto r = co_await co_before_write(offset, bytes);
    if (!r) co_return r;
    co_return co_await edge().co_pwritev(offset, bytes, iov, flags);
}

Task<Result<void>> CopyBeforeWrite::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    auto r = co_await co_before_write(offset, bytes);
    if (!r) co_return r;
    co_return co_await edge().co_pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> CopyBeforeWrite::co_pdiscard(uint64_t offset, uint64_t bytes) {
    auto r = co_await co_before_write(offset, bytes);
    if (!r) co_return r;
    co_return co_await edge().co_pdiscard(offset, bytes);
}

Task<Result<void>> CopyBeforeWrite::co_snapshot_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    assert_in_context(node().ctx());
    for (uint64_t done = 0; done < bytes;) {
        const uint64_t pos = offset + done;
        if (snapshot_error_ || access_.next_clean(pos, bytes - done))
            co_return fail(EACCES, "copy-before-write node '" + node().node_name() +
                                       "': the snapshot cannot be read there" +
                                       (snapshot_error_ ? " (a copy failed: " + snapshot_error_->message + ")" : ""));
        const DirtyRun run = done_.run_at(pos, bytes - done);
        const std::vector<iovec> part = iov_slice(iov, done, run.bytes);
        Result<void> r;
        if (run.dirty) {
            r = co_await target().co_preadv(pos, run.bytes, part);
        } else {
            // The source still holds the snapshot's data: a write there
            // waits (after its copy) until this read is over.
            BusyRange frozen(snapshot_reads_, pos, pos + run.bytes);
            r = co_await edge().co_preadv(pos, run.bytes, part);
        }
        if (!r) co_return r;
        done += run.bytes;
    }
    co_return Result<void>{};
}

Task<Result<BlockStatus>> CopyBeforeWrite::co_snapshot_block_status(uint64_t offset, uint64_t bytes,
                                                                    StatusQuery query) {
    assert_in_context(node().ctx());
    if (snapshot_error_ || access_.next_clean(offset, bytes))
        co_return fail(EACCES, "copy-before-write node '" + node().node_name() + "': the snapshot cannot be read there");
    const DirtyRun run = done_.run_at(offset, bytes);
    Result<BlockStatus> st;
    if (run.dirty) {
        st = co_await target().co_block_status(offset, run.bytes, query);
    } else {
        BusyRange frozen(snapshot_reads_, offset, offset + run.bytes);
        st = co_await edge().co_block_status(offset, run.bytes, query);
    }
    if (st) st->bytes = std::min(st->bytes, run.bytes);
    co_return st;
}

Task<Result<void>> CopyBeforeWrite::co_snapshot_pdiscard(uint64_t offset, uint64_t bytes) {
    assert_in_context(node().ctx());
    access_.reset(offset, bytes);
    pending_.reset(offset, bytes);
    co_return co_await target().co_pdiscard(offset, bytes);
}

// QEMU's cbw_child_perm: once the filter has users, its writes read the
// source first, and nobody else may change the source under it.
Driver::Perms CopyBeforeWrite::child_perms(ChildRole role, uint32_t perm, uint32_t shared) const {
    Perms p = Driver::child_perms(role, perm, shared);
    if (role == ChildRole::filtered && !node().parents().empty()) {
        if (perm & kPermWrite) p.perm |= kPermConsistentRead;
        p.shared &= ~(kPermWrite | kPermResize);
    }
    return p;
}

DriverCaps CopyBeforeWrite::caps() const {
    DriverCaps c = FilterDriver::caps();
    c.can_fua = false;  // a FUA write's copy would not be durable with it
    return c;
}

CopyBeforeWrite* as_copy_before_write(BlockNode& node) { return dynamic_cast<CopyBeforeWrite*>(&node.driver()); }

// QEMU's cbw_open and block_copy_calculate_cluster_size.
Result<Opened> open_copy_before_write(OptionReader& opts, const OpenContext& oc) {
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    auto target = open_child(opts, "target", oc);
    if (!target) return std::unexpected(target.error());
    std::optional<DirtyBits> initial;
    auto bitmap_opts = opts.get_object("bitmap");
    if (!bitmap_opts) return std::unexpected(bitmap_opts.error());
    if (*bitmap_opts) {
        auto node_name = (*bitmap_opts)->require_string("node");
        if (!node_name) return std::unexpected(node_name.error());
        auto name = (*bitmap_opts)->require_string("name");
        if (!name) return std::unexpected(name.error());
        if (auto c = (*bitmap_opts)->check_all_used(); !c) return std::unexpected(c.error());
        auto bitmap_node = oc.graph.find(*node_name);
        if (!bitmap_node) return fail(ENOENT, "Node '" + *node_name + "' not found");
        const DirtyBitmap* bitmap = bitmap_node->dirty_bitmaps().find(*name);
        if (!bitmap) return fail(ENOENT, "Dirty bitmap '" + *name + "' not found");
        DrainedSection drained(*bitmap_node);
        initial.emplace(bitmap->bits());
    }
    auto on_error_name = opts.get_string("on-cbw-error");
    if (!on_error_name) return std::unexpected(on_error_name.error());
    OnCbwError on_error = OnCbwError::break_guest_write;
    if (*on_error_name == "break-snapshot") on_error = OnCbwError::break_snapshot;
    else if (*on_error_name && **on_error_name != "break-guest-write")
        return fail(EINVAL, "Parameter 'on-cbw-error' does not accept value '" + **on_error_name + "'");
    auto timeout = opts.get_uint64("cbw-timeout");
    if (!timeout) return std::unexpected(timeout.error());
    if (timeout->value_or(0) > UINT32_MAX) return fail(EINVAL, "Parameter 'cbw-timeout' expects uint32_t");
    const int64_t timeout_ns = int64_t(timeout->value_or(0)) * 1'000'000'000;

    const uint64_t length = (*file)->length();
    if ((*target)->length() < length)
        return fail(EINVAL, "copy-before-write: target '" + (*target)->node_name() + "' is smaller than file '" +
                                (*file)->node_name() + "'");
    const uint64_t chunk = std::max(kDefaultChunk, (*target)->driver().cluster_size());
    if ((*target)->driver().cluster_size() == 0 && !(*target)->child(ChildRole::backing))
        LOG_WARN("copy-before-write: the target block device doesn't provide information about the block size and "
                 "it doesn't have a backing file. The default block size of %llu bytes is used. If the actual block "
                 "size of the target exceeds this default, the backup may be unusable",
                 static_cast<unsigned long long>(kDefaultChunk));
    auto driver = std::make_unique<CopyBeforeWrite>(length, chunk, initial ? &*initial : nullptr, on_error, timeout_ns);
    return Opened{std::move(driver), {{ChildRole::filtered, *file}, {ChildRole::target, *target}}};
}

}  // namespace ioplane::block
