// blockdev-mirror, and block-commit of the active layer (QEMU's
// block/mirror.c): copies the source to the target while the source stays
// in use, then, on job-complete, the target takes the source's place under
// every parent and user.
//
// A dirty bitmap on the source (anonymous, the job's) records what writes
// change. The job marks what the sync mode needs copied (full: everything
// that does not read as zeroes, after zeroing the target; top: what the
// source's own layers hold above the base; none: nothing), then copies
// dirty extents: each extent's bits are reset before its data is read, so a
// write that lands during the copy marks it again and it is copied again.
// When nothing is dirty and nothing is in flight the target is flushed and
// the job is ready (BLOCK_JOB_READY). It keeps following writes until
// job-complete (or a soft cancel, which ends it without the switch):
// then, in the main thread, the source is drained and, once nothing is
// dirty, the job ends with the section still held, so that prepare()
// switches the graph before any new write.
//
// For its life the job keeps a mirror_top filter (mirror_top.h) above the
// source, in the source's place under every parent and user. In copy-mode
// write-blocking (QEMU's active mirror) a write through it goes to the
// source and then, where the target is in sync (clean in the bitmap), to
// the target before it completes; the bitmap then records nothing by
// itself: what the filter could not sync stays or becomes dirty. A copy
// and an active write never overlap in flight: an active write waits for
// the older copies and active writes over its chunks, and copies skip
// chunks an active write holds (QEMU's in_flight_bitmap), so that no older
// data lands in the target after newer.
//
// On complete the target takes the place of the source (or of the
// `replaces` node below it) and the filter goes; otherwise the source
// takes the filter's place back.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "mirror_top.h"
#include "ioplane/block/block_jobs.h"
#include "ioplane/block/chain.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/thread_contract.h"
#include "../buffer_pool.h"
#include "../io_vector.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kMaxOps = 16;           // QEMU's MAX_IN_FLIGHT
constexpr uint64_t kMaxOpBytes = 1 << 20;  // QEMU's MAX_IO_BYTES
constexpr uint64_t kDefaultBufSize = kMaxOps * kMaxOpBytes;  // QEMU's DEFAULT_MIRROR_BUF_SIZE
constexpr int64_t kReadyPollNs = 100'000'000;  // how often a ready job looks for new writes

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

class MirrorJob final : public BlockJob, private MirrorTop::ActiveMirror {
public:
    explicit MirrorJob(MirrorJobOptions o) : BlockJob(o.commit ? "commit" : "mirror", o.job), o_(std::move(o)) {}
    ~MirrorJob() override {
        drop_filter();
        release_bitmap();
    }

private:
    // QEMU's mirror_start_job, in its order where messages tell.
    Result<void> setup_nodes() override {
        BlockNode& source = *o_.source;
        BlockNode& target = *o_.target;
        const bool target_in_chain = chain_contains(source, target);
        if (!target_in_chain && chain_contains(source, *skip_filters(o_.target)))
            return fail(EINVAL, "Cannot mirror to a filter on top of a node in the source's backing chain");
        if (&target.ctx() != &source.ctx())
            if (auto r = change_aio_context(target, source.ctx()); !r) return r;
        if (o_.commit)
            if (auto r = reopen_writable(o_.target); !r) return r;
        if (auto r = insert_filter(); !r) return r;
        const uint32_t any = kPermConsistentRead | kPermWrite | kPermWriteUnchanged | kPermGraphChange;
        if (auto r = attach_main(filter_node_, kPermConsistentRead, any); !r) return r;
        if (auto e = attach_node(o_.source, "source", 0, kPermConsistentRead | kPermWrite | kPermWriteUnchanged); !e)
            return std::unexpected(e.error());
        for (auto n = chain_below(source); target_in_chain && n && n != o_.target; n = chain_below(*n))
            if (auto e = attach_node(n, "intermediate node", 0, kPermConsistentRead | kPermWrite | kPermWriteUnchanged);
                !e)
                return std::unexpected(e.error());
        // Others may not write the target, nor read it as consistent unless
        // it is the source's own backing chain (active commit).
        const uint32_t perm = kPermWrite | (o_.commit ? uint32_t(kPermResize) : 0u);
        const uint32_t shared = kPermWriteUnchanged | (target_in_chain ? any : 0);
        if (auto r = block_node(target); !r) return r;
        if (auto r = BlockBackend::can_attach(target, perm, shared, description()); !r) return r;
        target_ = std::make_unique<BlockBackend>(o_.target, perm, shared, description());
        target_->disable_request_queuing();
        if (o_.granularity == 0) o_.granularity = target.dirty_bitmaps().default_granularity();
        if (o_.buf_size == 0) o_.buf_size = kDefaultBufSize;
        o_.buf_size = std::max(o_.buf_size, o_.granularity);
        // The largest copy start_copies() makes.
        buffers_ = std::make_unique<BufferPool>(4096, std::max(o_.granularity, std::min(kMaxOpBytes, o_.buf_size)),
                                                kMaxOps);
        // One section: no write passes the filter between the bitmap's
        // start and the filter's (it would be neither marked nor synced).
        DrainedSection drained(source);
        auto bitmap = source.dirty_bitmaps().create("", o_.granularity);
        if (!bitmap) return std::unexpected(bitmap.error());
        bitmap_ = *bitmap;
        bitmap_->set_busy(true);
        // Write-blocking: the filter marks what it does not sync itself.
        if (o_.write_blocking) bitmap_->set_enabled(false);
        filter_->set_job(this);
        return {};
    }

