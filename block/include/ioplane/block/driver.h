// The block driver interface: coroutine functions only (no parallel callback
// API, QEMU's lesson). One Driver instance belongs to one BlockNode and runs
// in that node's AioContext.
//
// Thread contract: every co_* function is called in the node's home context
// (a coroutine running there); attach/detach in the main thread inside a
// drained section.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/error.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

// Request flags.
enum : uint32_t {
    kWriteFua = 1u << 0,     // durable when it completes (write, write_zeroes)
    kMayUnmap = 1u << 1,     // write_zeroes may deallocate
    kNoFallback = 1u << 2,   // write_zeroes: fail with ENOTSUP rather than write data (NBD FAST_ZERO)
};

// Block status of the range starting at the queried offset (SEEK_DATA/HOLE
// granularity): `bytes` say how far the answer holds.
struct BlockStatus {
    uint64_t bytes = 0;
    bool data = true;        // contents come from this node (not a hole)
    bool zero = false;       // reads return zeroes
    bool allocated = true;   // allocated in this node (not from a backing file)
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
    // Offsets and lengths must be multiples of this (O_DIRECT needs it).
    virtual uint32_t request_alignment() const { return 1; }
    virtual DriverCaps caps() const = 0;

    // Main thread, drained: the node moves to another context. Drivers with
    // per-context resources (an io_uring, fd handlers) release and recreate
    // them here.
    virtual void detach_aio_context() {}
    virtual void attach_aio_context(AioContext&) {}
};

}  // namespace ioplane::block
