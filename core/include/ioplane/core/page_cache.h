// Serving file I/O from memory without a worker hop. A call that copies
// pages already in memory costs a microsecond; sending it to a worker (the
// thread pool or io_uring's io-wq) costs two thread wake-ups. Callers try
// these first and hand what they refuse to a worker.
//
//  - Most filesystems take RWF_NOWAIT on reads (and some on writes): the
//    kernel copies cached pages and says EAGAIN rather than wait for a
//    device or a lock.
//  - tmpfs and ramfs refuse RWF_NOWAIT (EOPNOTSUPP), but their pages live
//    in memory unless swapped out: there cachestat(2) says whether every
//    page of a range is present, and a plain call copies it. A write there
//    can still wait for the inode lock while another write of the same file
//    runs (in a worker, say): a stall as long as that write, never a wait
//    for a device.
//
// Thread contract: any thread; every function is a system call wrapper.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <span>

namespace ioplane {

enum class PageCacheMode {
    none,     // do everything in a worker
    nowait,   // try RWF_NOWAIT (reads; writes too until EOPNOTSUPP)
    memory,   // memory filesystem: plain calls on ranges cachestat finds present
};

// The mode for an fd opened for buffered I/O (fstatfs: tmpfs and ramfs are
// `memory`, anything else `nowait`). Files opened with O_DIRECT or O_SYNC
// should use `none`: their calls wait for the device whatever the cache.
PageCacheMode page_cache_mode(int fd);

// Whether every page of [offset, offset + length) is in memory; false when
// some is not, or the kernel has no cachestat (Linux < 6.5).
bool pages_in_memory(int fd, uint64_t offset, uint64_t length);

// One transfer without waiting for a device: with `nowait`, preadv2/pwritev2
// with RWF_NOWAIT; with `memory`, a plain call if the range is in memory.
// Returns bytes (maybe short: the caller sends the rest to a worker),
// -EAGAIN when the call would wait (or the mode is `none`), -EOPNOTSUPP
// when the file takes no RWF_NOWAIT for this direction, or -errno.
ssize_t transfer_from_memory(PageCacheMode mode, int fd, bool write, std::span<const iovec> iov, uint64_t offset,
                             uint64_t bytes);

}  // namespace ioplane