    // QEMU's bdrv_append of mirror_top: the filter takes the source's
    // place under its parents and users.
    Result<void> insert_filter() {
        auto node = make_mirror_top_node(*o_.graph, o_.filter_node_name, o_.source);
        if (!node) return std::unexpected(node.error());
        DrainedSection drained(*o_.source);
        if (auto r = replace_node(*o_.source, *node, (*node)->child(ChildRole::filtered)); !r) return r;
        filter_node_ = *node;
        filter_ = &mirror_top_of(*filter_node_);
        return {};
    }

    // No write reaches the job from now on.
    void detach_filter() {
        if (!filter_) return;
        DrainedSection drained(*filter_node_);
        filter_->set_job(nullptr);
    }

    // The node below the filter (the source, or the target after the
    // switch) takes the filter's place again.
    void drop_filter() {
        if (!filter_node_) return;
        detach_filter();
        const std::shared_ptr<BlockNode> below = filter_node_->child(ChildRole::filtered)->child_ptr();
        {
            DrainedSection drained(*filter_node_);
            if (auto r = replace_node(*filter_node_, below, nullptr); !r)
                LOG_ERROR("%s job '%s': the mirror_top filter stays: %s", type().c_str(), id().c_str(),
                          r.error().message.c_str());
        }
        filter_ = nullptr;
        filter_node_.reset();
    }

