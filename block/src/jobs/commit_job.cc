// block-commit of a layer below the active one (QEMU's block/commit.c):
// copies what the layers from top down to base (excluded) hold into base,
// chunk by chunk, then top's overlay names base as its backing file. The
// overlay keeps reading the same data throughout: wherever base changes, a
// layer above it holds that very data.
#include <algorithm>

#include "chain_edit.h"
#include "ioplane/block/block_jobs.h"
#include "ioplane/block/chain.h"
#include "ioplane/core/log.h"
#include "../buffer_pool.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kChunk = 512 * 1024;  // QEMU's COMMIT_BUFFER_SIZE
constexpr uint64_t kMaxChunks = 8;       // in flight (QEMU's commit copies one at a time)

class CommitJob final : public BlockJob {
public:
    explicit CommitJob(CommitJobOptions o)
        : BlockJob("commit", o.job),
          top_(std::move(o.top)),
          base_(std::move(o.base)),
          overlay_(std::move(o.overlay)),
          name_(std::move(o.backing_file)) {}

private:
    // QEMU's commit_start: base is reopened read-write if it must be. The
    // layers from top to base may be read by others but not resized, and
    // written only as the job itself writes base through them (a backing
    // edge shares write on its child only if its parents share it).
    Result<void> setup_nodes() override {
        if (auto r = reopen_writable(base_); !r) return r;
        const uint32_t shared = kPermConsistentRead | kPermWrite | kPermWriteUnchanged;
        if (auto r = attach_main(top_, kPermConsistentRead, shared); !r) return r;
        for (auto n = chain_below(*top_); n && n != base_; n = chain_below(*n))
            if (auto e = attach_node(n, "intermediate node", 0, shared); !e) return std::unexpected(e.error());
        auto base_edge = attach_node(base_, "base", kPermConsistentRead | kPermWrite | kPermResize,
                                     kPermConsistentRead | kPermWriteUnchanged | kPermGraphChange);
        if (!base_edge) return std::unexpected(base_edge.error());
        base_edge_ = *base_edge;
        return {};
    }

    Task<Result<void>> run() override {
        const uint64_t len = blk().length();
        progress_set_remaining(len);
        if (base_->length() < len) {
            co_await blk().co_begin_request();
            auto r = co_await base_edge_->co_truncate(len);
            blk().end_request();
            if (!r) co_return r;
        }
        WalkStep step = [this](uint64_t offset, uint64_t bytes) { return co_commit_step(offset, bytes); };
        auto walked = co_await co_walk(len, kChunk, kMaxChunks, std::move(step));
        if (!walked || cancelled()) co_return walked;
        // Durable in base before the overlay stops naming the layers above it.
        co_await blk().co_begin_request();
        auto r = co_await base_edge_->co_flush();
        blk().end_request();
        co_return r;
    }

    // A step of the walk: [offset, offset + bytes) into base, in runs over
    // which the chain's answer stays the same.
    Task<std::optional<StepFailure>> co_commit_step(uint64_t offset, uint64_t bytes) {
        const BufferPool::Lease buf = buffers_.take(kChunk);
        if (!buf) co_return StepFailure{Error{ENOMEM, "commit: buffer"}, true};
        for (uint64_t done = 0, n = 0; done < bytes; done += n) {
            bool copy = false, read_failed = false;
            auto r = co_await co_commit_chunk(offset + done, bytes - done, buf.data(), n, copy, read_failed);
            if (!r) co_return StepFailure{r.error(), read_failed};
            if (copy) ratelimit_processed(n);
        }
        progress_update(bytes);
        co_return std::nullopt;
    }

    // Inside a request of the job: copies [offset, offset + n) into base if
    // a layer from top down holds it; `n` is where the answer changes.
    Task<Result<void>> co_commit_chunk(uint64_t offset, uint64_t max, char* buf, uint64_t& n,
                                       bool& copy, bool& read_failed) {
        read_failed = true;
        auto st = co_await co_block_status_above(blk().root_edge(), base_.get(), offset, max);
        if (!st) co_return std::unexpected(st.error());
        n = std::clamp<uint64_t>(st->bytes, 1, max);
        copy = st->allocated;
        if (!copy) co_return Result<void>{};
        if (st->zero && !st->data) {
            read_failed = false;
            co_return co_await base_edge_->co_pwrite_zeroes(offset, n, 0);
        }
        const iovec iov{buf, n};
        if (auto r = co_await blk().co_preadv(offset, n, std::span(&iov, 1)); !r) co_return r;
        read_failed = false;
        co_return co_await base_edge_->co_pwritev(offset, n, std::span(&iov, 1));
    }

    // QEMU's commit_prepare: the job's write permission on base goes first,
    // then the overlay names base, and the layers between go when nothing
    // else holds them.
    Result<void> prepare() override {
        release_nodes();
        if (auto r = set_backing(*overlay_, base_, name_); !r) return r;
        LOG_INFO("commit job '%s': node '%s' now has node '%s' as its backing file", id().c_str(),
                 overlay_->node_name().c_str(), base_->node_name().c_str());
        return {};
    }

    const std::shared_ptr<BlockNode> top_, base_, overlay_;
    const std::optional<std::string> name_;
    BlockEdge* base_edge_ = nullptr;
    BufferPool buffers_{4096, kChunk, kMaxChunks};
};

}  // namespace

std::unique_ptr<BlockJob> make_commit_job(CommitJobOptions options) {
    return std::make_unique<CommitJob>(std::move(options));
}

}  // namespace ioplane::block
