#include "mirror_top.h"

#include <algorithm>

#include "../io_vector.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/thread_contract.h"

namespace ioplane::block {

// QEMU's bdrv_mirror_top_pwritev: the data goes to the target after the
// source, so it is taken from a copy of its own — a guest that changes its
// buffer meanwhile must not leave the two different.
Task<Result<void>> MirrorTop::co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                         uint32_t flags) {
    if (!job_ || !job_->copy_writes()) co_return co_await edge().co_pwritev(offset, bytes, iov, flags);
    AlignedBuffer bounce(std::max<uint32_t>(file().limits().memory_alignment, 4096), bytes);
    if (!bounce) co_return fail(ENOMEM, "mirror_top node '" + node().node_name() + "': no memory for a write");
    iov_to_buffer(iov, 0, bounce.data(), bytes);
    const iovec copy = bounce.whole();
    co_return co_await co_do_write(Method::data, offset, bytes, std::span(&copy, 1), flags);
}

Task<Result<void>> MirrorTop::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    return co_do_write(Method::zeroes, offset, bytes, {}, flags);
}

Task<Result<void>> MirrorTop::co_pdiscard(uint64_t offset, uint64_t bytes) {
    return co_do_write(Method::discard, offset, bytes, {}, 0);
}

// QEMU's bdrv_mirror_top_do_write: the write's range waits for copies in
// flight over it, the source changes, then the target where it is in sync.
Task<Result<void>> MirrorTop::co_do_write(Method method, uint64_t offset, uint64_t bytes,
                                          std::span<const iovec> iov, uint32_t flags) {
    assert_in_context(node().ctx());
    ActiveMirror* job = job_ && job_->copy_writes() ? job_ : nullptr;
    uint64_t ticket = 0;
    if (job) ticket = co_await job->co_active_write_prepare(offset, bytes);
    Result<void> r;
    switch (method) {
        case Method::data: r = co_await edge().co_pwritev(offset, bytes, iov, flags); break;
        case Method::zeroes: r = co_await edge().co_pwrite_zeroes(offset, bytes, flags); break;
        case Method::discard: r = co_await edge().co_pdiscard(offset, bytes); break;
    }
    if (job) {
        if (r) co_await job->co_sync_target_write(method, offset, bytes, iov, flags);
        job->active_write_settle(ticket);
    }
    co_return r;
}

Result<std::shared_ptr<BlockNode>> make_mirror_top_node(BlockGraph& graph, const std::string& name,
                                                        const std::shared_ptr<BlockNode>& source) {
    assert_in_main_thread();
    auto node = std::make_shared<BlockNode>(name.empty() ? graph.anonymous_name() : name,
                                            std::make_unique<MirrorTop>(), source->ctx(), source->read_only());
    if (auto r = node->attach_child(ChildRole::filtered, source); !r) return std::unexpected(r.error());
    node->refresh_limits();
    graph.add_child_node(node);
    return node;
}

MirrorTop& mirror_top_of(BlockNode& node) { return static_cast<MirrorTop&>(node.driver()); }

}  // namespace ioplane::block
