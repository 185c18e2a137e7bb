// copy-before-write (QEMU's block/copy-before-write.c and block-copy.c): a
// filter that, before a write, write-zeroes or discard changes a chunk of
// its child (the source) for the first time, copies the chunk's old data to
// its `target`. The target then holds the source as it was when the filter
// was inserted: what blockdev-backup copies (its job copies the chunks no
// write has touched yet, through the same state) and what image fleecing
// reads, either through a `snapshot-access` node above the filter or from a
// target whose backing file is the source (the copies are then serialising
// writes, so that a reader of the target never sees the source's new data).
//
// State, per chunk of chunk() bytes (QEMU's bitmaps of the same names):
//  - pending: not copied yet and wanted (all, or the chunks of `bitmap`);
//  - access: readable through the snapshot (pending when the filter was
//    made; snapshot discards drop chunks);
//  - done: the target holds the snapshot's data of the chunk, copied before
//    a write (snapshot reads go there, others to the source).
// A copy resets its chunks in `pending` before it reads, and registers
// them, so that a second writer waits for it instead of copying again; a
// snapshot read from the source registers its range, and a write waits for
// such reads after copying, before it changes the source.
//
// Thread contract: the node's context for the co_* members and the state;
// main thread for open and the accessors marked so.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>

#include "buffer_pool.h"
#include "filter_driver.h"
#include "ioplane/block/dirty_bits.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

// on-cbw-error: what a failed copy breaks.
enum class OnCbwError {
    break_guest_write,  // the write fails (the snapshot stays right)
    break_snapshot,     // the write goes on; snapshot reads fail from then on
};

class CopyBeforeWrite final : public FilterDriver {
public:
    // `initial`: the chunks to copy (of any granularity); null: all.
    // `timeout_ns`: cbw-timeout (0: a guest write waits for its copy however
    // long it takes).
    CopyBeforeWrite(uint64_t length, uint64_t chunk, const DirtyBits* initial, OnCbwError on_error,
                    int64_t timeout_ns = 0);
    const char* format_name() const override { return "copy-before-write"; }

    // Any thread (constant).
    uint64_t chunk() const { return chunk_; }

    // The node's context: chunks not copied yet (a backup job sets its
    // own start: what a bitmap says, or drops unallocated chunks).
    DirtyBits& pending() { return pending_; }
    const DirtyBits& access() const { return access_; }

    // What a copy that failed failed at: reading the source or writing the
    // target (a backup job's on-source-error or on-target-error).
    struct CopyError {
        Error error;
        bool read = false;
    };
    // The node's context, inside a counted request of the node: copies the
    // pending chunks that [offset, offset + bytes) touches, waiting for
    // copies of those chunks in flight. `copied` is told the bytes of each
    // chunk run copied (a job's progress). On an error the chunks that
    // failed are pending again.
    // A set `*stop` ends the copy before its next run of chunks.
    Task<std::optional<CopyError>> co_copy(uint64_t offset, uint64_t bytes, const bool* stop = nullptr);
    void set_progress(std::function<void(uint64_t)> copied) { progress_ = std::move(copied); }

    // The snapshot, for snapshot-access (QEMU's bdrv_co_*_snapshot): reads
    // of chunks the snapshot may not read fail with EACCES.
    Task<Result<void>> co_snapshot_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov);
    Task<Result<BlockStatus>> co_snapshot_block_status(uint64_t offset, uint64_t bytes, StatusQuery query);
    // The snapshot no longer needs [offset, offset + bytes) (whole chunks):
    // writes there copy nothing from now on, and the target may drop it.
    Task<Result<void>> co_snapshot_pdiscard(uint64_t offset, uint64_t bytes);

    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override;
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
    Perms child_perms(ChildRole role, uint32_t perm, uint32_t shared) const override;
    DriverCaps caps() const override;

private:
    // A range in flight: a copy of chunks, or a snapshot read of the source.
    struct Busy {
        uint64_t offset, end;
        CoQueue waiters;
    };
    class BusyRange;
    static Busy* find_overlap(std::list<Busy>& list, uint64_t offset, uint64_t end);

    Task<Result<void>> co_before_write(uint64_t offset, uint64_t bytes);
    // A guest write's copy with cbw-timeout: ETIMEDOUT if the copy takes
    // longer; it then goes on in the background, counted in the node (so
    // that drains wait for it), and stops before its next run of chunks.
    struct TimedCopy;
    Task<std::optional<CopyError>> co_copy_with_timeout(uint64_t offset, uint64_t bytes);
    Task<void> co_copy_in_background(std::shared_ptr<TimedCopy> copy, std::shared_ptr<BlockNode> keep,
                                     uint64_t offset, uint64_t bytes);
    Task<std::optional<CopyError>> co_copy_run(uint64_t offset, uint64_t bytes);
    BlockEdge& target() const { return child(ChildRole::target); }
    // Copies into a target whose backing chain holds the source are
    // serialising (see the file comment).
    uint32_t target_write_flags() const;

    const uint64_t chunk_;
    const OnCbwError on_error_;
    const int64_t timeout_ns_;
    DirtyBits pending_, access_, done_;
    std::list<Busy> copies_, snapshot_reads_;
    std::optional<Error> snapshot_error_;  // break-snapshot: why reads fail
    std::function<void(uint64_t)> progress_;
    BufferPool buffers_;  // for the copies: the job's and guest writes'
};

// Main thread: the filter of a copy-before-write node, or null.
CopyBeforeWrite* as_copy_before_write(BlockNode& node);

}  // namespace ioplane::block
