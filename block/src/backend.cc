#include "ioplane/block/backend.h"

#include <algorithm>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::block {

BlockBackend::BlockBackend(std::shared_ptr<BlockNode> node, bool writable)
    : node_(std::move(node)), writable_(writable) {
    node_->users_.push_back(this);
}

BlockBackend::~BlockBackend() {
    auto& users = node_->users_;
    users.erase(std::remove(users.begin(), users.end(), this), users.end());
}

Task<void> BlockBackend::enter() {
    for (;;) {
        node_->in_flight_.fetch_add(1, std::memory_order_seq_cst);  // pairs with drained_begin()
        if (!node_->quiesced()) break;
        leave();
        co_await node_->parked_.wait_while([this] { return node_->quiesced(); });
    }
    // After a drained section the node may live in another context now. It
    // cannot move again while this request is counted.
    if (AioContext::current() != &node_->ctx()) co_await schedule_on(node_->ctx());
    assert_in_context(node_->ctx());
}

void BlockBackend::leave() {
    if (node_->in_flight_.fetch_sub(1, std::memory_order_seq_cst) == 1) aio_wait_kick();
}

// Counts a request for its lifetime (RAII, so every return path leaves),
// after enter(). Unless its owner counts it: with queuing disabled the co_*
// functions run inside the owner's co_begin_request()/end_request(), which
// already holds drained sections off, and counting again would cost two
// more atomic read-modify-writes per request for nothing.
class BlockBackend::InFlight {
public:
    explicit InFlight(BlockBackend& blk) : blk_(blk) {
        if (blk_.queue_requests_) return;
        IOPLANE_ASSERT(blk_.node_->in_flight() > 0);  // inside the owner's request
        assert_in_context(blk_.node_->ctx());
    }
    ~InFlight() {
        if (blk_.queue_requests_) blk_.leave();
    }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

private:
    BlockBackend& blk_;
};

Result<void> BlockBackend::check_range(uint64_t offset, uint64_t bytes, bool write) const {
    const uint64_t size = length();
    if (offset > size || bytes > size - offset)
        return fail(write ? ENOSPC : EINVAL, "node '" + node_->node_name() + "': request past the end");
    if (write && (!writable_ || node_->read_only()))
        return fail(EPERM, "node '" + node_->node_name() + "': read-only");
    return {};
}

Task<Result<void>> BlockBackend::co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
    if (auto r = check_range(offset, bytes, false); !r) co_return r;
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    co_return co_await node_->driver().co_preadv(offset, bytes, iov);
}

Task<Result<void>> BlockBackend::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                            uint32_t flags) {
    if (auto r = check_range(offset, bytes, true); !r) co_return r;
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    Driver& drv = node_->driver();
    const bool emulate_fua = (flags & kWriteFua) && !drv.caps().can_fua;
    auto r = co_await drv.co_pwritev(offset, bytes, iov, emulate_fua ? flags & ~kWriteFua : flags);
    if (r && emulate_fua) r = co_await drv.co_flush();
    co_return r;
}

Task<Result<void>> BlockBackend::co_flush() {
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    co_return co_await node_->driver().co_flush();
}

Task<Result<void>> BlockBackend::co_pdiscard(uint64_t offset, uint64_t bytes) {
    if (auto r = check_range(offset, bytes, true); !r) co_return r;
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    co_return co_await node_->driver().co_pdiscard(offset, bytes);
}

Task<Result<void>> BlockBackend::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    if (auto r = check_range(offset, bytes, true); !r) co_return r;
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    Driver& drv = node_->driver();
    const bool emulate_fua = (flags & kWriteFua) && !drv.caps().can_fua;
    auto r = co_await drv.co_pwrite_zeroes(offset, bytes, emulate_fua ? flags & ~kWriteFua : flags);
    if (r && emulate_fua) r = co_await drv.co_flush();
    co_return r;
}

Task<Result<BlockStatus>> BlockBackend::co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) {
    if (auto r = check_range(offset, bytes, false); !r) co_return std::unexpected(r.error());
    if (queue_requests_) co_await enter();
    InFlight counted(*this);
    co_return co_await node_->driver().co_block_status(offset, bytes, query);
}

}  // namespace ioplane::block
