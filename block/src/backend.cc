#include "ioplane/block/backend.h"

#include <algorithm>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "permissions.h"

namespace ioplane::block {
namespace {

// QEMU's exports: read consistently, write if writable, let others do
// anything.
uint32_t user_perm(bool writable, bool resize) {
    uint32_t perm = kPermConsistentRead;
    if (writable) perm |= kPermWrite;
    if (resize) perm |= kPermResize;
    return perm;
}

}  // namespace

Result<void> BlockBackend::can_attach(BlockNode& node, bool writable, const std::string& name, bool resize) {
    return can_attach(node, user_perm(writable, resize), kPermAll, name);
}

Result<void> BlockBackend::can_attach(BlockNode& node, uint32_t perm, uint32_t shared, const std::string& name) {
    assert_in_main_thread();
    BlockEdge probe(nullptr, name, ChildRole::root, node.shared_from_this());
    PermissionUpdate update;
    update.propose(probe, perm, shared);
    return update.check();
}

BlockBackend::BlockBackend(std::shared_ptr<BlockNode> node, bool writable, std::string name, bool resize)
    : BlockBackend(std::move(node), user_perm(writable, resize), kPermAll, std::move(name)) {}

BlockBackend::BlockBackend(std::shared_ptr<BlockNode> node, uint32_t perm, uint32_t shared, std::string name)
    : root_(nullptr, std::move(name), ChildRole::root, std::move(node)), writable_(perm & kPermWrite) {
    assert_in_main_thread();
    PermissionUpdate update;
    update.propose(root_, perm, shared);
    auto r = update.commit();
    IOPLANE_ASSERT(r);  // can_attach() said yes
    root_.child().users_.push_back(this);
}

BlockBackend::~BlockBackend() {
    assert_in_main_thread();
    auto& users = root_.child().users_;
    users.erase(std::remove(users.begin(), users.end(), this), users.end());
}

Task<void> BlockBackend::enter() {
    // The node is read again each round: a drained section may have put
    // another one in its place (a filter above it) before it ended.
    BlockNode* n;
    for (;;) {
        in_flight_.fetch_add(1, std::memory_order_seq_cst);  // pairs with drained_begin()
        n = &node();
        if (!n->quiesced()) break;
        leave();
        co_await n->parked_.wait_while([n] { return n->quiesced(); });
    }
    // After a drained section the node may live in another context now. It
    // cannot move again while this request is counted.
    if (AioContext::current() != &n->ctx()) co_await schedule_on(n->ctx());
    assert_in_context(n->ctx());
}

void BlockBackend::leave() {
    if (in_flight_.fetch_sub(1, std::memory_order_seq_cst) == 1) aio_wait_kick();
}

template <class T>
Task<T> BlockBackend::queued(Task<T> request) {
    co_await enter();
    T r = co_await std::move(request);
    leave();
    co_return r;
}

// With queuing disabled the request runs inside the owner's
// co_begin_request()/end_request(), which already holds drained sections
// off: counting again would cost two more atomic read-modify-writes per
// request for nothing, and no coroutine frame is added.
template <class T>
Task<T> BlockBackend::counted(Task<T> request) {
    if (queue_requests_) return queued(std::move(request));
    IOPLANE_ASSERT(in_flight() > 0);  // inside the owner's request
    assert_in_context(node().ctx());
    return request;
}

Task<Result<void>> BlockBackend::co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                           uint32_t flags) {
    return counted(root_.co_preadv(offset, bytes, iov, flags));
}

Task<Result<void>> BlockBackend::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                            uint32_t flags) {
    return counted(root_.co_pwritev(offset, bytes, iov, flags));
}

Task<Result<void>> BlockBackend::co_flush() { return counted(root_.co_flush()); }

Task<Result<void>> BlockBackend::co_pdiscard(uint64_t offset, uint64_t bytes) {
    return counted(root_.co_pdiscard(offset, bytes));
}

Task<Result<void>> BlockBackend::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    return counted(root_.co_pwrite_zeroes(offset, bytes, flags));
}

Task<Result<void>> BlockBackend::co_truncate(uint64_t size) { return counted(root_.co_truncate(size)); }

Task<Result<BlockStatus>> BlockBackend::co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) {
    return counted(root_.co_block_status(offset, bytes, query));
}

}  // namespace ioplane::block