    Task<Result<void>> run() override {
        const uint64_t len = blk().length();
        if (o_.commit && o_.target->length() < len) {
            co_await target_->co_begin_request();
            auto r = co_await target_->co_truncate(len);
            target_->end_request();
            if (!r) co_return r;
        } else if (!o_.commit && o_.target->length() != len) {
            co_return fail(EINVAL, "Source and target image have different sizes");
        }
        co_await blk().co_begin_request();
        auto init = co_await co_mark_initial(len);
        blk().end_request();
        if (!init) co_return init;
        for (;;) {
            co_await co_ratelimit_sleep();
            if (cancelled()) break;
            if (const int error = copy_error_.exchange(0)) {
                // A copy failed (its extent is dirty again): the policy of
                // the side that failed decides.
                const bool read = copy_error_read_.load();
                const ErrorAction action = co_await co_error_action(read, error);
                if (action == ErrorAction::report) {
                    failed_ = true;  // writes stop reaching the target
                    co_await co_wait_for_ops(0);
                    co_return std::unexpected(io_error(error));
                }
                continue;  // stopped (a pause point comes first) or ignored: copied again
            }
            co_await blk().co_begin_request();
            const uint64_t dirty = bitmap_->bits().dirty_bytes();
            progress_set_remaining(dirty + in_flight_bytes_.load() + active_bytes_.load());
            const bool started = start_copies();
            // Dirty chunks no copy could start on are held by active
            // writes: not ready until they are copied (QEMU's cnt == 0).
            const bool held = !started && bitmap_->bits().dirty_bytes() > 0;
            const uint64_t freed = ranges_freed_.load();
            blk().end_request();
            if (started) {
                co_await co_wait_for_ops(kMaxOps - 1);  // room for the next
                continue;
            }
            if (in_flight_ops_.load() > 0) {
                co_await co_wait_for_ops(0);
                continue;
            }
            if (held) {
                while (ranges_freed_.load() == freed)
                    co_await range_freed_.wait_while([&] { return ranges_freed_.load() == freed; });
                continue;
            }
            // Nothing dirty, nothing in flight: the target has it all.
            if (!ready_) {
                co_await target_->co_begin_request();
                auto r = co_await target_->co_flush();
                target_->end_request();
                if (!r) co_return r;
                co_await co_transition_to_ready();
                ready_ = true;  // in the main thread, where on_cancel reads it
            }
            if (finish_.load()) {
                if (co_await co_converge()) break;
                continue;
            }
            co_await sleep_ns(kReadyPollNs);
        }
        co_await co_wait_for_ops(0);
        co_return Result<void>{};
    }

    // Inside a request of the job: the bits the sync mode starts with.
    Task<Result<void>> co_mark_initial(uint64_t len) {
        DirtyBits& bits = bitmap_->bits();
        if (o_.sync == MirrorSync::none) co_return Result<void>{};
        if (o_.sync == MirrorSync::full) {
            // What reads as zeroes need not be copied once the target is
            // zero: QEMU's zero_target.
            co_await target_->co_begin_request();
            auto r = co_await target_->co_pwrite_zeroes(0, len, kMayUnmap);
            target_->end_request();
            if (!r) co_return r;
        }
        const BlockNode* base = o_.sync == MirrorSync::full ? nullptr : o_.base.get();
        BlockEdge& source = *filter_node_->child(ChildRole::filtered);
        for (uint64_t offset = 0; offset < len;) {
            auto st = co_await co_block_status_above(source, base, offset, len - offset);
            if (!st) co_return std::unexpected(st.error());
            const uint64_t n = std::clamp<uint64_t>(st->bytes, 1, len - offset);
            const bool copy = o_.sync == MirrorSync::full ? !st->zero : st->allocated;
            if (copy) bits.set(offset, n);
            offset += n;
        }
        co_return Result<void>{};
    }

    // Inside a request of the job: starts copies of dirty extents while
    // there is room (ops and buffer), never over a copy still in flight
    // (QEMU's mirror_wait_on_conflicts: an older copy finishing last would
    // leave its older data in the target). Returns whether it started any.
    bool start_copies() {
        DirtyBits& bits = bitmap_->bits();
        const uint64_t granularity = bitmap_->granularity();
        const uint64_t origin = next_offset_;
        uint64_t cursor = origin;
        bool wrapped = false, started = false;
        while (in_flight_ops_.load() < kMaxOps && in_flight_bytes_.load() < o_.buf_size) {
            // Whole chunks: a reset clears only the chunks it covers.
            const uint64_t room = std::min(kMaxOpBytes, o_.buf_size - in_flight_bytes_.load());
            const uint64_t max = std::max(granularity, room / granularity * granularity);
            auto extent = bits.next_dirty_extent(cursor, UINT64_MAX, max);
            if (!extent || (wrapped && extent->offset >= origin)) {
                if (wrapped || origin == 0) break;
                wrapped = true;
                cursor = 0;
                continue;
            }
            if (auto busy = in_flight_overlap(extent->offset, extent->offset + extent->bytes)) {
                if (busy->start <= extent->offset) {
                    cursor = busy->end;  // look past it
                    continue;
                }
                extent->bytes = busy->start - extent->offset;  // up to it
            }
            // Reset before the read: a write from now on marks it again.
            bits.reset(extent->offset, extent->bytes);
            cursor = extent->offset + extent->bytes;
            const uint64_t ticket = register_range(extent->offset, cursor);
            in_flight_ops_++;
            in_flight_bytes_ += extent->bytes;
            spawn_now(co_copy(extent->offset, extent->bytes, ticket));
            started = true;
        }
        next_offset_ = cursor;
        return started;
    }

