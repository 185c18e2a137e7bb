// blockdev-backup (QEMU's block/backup.c): the source as it is when the job
// starts, copied to the target while the source stays in use. A
// copy-before-write filter (copy_before_write.h) is inserted above the
// source: a write there first copies the old data of what it changes; the
// job copies the rest, chunk by chunk, through the same filter state, so
// each chunk is copied once. The filter goes when the job ends.
//
// What is copied (sync): full, everything; top, what the source's own
// layer allocates; bitmap, what the bitmap marks; none, only what writes
// are about to change (image fleecing: the job runs until cancelled).
// With a bitmap, the bitmap stops recording while the job runs and a
// successor records the writes meanwhile; at the end bitmap-mode decides
// whether the bitmap keeps only those (what the backup holds is clean) or
// gets them added (QEMU's backup_cleanup_sync_bitmap).
#include <algorithm>

#include "../copy_before_write.h"
#include "ioplane/block/block_jobs.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/log.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kStep = 1024 * 1024;  // bytes one step of the job copies
constexpr uint64_t kMaxCopies = 16;      // steps in flight (QEMU's block-copy runs up to 64)
constexpr int64_t kIdleSleepNs = 3'600'000'000'000;  // a sync=none job's wait; a cancel ends it early

class BackupJob final : public BlockJob {
public:
    explicit BackupJob(BackupJobOptions o) : BlockJob("backup", o.job), o_(std::move(o)) {}

private:
    // QEMU's backup_job_create.
    Result<void> setup_nodes() override {
        BlockNode& source = *o_.source;
        BlockNode& target = *o_.target;
        if (&source == &target) return fail(EINVAL, "Source and target cannot be the same");
        if (auto r = source.check_not_blocked(); !r) return r;
        if (o_.bitmap) {
            if (o_.bitmap_mode != BitmapSyncMode::never)
                if (auto r = o_.bitmap->check(kBitmapDefault); !r) return r;
            DrainedSection drained(source);
            if (auto r = o_.bitmap->create_successor(); !r) return r;
            successor_held_ = true;
        }
        if (source.length() != target.length()) return fail(EINVAL, "Source and target image have different sizes");
        if (&target.ctx() != &source.ctx())
            if (auto r = change_aio_context(target, source.ctx()); !r) return r;
        if (auto r = insert_filter(); !r) return r;
        if (auto r = attach_main(filter_node_, 0, kPermAll); !r) return r;
        if (auto e = attach_node(o_.target, "target", 0, kPermAll); !e) return std::unexpected(e.error());
        filter_->set_progress([this](uint64_t bytes) { progress_update(bytes); });
        return {};
    }

    // QEMU's bdrv_cbw_append: the filter takes the source's place under
    // its parents and users.
    Result<void> insert_filter() {
        // QEMU's bdrv_insert_node words it so.
        if (!o_.filter_node_name.empty())
            if (auto r = o_.graph->check_new_node_name(o_.filter_node_name); !r)
                return fail(r.error().code, "Could not create node: " + r.error().message);
        OptionTree options;
        options.syntax = OptionSyntax::json;
        options.root = {{"driver", "copy-before-write"},
                        {"file", o_.source->node_name()},
                        {"target", o_.target->node_name()}};
        if (!o_.filter_node_name.empty()) options.root["node-name"] = o_.filter_node_name;
        auto node = o_.graph->open_internal(options, o_.source->ctx());
        if (!node) return std::unexpected(node.error());
        DrainedSection drained(*o_.source);
        if (auto r = replace_node(*o_.source, *node, (*node)->child(ChildRole::filtered)); !r) return r;
        filter_node_ = *node;
        filter_ = as_copy_before_write(*filter_node_);
        return {};
    }

    // QEMU's bdrv_cbw_drop: the source takes the filter's place again.
    void drop_filter() {
        if (!filter_node_) return;
        {
            DrainedSection drained(*filter_node_);
            filter_->set_progress(nullptr);
            if (auto r = replace_node(*filter_node_, o_.source, nullptr); !r)
                LOG_ERROR("backup job '%s': the copy-before-write filter stays: %s", id().c_str(),
                          r.error().message.c_str());
        }
        filter_ = nullptr;
        filter_node_.reset();
    }

