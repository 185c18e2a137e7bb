// The block driver interface: coroutine functions only (no parallel callback
// API, QEMU's lesson). One Driver instance belongs to one BlockNode and runs
// in that node's AioContext. Requests reach a driver only through its node's
// request path (io.cc), which has already checked bounds and permissions,
// aligned the request to request_alignment() and split it at max_transfer();
// a driver reaches its children only through its node's edges (child()).
//
// Thread contract: every co_* function is called in the node's home context
// (a coroutine running there); attach/detach and child_perms in the main
// thread (attach/detach inside a drained section).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/error.h"
#include "ioplane/core/keyval.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

class BlockEdge;
class BlockNode;
enum class ChildRole;

// Request flags.
enum : uint32_t {
    kWriteFua = 1u << 0,     // durable when it completes (write, write_zeroes)
    kMayUnmap = 1u << 1,     // write_zeroes may deallocate
    kNoFallback = 1u << 2,   // write_zeroes: fail with ENOTSUP rather than write data (NBD FAST_ZERO)
    kCopyOnRead = 1u << 3,   // read (request path only): data the node does not allocate is written into it
    kSerialising = 1u << 4,  // write (request path only): overlapping requests do not run beside it (a
                             // copy into a fleecing image, which readers read through to its backing file)
};

// Block status of the range starting at the queried offset (SEEK_DATA/HOLE
// granularity): `bytes` say how far the answer holds. QEMU's
// BDRV_BLOCK_DATA/ZERO/ALLOCATED/OFFSET_VALID, with the node.
struct BlockStatus {
    uint64_t bytes = 0;
    bool data = true;        // contents are stored (not a hole)
    bool zero = false;       // reads return zeroes
    // This layer decides what reads return (its own data, or zeroes it
    // records). False only in a format with a backing chain: reads come from
    // below. A protocol node (file, null-co) answers for every byte, holes
    // included (they read as zeroes).
    bool allocated = true;
    // Where the data lives, when known: `offset` in node `file` (the bottom
    // of the stack, e.g. the file node under raw).
    BlockNode* file = nullptr;
    uint64_t offset = 0;
};

// How much a block-status caller needs to know.
enum class StatusQuery {
    exact,  // where the answer changes (NBD_CMD_BLOCK_STATUS, maps)
    quick,  // whether the range *starts* in a hole, and how far that goes; a
            // data answer may then cover the whole range (reads deciding
            // whether to send a hole: on tmpfs, finding the end of data scans
            // every page up to the next hole)
};

struct DriverCaps {
    bool can_write = true;
    bool can_discard = false;
    bool can_write_zeroes = false;  // efficient (no data written)
    bool can_fua = false;           // native FUA (else the backend flushes after the write)
    bool can_flush = true;
    bool can_block_status = false;  // answers better than "all data"
    bool can_truncate = false;
};

// The backing file an image names in its own metadata.
struct BackingFile {
    std::string filename;  // as written in the image (may be relative to it)
    std::string format;    // empty: not recorded
};

class Driver {
public:
    virtual ~Driver() = default;
    virtual const char* format_name() const = 0;
    // Any thread: what QEMU reports as the node's "file" (a path, or a
    // pseudo-URI such as null-co://); constant.
    virtual std::string filename() const { return std::string(format_name()) + "://"; }
    // Any thread: whether writes go through the host's page cache (QEMU's
    // cache.direct), for query-named-block-nodes.
    virtual bool direct_io() const { return false; }
    // Main thread: bytes the image takes on the host (QEMU's actual-size), a
    // quick system call at most.
    virtual uint64_t allocated_bytes() const { return 0; }
    // Main thread: what the format adds to QEMU's ImageInfo
    // (query-named-block-nodes): cluster-size, snapshots, format-specific.
    virtual void add_image_info(nlohmann::json& image) const { (void)image; }

