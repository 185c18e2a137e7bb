#include "mirror_top.h"

#include <algorithm>

#include "../io_vector.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
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
// flight over it, then the source and, where it is in sync, the target
// change. QEMU writes the target after the source; here the two writes run
// side by side, so a guest's write waits for the slower one instead of both
// in turn. The range stays registered until both are over, so no copy
// starts there meanwhile; a failed source write makes it dirty again.
Task<Result<void>> MirrorTop::co_do_write(Method method, uint64_t offset, uint64_t bytes,
                                          std::span<const iovec> iov, uint32_t flags) {
    assert_in_context(node().ctx());
    ActiveMirror* job = job_ && job_->copy_writes() ? job_ : nullptr;
    if (!job) co_return co_await co_source_write(method, offset, bytes, iov, flags);
    const uint64_t ticket = co_await job->co_active_write_prepare(offset, bytes);
    TargetWrite target;
    spawn_now(co_target_write(*job, target, method, offset, bytes, iov, flags));
    Result<void> r = co_await co_source_write(method, offset, bytes, iov, flags);
    while (!target.done) co_await target.finished.wait_while([&target] { return !target.done; });
    if (!r) job->source_write_failed(offset, bytes);
    job->active_write_settle(ticket);
    co_return r;
}

Task<Result<void>> MirrorTop::co_source_write(Method method, uint64_t offset, uint64_t bytes,
                                              std::span<const iovec> iov, uint32_t flags) {
    switch (method) {
        case Method::data: return edge().co_pwritev(offset, bytes, iov, flags);
        case Method::zeroes: return edge().co_pwrite_zeroes(offset, bytes, flags);
        case Method::discard: break;
    }
    return edge().co_pdiscard(offset, bytes);
}

Task<void> MirrorTop::co_target_write(ActiveMirror& job, TargetWrite& target, Method method, uint64_t offset,
                                      uint64_t bytes, std::span<const iovec> iov, uint32_t flags) {
    co_await job.co_sync_target_write(method, offset, bytes, iov, flags);
    target.done = true;
    target.finished.restart_all();
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