    Task<Result<void>> run() override {
        co_await blk().co_begin_request();
        auto init = co_await co_init_pending();
        blk().end_request();
        if (!init) co_return init;
        if (o_.sync == BackupSync::none) {
            // The filter copies what writes change until the job is
            // cancelled (fleecing ends with block-job-cancel).
            while (!cancelled()) co_await sleep_ns(kIdleSleepNs);
            co_return Result<void>{};
        }
        WalkStep step = [this](uint64_t offset, uint64_t bytes) { return co_copy_step(offset, bytes); };
        auto walked = co_await co_walk(blk().length(), kStep, kMaxCopies, std::move(step));
        if (!walked) co_return walked;
        if (cancelled()) co_return Result<void>{};
        // QEMU leaves the copies to the target's next flush or close; a
        // completed backup here is durable when its event is sent.
        co_await blk().co_begin_request();
        auto flushed = co_await filter_node_->child(ChildRole::target)->co_flush();
        blk().end_request();
        if (!flushed) co_return std::unexpected(flushed.error());
        co_return Result<void>{};
    }

    // A step of the walk: the chunks it touches that are still pending.
    Task<std::optional<StepFailure>> co_copy_step(uint64_t offset, uint64_t bytes) {
        auto error = co_await filter_->co_copy(offset, bytes);
        if (error) co_return StepFailure{error->error, error->read};
        ratelimit_processed(bytes);
        co_return std::nullopt;
    }

    // Inside a request of the job: the chunks to copy (QEMU's
    // backup_init_bcs_bitmap, and for top the unallocated ones dropped as
    // block_copy_reset_unallocated does).
    Task<Result<void>> co_init_pending() {
        DirtyBits& pending = filter_->pending();
        if (o_.sync == BackupSync::bitmap) {
            pending.clear();
            pending.merge(o_.bitmap->bits());
        }
        if (o_.sync == BackupSync::top) {
            const uint64_t chunk = filter_->chunk(), len = pending.length();
            BlockEdge& source = *filter_node_->child(ChildRole::filtered);
            for (uint64_t offset = 0; offset < len;) {
                auto st = co_await source.co_block_status(offset, len - offset);
                if (!st) co_return std::unexpected(st.error());
                const uint64_t n = std::clamp<uint64_t>(st->bytes, 1, len - offset);
                // Whole chunks only: one the layer allocates a part of is copied.
                if (!st->allocated) {
                    const uint64_t first = (offset + chunk - 1) / chunk * chunk;
                    const uint64_t end = offset + n == len ? len : (offset + n) / chunk * chunk;
                    if (first < end) pending.reset(first, end - first);
                }
                offset += n;
            }
        }
        progress_set_remaining(pending.dirty_bytes());
        co_return Result<void>{};
    }

    void commit() override { end_bitmap_succession(true); }
    void abort() override { end_bitmap_succession(false); }
    void clean() override {
        end_bitmap_succession(false);  // a setup that failed after making the successor
        release_nodes();
        drop_filter();
        BlockJob::clean();
    }

    // QEMU's backup_cleanup_sync_bitmap.
    void end_bitmap_succession(bool success) {
        if (!successor_held_) return;
        successor_held_ = false;
        DrainedSection drained(*o_.source);
        const bool sync = (success || o_.bitmap_mode == BitmapSyncMode::always) &&
                          o_.bitmap_mode != BitmapSyncMode::never;
        if (sync) o_.bitmap->abdicate();
        else o_.bitmap->reclaim();
        // Failed but synced: what was not copied stays dirty.
        if (!success && o_.bitmap_mode == BitmapSyncMode::always && filter_) o_.bitmap->bits().merge(filter_->pending());
    }

    BackupJobOptions o_;
    std::shared_ptr<BlockNode> filter_node_;
    CopyBeforeWrite* filter_ = nullptr;
    bool successor_held_ = false;
};

}  // namespace

std::unique_ptr<BlockJob> make_backup_job(BackupJobOptions options) {
    return std::make_unique<BackupJob>(std::move(options));
}

}  // namespace ioplane::block