    // A copy or an active write in flight, with its arrival number.
    struct Range {
        uint64_t start, end, ticket;
    };
    uint64_t register_range(uint64_t start, uint64_t end) {
        std::lock_guard lock(ranges_mu_);
        in_flight_ranges_.push_back({start, end, next_ticket_});
        return next_ticket_++;
    }
    void remove_range(uint64_t ticket) {
        {
            std::lock_guard lock(ranges_mu_);
            std::erase_if(in_flight_ranges_, [ticket](const Range& r) { return r.ticket == ticket; });
            ranges_freed_++;
        }
        range_freed_.restart_all();
    }
    // The lowest range in flight over [start, end).
    std::optional<Range> in_flight_overlap(uint64_t start, uint64_t end) {
        std::lock_guard lock(ranges_mu_);
        std::optional<Range> first;
        for (const Range& r : in_flight_ranges_)
            if (r.start < end && start < r.end && (!first || r.start < first->start)) first = r;
        return first;
    }
    // Whether a range that arrived before `ticket` overlaps [start, end).
    bool older_overlap(uint64_t start, uint64_t end, uint64_t ticket) {
        std::lock_guard lock(ranges_mu_);
        for (const Range& r : in_flight_ranges_)
            if (r.ticket < ticket && r.start < end && start < r.end) return true;
        return false;
    }

    Task<void> co_copy(uint64_t offset, uint64_t bytes, uint64_t ticket) {
        const BufferPool::Lease buf = buffers_->take(bytes);
        Result<void> r = buf ? Result<void>{} : fail(ENOMEM, "mirror: buffer");
        bool read_failed = true;
        const iovec iov = buf.first(bytes);
        if (r) {
            co_await blk().co_begin_request();
            r = co_await blk().co_preadv(offset, bytes, std::span(&iov, 1));
            blk().end_request();
        }
        if (r) {
            read_failed = false;
            co_await target_->co_begin_request();
            r = co_await target_->co_pwritev(offset, bytes, std::span(&iov, 1), 0);
            target_->end_request();
        }
        if (r) {
            progress_update(bytes);
            ratelimit_processed(bytes);
        } else {
            // Dirty again, to be copied again unless the job's error policy
            // ends the job (the job's loop asks it).
            co_await blk().co_begin_request();
            bitmap_->bits().set(offset, bytes);
            blk().end_request();
            copy_error_read_ = read_failed;
            copy_error_ = r.error().code;
        }
        remove_range(ticket);
        in_flight_bytes_ -= bytes;
        in_flight_ops_--;
        ops_done_.restart_all();
    }

    // MirrorTop::ActiveMirror: the node's context, inside a write's request of the
    // filter.
    bool copy_writes() const override { return o_.write_blocking && !cancelled() && !failed_.load(); }

    // QEMU's active_write_prepare: whole chunks, as copies take them.
    Task<uint64_t> co_active_write_prepare(uint64_t offset, uint64_t bytes) override {
        assert_in_context(o_.source->ctx());
        const uint64_t granularity = bitmap_->granularity();
        const uint64_t start = align_down(offset, granularity), end = align_up(offset + bytes, granularity);
        const uint64_t ticket = register_range(start, end);
        while (older_overlap(start, end, ticket))
            co_await range_freed_.wait_while([&] { return older_overlap(start, end, ticket); });
        co_return ticket;
    }

