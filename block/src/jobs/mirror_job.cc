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
#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "ioplane/block/block_jobs.h"
#include "ioplane/block/chain.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "../io_vector.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kMaxOps = 16;           // QEMU's MAX_IN_FLIGHT
constexpr uint64_t kMaxOpBytes = 1 << 20;  // QEMU's MAX_IO_BYTES
constexpr uint64_t kDefaultBufSize = kMaxOps * kMaxOpBytes;  // QEMU's DEFAULT_MIRROR_BUF_SIZE
constexpr int64_t kReadyPollNs = 100'000'000;  // how often a ready job looks for new writes

class MirrorJob final : public BlockJob {
public:
    explicit MirrorJob(MirrorJobOptions o) : BlockJob(o.commit ? "commit" : "mirror", o.job), o_(std::move(o)) {}
    ~MirrorJob() override { release_bitmap(); }

private:
    Result<void> setup_nodes() override {
        BlockNode& source = *o_.source;
        BlockNode& target = *o_.target;
        const bool target_in_chain = chain_contains(source, target);
        if (&target.ctx() != &source.ctx())
            if (auto r = change_aio_context(target, source.ctx()); !r) return r;
        if (o_.commit)
            if (auto r = reopen_writable(o_.target); !r) return r;
        const uint32_t any = kPermConsistentRead | kPermWrite | kPermWriteUnchanged | kPermGraphChange;
        if (auto r = attach_main(o_.source, kPermConsistentRead, any); !r) return r;
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
        DrainedSection drained(source);
        auto bitmap = source.dirty_bitmaps().create("", o_.granularity);
        if (!bitmap) return std::unexpected(bitmap.error());
        bitmap_ = *bitmap;
        bitmap_->set_busy(true);
        return {};
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
                    co_await co_wait_for_ops(0);
                    co_return fail(error, std::string("mirror: ") + (read ? "read" : "write") + " error: " +
                                              std::strerror(error));
                }
                continue;  // stopped (a pause point comes first) or ignored: copied again
            }
            co_await blk().co_begin_request();
            const uint64_t dirty = bitmap_->bits().dirty_bytes();
            progress_set_remaining(dirty + in_flight_bytes_.load());
            const bool started = start_copies();
            blk().end_request();
            if (started) {
                co_await co_wait_for_ops(kMaxOps - 1);  // room for the next
                continue;
            }
            if (in_flight_ops_.load() > 0) {
                co_await co_wait_for_ops(0);
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
        for (uint64_t offset = 0; offset < len;) {
            auto st = co_await co_block_status_above(blk().root_edge(), base, offset, len - offset);
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
            {
                std::lock_guard lock(ranges_mu_);
                in_flight_ranges_.push_back({extent->offset, cursor});
            }
            in_flight_ops_++;
            in_flight_bytes_ += extent->bytes;
            spawn_now(co_copy(extent->offset, extent->bytes));
            started = true;
        }
        next_offset_ = cursor;
        return started;
    }

    struct Range {
        uint64_t start, end;
    };
    std::optional<Range> in_flight_overlap(uint64_t start, uint64_t end) {
        std::lock_guard lock(ranges_mu_);
        std::optional<Range> first;
        for (const Range& r : in_flight_ranges_)
            if (r.start < end && start < r.end && (!first || r.start < first->start)) first = r;
        return first;
    }

    Task<void> co_copy(uint64_t offset, uint64_t bytes) {
        AlignedBuffer buf(4096, bytes);
        Result<void> r = buf ? Result<void>{} : fail(ENOMEM, "mirror: buffer");
        bool read_failed = true;
        const iovec iov = buf.whole();
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
        {
            std::lock_guard lock(ranges_mu_);
            std::erase_if(in_flight_ranges_, [offset](const Range& r) { return r.start == offset; });
        }
        in_flight_bytes_ -= bytes;
        in_flight_ops_--;
        ops_done_.restart_all();
    }

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

    Result<void> on_complete() override {
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
    // overlays above it) now uses the target. Active commit: the layers
    // above the base go when nothing else holds them.
    Result<void> prepare() override {
        const bool pivot = should_complete_ && !cancel_requested();
        release_bitmap();
        std::shared_ptr<BlockNode> source = o_.source;
        release_nodes();
        target_.reset();
        if (!pivot) return {};
        if (auto r = replace_node(*source, o_.target, nullptr); !r) return r;
        keep_writable();  // the base is the active layer now
        LOG_INFO("%s job '%s': node '%s' replaced node '%s'", type().c_str(), id().c_str(),
                 o_.target->node_name().c_str(), source->node_name().c_str());
        return {};
    }

    void clean() override {
        release_bitmap();
        release_nodes();
        target_.reset();
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
    std::unique_ptr<BlockBackend> target_;
    DirtyBitmap* bitmap_ = nullptr;
    bool ready_ = false;            // main thread and the job, in turn
    bool should_complete_ = false;  // main thread: job-complete
    bool converged_ = false;        // the job ended holding a drained section of the source
    std::atomic<bool> finish_{false};  // job-complete or a soft cancel: converge and end
    uint64_t next_offset_ = 0;      // where the next search for dirty extents starts
    std::atomic<uint64_t> in_flight_ops_{0}, in_flight_bytes_{0};
    CoQueue ops_done_;
    std::mutex ranges_mu_;  // copies may end in another thread than the job's next step (a context move)
    std::vector<Range> in_flight_ranges_;
    std::atomic<int> copy_error_{0};  // errno of a failed copy, for the job's loop
    std::atomic<bool> copy_error_read_{false};
};

}  // namespace

std::unique_ptr<BlockJob> make_mirror_job(MirrorJobOptions options) {
    return std::make_unique<MirrorJob>(std::move(options));
}

}  // namespace ioplane::block