    // Once the node's children from its factory are attached: reads what
    // the driver needs from them (a format's header and tables). Run to
    // completion in the node's context before the node is used.
    virtual Task<Result<void>> co_open() { co_return Result<void>{}; }
    // Main thread, after co_open succeeded and before the node has users:
    // sets up the driver's part of the node's main-thread state (a
    // format's persistent dirty bitmaps, made in a drained section). An
    // error fails the open.
    virtual Result<void> finish_open() { return {}; }
    // Before the node goes away, drained: writes back what the driver keeps
    // in memory and marks the image clean.
    virtual Task<Result<void>> co_close() { co_return Result<void>{}; }
    // Main thread: whether co_close has work to do (only then is it run,
    // in the node's context, when the node goes).
    virtual bool needs_close() const { return false; }
    // Any thread, constant after open: the format's cluster size (QEMU's
    // BlockDriverInfo.cluster_size; new dirty bitmaps default to it), 0
    // when it has none. A filter's and raw's are their child's.
    virtual uint64_t cluster_size() const { return 0; }
    // Main thread: whether the image can store a new persistent dirty
    // bitmap `name` of `granularity` beside the node's other persistent
    // ones (QEMU's bdrv_co_can_store_new_dirty_bitmap, with its messages).
    // The default, for formats that store none: refused (ENOTSUP).
    virtual Result<void> can_store_bitmap(const std::string& name, uint64_t granularity) const;
    // The node drained: the persistent bitmap `name` leaves the image now
    // (QEMU's bdrv_co_remove_persistent_dirty_bitmap), before the node's
    // DirtyBitmap goes; one the image does not hold is no error. The
    // default, for formats that store none: nothing to do.
    virtual Task<Result<void>> co_remove_persistent_bitmap(const std::string& name);

    // Main thread: whether the node takes a backing child (a "backing"
    // option), and the one its image names (opened when the option is
    // absent).
    virtual bool supports_backing() const { return false; }
    virtual std::optional<BackingFile> backing_file() const { return std::nullopt; }
    // In the node's context, the node drained: the image names `file` (of
    // `format`, empty: unknown) as its backing file from now on, or none
    // when `file` is empty (QEMU's bdrv_change_backing_file: a stream or a
    // commit dropped the layers between). Durable on return.
    virtual Task<Result<void>> co_change_backing_file(const std::string& file, const std::string& format);

    virtual Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) = 0;
    virtual Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                          uint32_t flags) = 0;
    virtual Task<Result<void>> co_flush() = 0;
    virtual Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes);
    virtual Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags);
    virtual Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query);
    virtual Task<Result<void>> co_truncate(uint64_t size);

    // Any context: constant between truncates.
    virtual uint64_t length() const = 0;
    // Offsets and lengths of requests are multiples of this (O_DIRECT needs
    // it); the request path pads others (read-modify-write).
    virtual uint32_t request_alignment() const { return 1; }
    // Buffers must start and end at multiples of this; the request path
    // bounces others.
    virtual uint32_t memory_alignment() const { return 1; }
    // The largest read or write the driver takes at once (0: no limit); the
    // request path splits larger ones.
    virtual uint64_t max_transfer() const { return 0; }
    virtual DriverCaps caps() const = 0;

    // Main thread: the permissions this node takes on a child with `role`
    // and shares with the child's other parents, given what this node's own
    // parents need (`perm`) and share (`shared`). The default is QEMU's
    // (bdrv_default_perms): a filter passes both through; a format's file
    // takes write (when the node is writable) and shares no write or
    // resize; a backing child is read only.
    struct Perms {
        uint32_t perm;
        uint32_t shared;
    };
    virtual Perms child_perms(ChildRole role, uint32_t perm, uint32_t shared) const;

    // Main thread, drained: the node moves to another context. Drivers with
    // per-context resources (an io_uring, fd handlers) release and recreate
    // them here.
    virtual void detach_aio_context() {}
    virtual void attach_aio_context(AioContext&) {}

    // Main thread: the driver's options blockdev-reopen may change, and
    // reading their new values (from `options`, marking them used) into a
    // change that the returned function makes, drained. Errors leave the
    // driver as it was.
    virtual std::vector<std::string> reopenable_options() const { return {}; }
    virtual Result<std::function<void()>> prepare_reopen(OptionReader& options) {
        (void)options;
        return std::function<void()>{};
    }

    // Main thread, drained: the node becomes read-only or writable
    // (blockdev-reopen); a driver with a file reopens it for the new access.
    virtual Result<void> reopen(bool read_only) {
        (void)read_only;
        return {};
    }

    // Main thread: called once by the node that owns this driver.
    void bind(BlockNode& node) { node_ = &node; }

protected:
    // Any thread, after bind.
    BlockNode& node() const { return *node_; }
    // Any thread: the node's edge to its child with `role` (it must exist).
    BlockEdge& child(ChildRole role) const;

private:
    BlockNode* node_ = nullptr;
};

}  // namespace ioplane::block