    // QEMU's do_sync_target_write: a partial chunk at either end that is
    // dirty is left to the background copy (its other bytes are not in the
    // target yet); the rest is written to the target, and the whole chunks
    // it covers are clean. A failure makes them dirty again.
    Task<void> co_sync_target_write(MirrorTop::Method method, uint64_t offset, uint64_t bytes,
                                    std::span<const iovec> iov, uint32_t flags) override {
        assert_in_context(o_.source->ctx());
        DirtyBits& bits = bitmap_->bits();
        const uint64_t granularity = bitmap_->granularity();
        if (method == MirrorTop::Method::discard) {
            // What the source reads after a discard is its driver's choice
            // (zeroes, the backing file, the old data) and need not be what
            // the target reads after one: the background copy takes what
            // the source reads. (QEMU discards the target too, which leaves
            // the two different when only one of them unmaps.) A source
            // that ignores discards did not change.
            if (o_.source->unmap()) bits.set(offset, bytes);
            co_return;
        }
        uint64_t skip = 0;
        if (offset % granularity != 0 && bits.test(offset)) {
            skip = align_up(offset, granularity) - offset;
            if (bytes <= skip) co_return;
            offset += skip;
            bytes -= skip;
        }
        if ((offset + bytes) % granularity != 0 && bits.test(offset + bytes - 1)) {
            const uint64_t tail = (offset + bytes) % granularity;
            if (bytes <= tail) co_return;
            bytes -= tail;
        }
        const uint64_t first = align_up(offset, granularity), last = align_down(offset + bytes, granularity);
        if (first < last) bits.reset(first, last - first);
        progress_increase_remaining(bytes);
        active_bytes_ += bytes;
        Result<void> r;
        co_await target_->co_begin_request();
        if (method == MirrorTop::Method::data) {
            const std::vector<iovec> part = iov_slice(iov, skip, bytes);
            r = co_await target_->co_pwritev(offset, bytes, part, flags);
        } else {
            // The source is zero there already: zeroes written as data
            // are zeroes too.
            r = co_await target_->co_pwrite_zeroes(offset, bytes, flags & ~uint32_t(kNoFallback));
        }
        target_->end_request();
        active_bytes_ -= bytes;
        if (r) {
            progress_update(bytes);
            co_return;
        }
        bits.set(offset, bytes);  // every chunk it touches
        copy_error_read_ = false;
        copy_error_ = r.error().code;  // the job's loop applies on-target-error
    }

    void source_write_failed(uint64_t offset, uint64_t bytes) override {
        assert_in_context(o_.source->ctx());
        bitmap_->bits().set(offset, bytes);  // every chunk it touches
    }

    // QEMU's active_write_settle.
    void active_write_settle(uint64_t ticket) override { remove_range(ticket); }

    // Waits until at most `max` copies are in flight.
    Task<void> co_wait_for_ops(uint64_t max) {
        while (in_flight_ops_.load() > max) co_await ops_done_.wait_while([&] { return in_flight_ops_.load() > max; });
    }

    // Main thread: drains the source; if nothing is dirty the job is done
    // and the section stays held until clean(). Returns whether it is.
    Task<bool> co_converge() {
        co_await sleep_ns(0);  // to the main context (and a pause point)
        drained_begin(*o_.source);
        if (bitmap_->bits().dirty_bytes() == 0 && in_flight_ops_.load() == 0) {
            converged_ = true;
            co_return true;
        }
        drained_end(*o_.source);
        co_return false;
    }

    // QEMU's mirror_complete: the node to replace is looked up now, and
    // nothing else may use it until the job ends.
    Result<void> on_complete() override {
        if (!o_.replaces.empty() && !to_replace_) {
            auto node = o_.graph->find(o_.replaces);
            if (!node) return fail(ENOENT, "Node name '" + o_.replaces + "' not found");
            to_replace_ = node;
            if (node->op_blocker().empty()) {
                node->set_op_blocker("block device is in use by block-job-complete");
                replace_blocked_ = true;
            }
        }
        should_complete_ = true;
        finish_ = true;
        kick();
        return {};
    }

    // QEMU's mirror_cancel: a ready job's soft cancel completes it without
    // the switch (the target keeps a copy of the source as of now).
    bool on_cancel(bool force) override {
        if (force || !ready_) return true;
        finish_ = true;
        kick();
        return false;
    }

