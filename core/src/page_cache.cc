#include "ioplane/core/page_cache.h"

#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>

namespace ioplane {

namespace {

// cachestat(2), Linux 6.5; Debian 12's headers predate it.
constexpr long kSysCachestat = 451;
struct CachestatRange {
    uint64_t off;
    uint64_t len;
};
struct Cachestat {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};

std::atomic<bool> g_no_cachestat{false};

}  // namespace

PageCacheMode page_cache_mode(int fd) {
    struct statfs sf;
    if (::fstatfs(fd, &sf) != 0) return PageCacheMode::none;
    const auto type = static_cast<unsigned long>(sf.f_type);
    return type == TMPFS_MAGIC || type == RAMFS_MAGIC ? PageCacheMode::memory : PageCacheMode::nowait;
}

bool pages_in_memory(int fd, uint64_t offset, uint64_t length) {
    if (length == 0 || g_no_cachestat.load(std::memory_order_relaxed)) return false;
    const long page = ::sysconf(_SC_PAGESIZE);
    const uint64_t first = offset / page, last = (offset + length - 1) / page;
    CachestatRange range{first * page, (last - first + 1) * page};
    Cachestat cs{};
    if (::syscall(kSysCachestat, fd, &range, &cs, 0) != 0) {
        if (errno == ENOSYS) g_no_cachestat.store(true, std::memory_order_relaxed);
        return false;
    }
    return cs.nr_cache == last - first + 1;
}

ssize_t transfer_from_memory(PageCacheMode mode, int fd, bool write, std::span<const iovec> iov, uint64_t offset,
                             uint64_t bytes) {
    if (mode == PageCacheMode::none || iov.size() > IOV_MAX || offset > uint64_t(LLONG_MAX)) return -EAGAIN;
    int flags = RWF_NOWAIT;
    if (mode == PageCacheMode::memory) {
        if (!pages_in_memory(fd, offset, bytes)) return -EAGAIN;
        flags = 0;
    }
    ssize_t n;
    do {
        n = write ? ::pwritev2(fd, iov.data(), int(iov.size()), off_t(offset), flags)
                  : ::preadv2(fd, iov.data(), int(iov.size()), off_t(offset), flags);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

}  // namespace ioplane
