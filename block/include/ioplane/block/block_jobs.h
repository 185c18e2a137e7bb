// The block jobs that copy data (spec: live-block-operations.rst):
//  - stream (block-stream): the layers between `top` and `base` are copied
//    up into `top`, which then names `base` (or nothing) as its backing file;
//  - commit (block-commit, not of the active layer): the layers from `top`
//    down to `base` are copied down into `base`, and the overlay of `top`
//    then names `base` as its backing file;
//  - mirror (blockdev-mirror, and block-commit of the active layer): the
//    source is copied to the target while in use; on job-complete the
//    target takes the source's place;
//  - backup (blockdev-backup): the source as it was when the job started is
//    copied to the target, a copy-before-write filter saving what writes
//    are about to change.
// They keep the layers they drop from changing under them (other users may
// not write them) and leave every image consistent if they are cancelled or
// the daemon dies: the backing file name changes only after the copied data
// is durable.
//
// Thread contract: main thread (the factories; JobManager::start runs the
// job).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "ioplane/block/block_job.h"

namespace ioplane::block {

class BlockGraph;

struct StreamJobOptions {
    BlockJobOptions job;
    std::shared_ptr<BlockNode> top;   // receives the data; has a backing chain
    std::shared_ptr<BlockNode> base;  // stays below top; null: stream everything
    std::optional<std::string> backing_file;  // the name top's image gets for base
};
std::unique_ptr<BlockJob> make_stream_job(StreamJobOptions options);

struct CommitJobOptions {
    BlockJobOptions job;
    std::shared_ptr<BlockNode> top;      // the highest layer committed; not the active layer
    std::shared_ptr<BlockNode> base;     // receives the data; below top
    std::shared_ptr<BlockNode> overlay;  // the node whose backing child is top
    std::optional<std::string> backing_file;  // the name overlay's image gets for base
};
std::unique_ptr<BlockJob> make_commit_job(CommitJobOptions options);

// How much a mirror copies before following writes (QEMU's MirrorSyncMode).
enum class MirrorSync {
    full,  // everything the source reads as (the target is zeroed first)
    top,   // what the source's layers above `base` hold
    none,  // nothing: only what is written from now on
};

struct MirrorJobOptions {
    BlockJobOptions job;
    BlockGraph* graph = nullptr;  // registers the mirror_top filter by its name
    // block-commit of the active layer: job type "commit", the target is
    // the base, below the source in its chain, reopened read-write.
    bool commit = false;
    std::shared_ptr<BlockNode> source;  // replaced by the target on job-complete
    // `replaces`: the node the target replaces instead of the source (one
    // the source's data passes through unchanged: the source, or below
    // filters), looked up by name at job-complete; empty: the source.
    std::string replaces;
    std::string filter_node_name;  // of the mirror_top filter; empty: "#blockN"
    // copy-mode write-blocking (QEMU's active mirror): a write through the
    // filter reaches the target too before it completes.
    bool write_blocking = false;
    std::shared_ptr<BlockNode> target;
    MirrorSync sync = MirrorSync::full;
    std::shared_ptr<BlockNode> base;  // sync top: what is at or below it is not copied
    uint64_t granularity = 0;         // of the dirty bitmap; 0: the target's default
    uint64_t buf_size = 0;            // bytes in flight at most; 0: 16 MiB
};
std::unique_ptr<BlockJob> make_mirror_job(MirrorJobOptions options);

// What blockdev-backup copies (QEMU's MirrorSyncMode for backup;
// "incremental" is bitmap with bitmap-mode on-success).
enum class BackupSync {
    full,    // everything
    top,     // what the source's own layer allocates
    bitmap,  // what the bitmap marks
    none,    // only the old data of what writes change (fleecing)
};
// What becomes of the bitmap when the backup ends (QEMU's BitmapSyncMode).
enum class BitmapSyncMode {
    on_success,  // if the backup succeeded, only writes made meanwhile stay dirty
    never,       // the bitmap keeps its bits, and gets the writes made meanwhile
    always,      // as on_success, and on failure what was not copied stays dirty
};

struct BackupJobOptions {
    BlockJobOptions job;
    BlockGraph* graph = nullptr;  // opens the copy-before-write filter
    std::shared_ptr<BlockNode> source;
    std::shared_ptr<BlockNode> target;  // as long as the source
    BackupSync sync = BackupSync::full;
    DirtyBitmap* bitmap = nullptr;  // a bitmap of the source, or null
    BitmapSyncMode bitmap_mode = BitmapSyncMode::on_success;
    std::string filter_node_name;  // of the filter; empty: "#blockN"
};
std::unique_ptr<BlockJob> make_backup_job(BackupJobOptions options);

// Main thread: the node below `node` in its chain (backing or filtered
// child), or null.
std::shared_ptr<BlockNode> chain_below(const BlockNode& node);
// Main thread: whether `base` is below `top` in top's chain (not top itself).
bool chain_contains(const BlockNode& top, const BlockNode& base);
// Main thread: the first node at or below `node` that is not a filter
// (QEMU's bdrv_skip_filters).
std::shared_ptr<BlockNode> skip_filters(const std::shared_ptr<BlockNode>& node);
// Main thread: whether a node with `from`'s data may take `to_replace`'s
// place: `from` is `to_replace`, or a filter over a node that may (QEMU's
// bdrv_recurse_can_replace).
bool can_replace(const BlockNode& from, const BlockNode& to_replace);

}  // namespace ioplane::block
