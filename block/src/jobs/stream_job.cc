// block-stream (QEMU's block/stream.c): copies what the layers between top
// and base hold up into top, chunk by chunk, with copy-on-read requests:
// the request path serialises each copy against overlapping writes, so a
// guest write that lands meanwhile is never overwritten with older data.
// Then top names base as its backing file.
#include <algorithm>

#include "chain_edit.h"
#include "ioplane/block/block_jobs.h"
#include "ioplane/block/chain.h"
#include "ioplane/core/log.h"
#include "../io_vector.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kChunk = 512 * 1024;  // QEMU's STREAM_CHUNK

class StreamJob final : public BlockJob {
public:
    explicit StreamJob(StreamJobOptions o)
        : BlockJob("stream", o.job), top_(std::move(o.top)), base_(std::move(o.base)), name_(std::move(o.backing_file)) {}

private:
    // QEMU's stream_start: top is reopened read-write if it must be; the
    // job writes into it only what it reads from below (write unchanged)
    // and lets others do anything but resize it; the layers it drops may be
    // read but not written by others.
    Result<void> setup_nodes() override {
        if (auto r = reopen_writable(top_); !r) return r;
        const uint32_t basic = kPermConsistentRead | kPermWriteUnchanged;
        if (auto r = attach_main(top_, basic, basic | kPermWrite); !r) return r;
        for (auto n = chain_below(*top_); n && n != base_; n = chain_below(*n))
            if (auto e = attach_node(n, "intermediate node", 0, basic); !e) return std::unexpected(e.error());
        return {};
    }

    Task<Result<void>> run() override {
        BlockEdge* below = top_->chain_child();
        if (!below || &below->child() == base_.get()) co_return Result<void>{};  // nothing to stream
        const uint64_t len = blk().length();
        progress_set_remaining(len);
        AlignedBuffer buf(4096, kChunk);
        if (!buf) co_return fail(ENOMEM, "stream: buffer");
        Result<void> first_error;  // the first error an on-error policy let pass
        for (uint64_t offset = 0, n = 0; offset < len; offset += n) {
            co_await co_ratelimit_sleep();
            if (cancelled()) break;
            bool copy = false;
            co_await blk().co_begin_request();
            auto r = co_await co_stream_chunk(offset, std::min(kChunk, len - offset), buf, n, copy);
            blk().end_request();
            if (!r) {
                const ErrorAction action = co_await co_error_action(true, r.error().code);
                n = 0;
                if (action == ErrorAction::stop) continue;
                if (first_error) first_error = std::unexpected(io_error(r.error().code));  // none before this one
                if (action == ErrorAction::report) break;
                n = std::min(kChunk, len - offset);  // ignored: go on past it
            }
            progress_update(n);
            if (copy) ratelimit_processed(n);
        }
        if (!first_error || cancelled()) co_return first_error;
        // The copies must be durable before the image stops naming the
        // layers they came from.
        co_await blk().co_begin_request();
        auto r = co_await blk().co_flush();
        blk().end_request();
        co_return r;
    }

    // Inside a request of the job: the status of [offset, offset + max) and,
    // if the layers below top hold data there, a copy of it up into top.
    // `n` gets how far the answer held.
    Task<Result<void>> co_stream_chunk(uint64_t offset, uint64_t max, const AlignedBuffer& buf, uint64_t& n,
                                       bool& copy) {
        auto own = co_await blk().co_block_status(offset, max);
        if (!own) co_return std::unexpected(own.error());
        n = std::clamp<uint64_t>(own->bytes, 1, max);
        if (own->allocated) co_return Result<void>{};  // top has it already
        BlockEdge* below = top_->chain_child();
        auto st = co_await co_block_status_above(*below, base_.get(), offset, n);
        if (!st) co_return std::unexpected(st.error());
        // Nothing below answers past the end of a shorter backing file.
        n = st->bytes ? std::min(st->bytes, n) : n;
        copy = st->allocated;
        if (!copy) co_return Result<void>{};
        const iovec iov{buf.data(), n};
        co_return co_await blk().co_preadv(offset, n, std::span(&iov, 1), kCopyOnRead);
    }

    // QEMU's stream_prepare: top names base from now on; the layers between
    // go when nothing else holds them.
    Result<void> prepare() override {
        release_nodes();
        if (!top_->child(ChildRole::backing)) return {};
        if (auto r = set_backing(*top_, base_, name_); !r) return r;
        if (base_)
            LOG_INFO("stream job '%s': node '%s' now has node '%s' as its backing file", id().c_str(),
                     top_->node_name().c_str(), base_->node_name().c_str());
        else
            LOG_INFO("stream job '%s': node '%s' has no backing file now", id().c_str(), top_->node_name().c_str());
        return {};
    }

    const std::shared_ptr<BlockNode> top_, base_;
    const std::optional<std::string> name_;
};

}  // namespace

std::unique_ptr<BlockJob> make_stream_job(StreamJobOptions options) {
    return std::make_unique<StreamJob>(std::move(options));
}

}  // namespace ioplane::block
