// mirror_top (QEMU's bdrv_mirror_top in block/mirror.c): the filter a
// mirror job (blockdev-mirror, active block-commit) inserts above its source
// for its life. It takes the source's place under every parent and user, so
// that every write to the source passes through it, and is named by
// filter-node-name or "#blockN". It is not a driver blockdev-add knows: the
// job builds it (make_mirror_top_node) and drops it.
//
// Reads, flushes and block status pass through. Writes, write-zeroes and
// discards pass through too unless a job in copy-mode write-blocking (QEMU's
// active mirror) is attached: then each also reaches the target before it
// completes (MirrorTop::ActiveMirror below).
//
// Thread contract: as Driver's; set_job in the main thread inside a drained
// section of the node.
#pragma once

#include <memory>
#include <span>

#include "../filter_driver.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

class BlockGraph;

class MirrorTop final : public FilterDriver {
public:
    // What a write changes (QEMU's MirrorMethod).
    enum class Method { data, zeroes, discard };

    // The job's side of an active write (QEMU's active_write_prepare,
    // do_sync_target_write and active_write_settle), called in the node's
    // context inside the write's request of this node.
    class ActiveMirror {
    public:
        virtual ~ActiveMirror() = default;
        // Whether writes are copied to the target now (write-blocking, and
        // the job neither failed nor was cancelled).
        virtual bool copy_writes() const = 0;
        // Before the source changes: registers the write's range and waits
        // for older copies and active writes over it to end, so that none
        // of them lands in the target after this one. Returns the ticket
        // for settle.
        virtual Task<uint64_t> co_active_write_prepare(uint64_t offset, uint64_t bytes) = 0;
        // Beside the source write: writes to the target the parts that are
        // in sync (clean in the job's bitmap); a failure makes the range
        // dirty again and goes to the job's on-target-error.
        virtual Task<void> co_sync_target_write(Method method, uint64_t offset, uint64_t bytes,
                                                std::span<const iovec> iov, uint32_t flags) = 0;
        // The source write failed (the target's may not have): the range is
        // dirty again, for the background copy to take what the source
        // reads there.
        virtual void source_write_failed(uint64_t offset, uint64_t bytes) = 0;
        // The write is over (whatever the outcome): its range is free.
        virtual void active_write_settle(uint64_t ticket) = 0;
    };

    const char* format_name() const override { return "mirror_top"; }

    // Main thread, drained: the job writes go to, or null (pass-through).
    void set_job(ActiveMirror* job) { job_ = job; }

    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override;
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;

private:
    Task<Result<void>> co_do_write(Method method, uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                   uint32_t flags);
    Task<Result<void>> co_source_write(Method method, uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                       uint32_t flags);
    // The target's part of an active write, run beside the source's.
    struct TargetWrite {
        bool done = false;
        CoQueue finished;
    };
    static Task<void> co_target_write(ActiveMirror& job, TargetWrite& target, Method method, uint64_t offset,
                                      uint64_t bytes, std::span<const iovec> iov, uint32_t flags);

    ActiveMirror* job_ = nullptr;  // node's context; changes only while drained
};

// Main thread: a mirror_top node named `name` ("" for "#blockN"; the
// caller checked it with check_new_node_name) over `source`, in the
// source's context, with no parents yet. It is registered in `graph`, so
// that query-named-block-nodes lists it and it is found by name while it
// lives.
Result<std::shared_ptr<BlockNode>> make_mirror_top_node(BlockGraph& graph, const std::string& name,
                                                        const std::shared_ptr<BlockNode>& source);
// Main thread: the filter of a node make_mirror_top_node made.
MirrorTop& mirror_top_of(BlockNode& node);

}  // namespace ioplane::block