    // The switch: every parent and user of the source (exports, the
    // overlays above it) now uses the target — or every parent of the
    // `replaces` node below the source. Active commit: the layers above the
    // base go when nothing else holds them. The filter goes either way.
    Result<void> prepare() override {
        const bool pivot = should_complete_ && !cancel_requested();
        detach_filter();
        release_bitmap();
        release_nodes();
        target_.reset();
        Result<void> r;
        if (pivot) r = switch_to_target();
        drop_filter();
        return r;
    }

    // QEMU's mirror_exit_common, the part after the job's own nodes went.
    Result<void> switch_to_target() {
        const std::shared_ptr<BlockNode> to_replace = to_replace_ ? to_replace_ : o_.source;
        if (!can_replace(*o_.source, *to_replace))
            return fail(EPERM, "Can no longer replace '" + to_replace->node_name() + "' by '" +
                                   o_.target->node_name() +
                                   "', because it can no longer be guaranteed that doing so would not lead to an "
                                   "abrupt change of visible data");
        DrainedSection drained(*to_replace);
        DrainedSection drained_target(*o_.target);
        if (auto r = replace_node(*to_replace, o_.target, nullptr); !r) return r;
        keep_writable();  // the base is the active layer now
        LOG_INFO("%s job '%s': node '%s' replaced node '%s'", type().c_str(), id().c_str(),
                 o_.target->node_name().c_str(), to_replace->node_name().c_str());
        return {};
    }

    void clean() override {
        detach_filter();
        release_bitmap();
        release_nodes();
        target_.reset();
        if (replace_blocked_) {
            replace_blocked_ = false;
            to_replace_->set_op_blocker("");
        }
        to_replace_.reset();
        drop_filter();
        if (converged_) {
            converged_ = false;
            drained_end(*o_.source);
        }
        BlockJob::clean();
    }

    void release_bitmap() {
        if (!bitmap_) return;
        DrainedSection drained(*o_.source);
        bitmap_->set_busy(false);
        o_.source->dirty_bitmaps().release(*bitmap_);
        bitmap_ = nullptr;
    }

    MirrorJobOptions o_;
    std::shared_ptr<BlockNode> filter_node_;  // the mirror_top node, while the job holds it
    MirrorTop* filter_ = nullptr;             // its driver
    std::shared_ptr<BlockNode> to_replace_;   // job-complete: the `replaces` node
    bool replace_blocked_ = false;            // to_replace_'s op blocker is the job's
    std::unique_ptr<BlockBackend> target_;
    std::unique_ptr<BufferPool> buffers_;  // set up with the bitmap
    DirtyBitmap* bitmap_ = nullptr;
    bool ready_ = false;            // main thread and the job, in turn
    bool should_complete_ = false;  // main thread: job-complete
    bool converged_ = false;        // the job ended holding a drained section of the source
    std::atomic<bool> finish_{false};  // job-complete or a soft cancel: converge and end
    uint64_t next_offset_ = 0;      // where the next search for dirty extents starts
    std::atomic<uint64_t> in_flight_ops_{0}, in_flight_bytes_{0};  // copies
    std::atomic<uint64_t> active_bytes_{0};  // active writes to the target in flight
    std::atomic<bool> failed_{false};        // an error ends the job: writes stop reaching the target
    CoQueue ops_done_;
    std::mutex ranges_mu_;  // copies may end in another thread than the job's next step (a context move)
    std::vector<Range> in_flight_ranges_;  // ranges_mu_
    uint64_t next_ticket_ = 0;             // ranges_mu_
    std::atomic<uint64_t> ranges_freed_{0};  // ranges removed so far (changes under ranges_mu_)
    CoQueue range_freed_;  // active writes waiting for older ranges over theirs; the job for held chunks
    std::atomic<int> copy_error_{0};  // errno of a failed copy, for the job's loop
    std::atomic<bool> copy_error_read_{false};
};

}  // namespace

std::unique_ptr<BlockJob> make_mirror_job(MirrorJobOptions options) {
    return std::make_unique<MirrorJob>(std::move(options));
}

}  // namespace ioplane::block
