// file: a regular file or block device. Reads, writes and flushes go through
// an io_uring bound to the node's context (aio=io_uring, the default) or run
// as blocking syscalls on the context's thread pool (aio=threads: the
// coroutine hops to a worker with run_in_worker and back). Discard and
// write-zeroes use fallocate, block status SEEK_DATA/SEEK_HOLE (both on the
// thread pool), FUA is RWF_DSYNC, flush fdatasync.
#include <atomic>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "drivers.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "ioplane/core/page_cache.h"
#include "ioplane/core/run_in_worker.h"
#include "uring.h"

namespace ioplane::block {
namespace {

// Result of a syscall made on a worker: 0 or -errno.
Result<void> from_ret(int ret, const std::string& what) {
    if (ret >= 0) return {};
    return fail(-ret, what);
}

// Reads or writes the whole range, resuming after short transfers (a signal,
// a pipe-like device) and zero-filling reads past end-of-file (a file
// shrunk behind our back reads as zeroes rather than leaving garbage).
int transfer_all(int fd, std::span<const iovec> iov_in, uint64_t offset, bool write, int rw_flags) {
    std::vector<iovec> iov(iov_in.begin(), iov_in.end());
    size_t first = 0;
    while (first < iov.size()) {
        ssize_t n = write ? pwritev2(fd, &iov[first], int(std::min<size_t>(iov.size() - first, IOV_MAX)), off_t(offset),
                                     rw_flags)
                          : preadv(fd, &iov[first], int(std::min<size_t>(iov.size() - first, IOV_MAX)), off_t(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) {
            if (write) return -EIO;
            for (size_t i = first; i < iov.size(); i++) std::memset(iov[i].iov_base, 0, iov[i].iov_len);
            return 0;
        }
        offset += uint64_t(n);
        size_t left = size_t(n);
        while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
        if (left > 0) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
            iov[first].iov_len -= left;
        }
    }
    return 0;
}

class FileDriver final : public Driver {
public:
    FileDriver(std::string filename, int fd, uint64_t size, uint32_t align, bool block_device, bool direct,
               std::unique_ptr<UringQueue> uring, AioContext& ctx)
        : filename_(std::move(filename)), fd_(fd), size_(size), align_(align), block_device_(block_device),
          direct_(direct), cache_reads_(direct ? PageCacheMode::none : page_cache_mode(fd)), cache_writes_(cache_reads_),
          uring_(std::move(uring)), ctx_(&ctx) {}
    ~FileDriver() override {
        // Nodes are destroyed while their context still runs.
        if (uring_) run_in_context_sync(*ctx_, [this] { uring_->detach(); });
        ::close(fd_);
    }
    const char* format_name() const override { return "file"; }
    std::string filename() const override { return filename_; }
    bool direct_io() const override { return direct_; }
    uint64_t allocated_bytes() const override {
        struct stat st;
        return ::fstat(fd_, &st) == 0 ? uint64_t(st.st_blocks) * 512 : 0;
    }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        if (transfer_in_place(cache_reads_, false, offset, bytes, iov)) co_return Result<void>{};
        if (uring_ && uring_->attached() && iov.size() <= IOV_MAX) {
            int res = co_await uring_->op([&](io_uring_sqe* sqe) {
                io_uring_prep_readv(sqe, fd_, iov.data(), unsigned(iov.size()), offset);
            });
            if (res < 0) co_return from_ret(res, "file '" + filename_ + "': read");
            if (uint64_t(res) == bytes) co_return Result<void>{};
            // Short read (end of file, a signal): finish it the simple way.
        }
        int ret = co_await run_in_worker([&] { return transfer_all(fd_, iov, offset, false, 0); });
        co_return from_ret(ret, "file '" + filename_ + "': read");
    }

    // Buffered I/O of pages in memory is a memcpy: done here it costs a
    // system call or two instead of a trip through io_uring's worker threads
    // or the thread pool, which is where the kernel sends such calls when
    // it cannot complete them inline (always so on tmpfs: no RWF_NOWAIT).
    // See page_cache.h for how each filesystem is asked. Anything not in
    // memory, partly done or large goes the asynchronous way (a large copy
    // here would hold up the loop's other work).
    bool transfer_in_place(PageCacheMode& mode, bool write, uint64_t offset, uint64_t bytes,
                           std::span<const iovec> iov) {
        constexpr uint64_t kMaxInline = 256 * 1024;
        if (mode == PageCacheMode::none || bytes > kMaxInline) return false;
        const ssize_t n = transfer_from_memory(mode, fd_, write, iov, offset, bytes);
        if (n == -EOPNOTSUPP || n == -EINVAL) mode = PageCacheMode::none;  // not for this file
        return n >= 0 && uint64_t(n) == bytes;
    }

    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t flags) override {
        const int rw_flags = (flags & kWriteFua) ? RWF_DSYNC : 0;
        if (!(flags & kWriteFua) && transfer_in_place(cache_writes_, true, offset, bytes, iov))
            co_return Result<void>{};
        if (uring_ && uring_->attached() && iov.size() <= IOV_MAX) {
            int res = co_await uring_->op([&](io_uring_sqe* sqe) {
                io_uring_prep_writev2(sqe, fd_, iov.data(), unsigned(iov.size()), offset, rw_flags);
            });
            if (res < 0) co_return from_ret(res, "file '" + filename_ + "': write");
            if (uint64_t(res) == bytes) co_return Result<void>{};
        }
        int ret = co_await run_in_worker([&] { return transfer_all(fd_, iov, offset, true, rw_flags); });
        co_return from_ret(ret, "file '" + filename_ + "': write");
    }

    Task<Result<void>> co_flush() override {
        int ret;
        if (uring_ && uring_->attached())
            ret = co_await uring_->op([this](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC); });
        else
            ret = co_await run_in_worker([this] { return ::fdatasync(fd_) < 0 ? -errno : 0; });
        co_return from_ret(ret, "file '" + filename_ + "': flush");
    }

    // Drained: nothing is in flight on the ring. Its eventfd moves from the
    // old context's loop to the new one's, each change made in that context.
    void detach_aio_context() override {
        if (uring_) run_in_context_sync(*ctx_, [this] { uring_->detach(); });
    }
    void attach_aio_context(AioContext& ctx) override {
        ctx_ = &ctx;
        if (!uring_) return;
        run_in_context_sync(ctx, [this, &ctx] {
            if (auto r = uring_->attach(ctx); !r)
                LOG_ERROR("file '%s': io_uring in '%s': %s; using threads", filename_.c_str(), ctx.name().c_str(),
                          r.error().describe().c_str());
        });
    }

    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        int ret = co_await run_in_worker([&] { return punch_hole(offset, bytes); });
        // Discard is advisory: a file system without hole punching is fine.
        if (ret == -EOPNOTSUPP || ret == -ENOTSUP) co_return Result<void>{};
        co_return from_ret(ret, "file '" + filename_ + "': discard");
    }

    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        int ret = co_await run_in_worker([&] {
            // A punched hole reads as zeroes; ZERO_RANGE keeps the space allocated.
            if (flags & kMayUnmap) {
                int r = punch_hole(offset, bytes);
                if (r != -EOPNOTSUPP && r != -ENOTSUP) return r;
            }
            int mode = FALLOC_FL_ZERO_RANGE | (block_device_ ? 0 : FALLOC_FL_KEEP_SIZE);
            return ::fallocate(fd_, mode, off_t(offset), off_t(bytes)) < 0 ? -errno : 0;
        });
        if (ret == -EOPNOTSUPP || ret == -ENOTSUP) co_return co_await Driver::co_pwrite_zeroes(offset, bytes, flags);
        if (ret == 0 && (flags & kWriteFua)) co_return co_await co_flush();
        co_return from_ret(ret, "file '" + filename_ + "': write zeroes");
    }

    // Inline, as QEMU does: SEEK_DATA/SEEK_HOLE is a quick lookup in the
    // file system's extent cache, far cheaper than a hop to a worker (which
    // would double the latency of every sparse-aware read).
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        BlockStatus st = block_device_ ? BlockStatus{.bytes = bytes} : seek_status(offset, bytes, query);
        st.file = &node();
        st.offset = offset;
        co_return st;
    }

    Task<Result<void>> co_truncate(uint64_t size) override {
        if (block_device_) co_return fail(ENOTSUP, "file '" + filename_ + "': cannot resize a block device");
        int ret = co_await run_in_worker([&] { return ::ftruncate(fd_, off_t(size)) < 0 ? -errno : 0; });
        if (ret == 0) size_.store(size, std::memory_order_relaxed);
        co_return from_ret(ret, "file '" + filename_ + "': truncate");
    }

    uint64_t length() const override { return size_.load(std::memory_order_relaxed); }
    uint32_t request_alignment() const override { return align_; }
    uint32_t memory_alignment() const override { return direct_ ? align_ : 1; }
    // One system call moves at most 2 GiB - 4 KiB on Linux.
    uint64_t max_transfer() const override { return uint64_t(1) << 30; }

    // Drained: nothing uses the old descriptor.
    Result<void> reopen(bool read_only) override {
        const int fd = ::open(filename_.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct_ ? O_DIRECT : 0));
        if (fd < 0) return fail_errno("file '" + filename_ + "': reopen " + (read_only ? "read-only" : "read-write"));
        ::close(fd_);
        fd_ = fd;
        return {};
    }
    DriverCaps caps() const override {
        return {.can_write = true, .can_discard = true, .can_write_zeroes = true, .can_fua = true,
                .can_flush = true, .can_block_status = !block_device_, .can_truncate = !block_device_};
    }

private:
    int punch_hole(uint64_t offset, uint64_t bytes) {
        return ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(bytes)) < 0 ? -errno
                                                                                                           : 0;
    }

    // SEEK_DATA/SEEK_HOLE: how far from `offset` the file is data or hole.
    // A hole is this layer's answer too (it reads as zeroes): allocated.
    BlockStatus seek_status(uint64_t offset, uint64_t bytes, StatusQuery query) {
        off_t data = ::lseek(fd_, off_t(offset), SEEK_DATA);
        if (data < 0) {
            // ENXIO: no data after offset (a hole up to EOF). Anything else: say "data".
            if (errno == ENXIO) return {.bytes = bytes, .data = false, .zero = true};
            return {.bytes = bytes};
        }
        if (uint64_t(data) > offset)
            return {.bytes = std::min<uint64_t>(bytes, uint64_t(data) - offset), .data = false, .zero = true};
        if (query == StatusQuery::quick) return {.bytes = bytes};  // starts with data: enough for a read
        off_t hole = ::lseek(fd_, off_t(offset), SEEK_HOLE);
        if (hole < 0 || uint64_t(hole) <= offset) return {.bytes = bytes};
        return {.bytes = std::min<uint64_t>(bytes, uint64_t(hole) - offset)};
    }

    const std::string filename_;
    int fd_;  // changes only in reopen (main thread, drained)
    // Changed by truncate in the home context; the main thread reads it
    // (queries) meanwhile: a relaxed atomic.
    std::atomic<uint64_t> size_;
    const uint32_t align_;
    const bool block_device_;
    const bool direct_;  // O_DIRECT
    PageCacheMode cache_reads_;   // how pages in memory are served in place (none: O_DIRECT,
    PageCacheMode cache_writes_;  // or the kernel refused RWF_NOWAIT for this direction)
    const std::unique_ptr<UringQueue> uring_;  // null: aio=threads
    AioContext* ctx_;                          // the node's context (main thread changes it, drained)
};

// O_DIRECT needs offsets, lengths and buffers aligned to the logical block
// size: ask the device, else probe a 512-byte read, else assume 4096.
uint32_t probe_alignment(int fd, bool block_device) {
    if (block_device) {
        int sector = 0;
        if (::ioctl(fd, BLKSSZGET, &sector) == 0 && sector > 0) return uint32_t(sector);
    }
    void* buf = std::aligned_alloc(4096, 4096);
    uint32_t align = 4096;
    if (buf != nullptr && ::pread(fd, buf, 512, 0) >= 0) align = 512;
    std::free(buf);
    return align;
}

}  // namespace

Result<Opened> open_file(OptionReader& opts, const OpenContext& oc) {
    auto filename = opts.require_string("filename");
    if (!filename) return std::unexpected(filename.error());
    bool direct = false;
    auto cache = opts.get_object("cache");
    if (!cache) return std::unexpected(cache.error());
    if (*cache) {
        auto d = (*cache)->get_bool("direct");
        if (!d) return std::unexpected(d.error());
        direct = d->value_or(false);
        auto no_flush = (*cache)->get_bool("no-flush");
        if (!no_flush) return std::unexpected(no_flush.error());
        if (no_flush->value_or(false)) return fail(ENOTSUP, "cache.no-flush=on is not supported");
        if (auto r = (*cache)->check_all_used(); !r) return std::unexpected(r.error());
    }
    auto aio = opts.get_string("aio");
    if (!aio) return std::unexpected(aio.error());
    // aio=native (Linux AIO in QEMU) means "asynchronous in the kernel": io_uring.
    const std::string mode = aio->value_or("io_uring");
    if (mode != "threads" && mode != "io_uring" && mode != "native")
        return fail(EINVAL, "aio=" + mode + ": expected io_uring, native or threads");
    auto locking = opts.get_string("locking");  // accepted; we take no OFD locks yet
    if (!locking) return std::unexpected(locking.error());

    const int flags = O_CLOEXEC | (direct ? O_DIRECT : 0);
    int fd = ::open(filename->c_str(), flags | (oc.flags.read_only ? O_RDONLY : O_RDWR));
    // auto-read-only: a file we may not write is opened read-only instead.
    const bool fell_back = fd < 0 && oc.flags.auto_read_only && !oc.flags.read_only &&
                           (errno == EACCES || errno == EPERM || errno == EROFS);
    if (fell_back) fd = ::open(filename->c_str(), flags | O_RDONLY);
    if (fd < 0) return fail_errno("file '" + *filename + "': open");
    struct stat st;
    if (::fstat(fd, &st) < 0) {
        auto err = fail_errno("file '" + *filename + "': stat");
        ::close(fd);
        return err;
    }
    const bool block_device = S_ISBLK(st.st_mode);
    if (!block_device && !S_ISREG(st.st_mode)) {
        ::close(fd);
        return fail(EINVAL, "file '" + *filename + "': not a regular file or block device");
    }
    uint64_t size = uint64_t(st.st_size);
    if (block_device && ::ioctl(fd, BLKGETSIZE64, &size) < 0) {
        auto err = fail_errno("file '" + *filename + "': device size");
        ::close(fd);
        return err;
    }
    const uint32_t align = direct ? probe_alignment(fd, block_device) : 1;
    std::unique_ptr<UringQueue> uring;
    if (mode != "threads") {
        auto q = UringQueue::create(256);
        if (q) {
            uring = std::move(*q);
            Result<void> attached;
            run_in_context_sync(oc.ctx, [&] { attached = uring->attach(oc.ctx); });
            if (!attached) {
                ::close(fd);
                return fail(attached.error().code, "io_uring: " + attached.error().message);
            }
        } else if (aio->has_value()) {
            ::close(fd);
            return fail(q.error().code, "aio=" + mode + ": " + q.error().describe());
        } else {
            LOG_WARN("file '%s': io_uring unavailable (%s); using aio=threads", filename->c_str(),
                     q.error().describe().c_str());
        }
    }
    return Opened{.driver = std::make_unique<FileDriver>(*filename, fd, size, align, block_device, direct,
                                                         std::move(uring), oc.ctx),
                  .fell_back_to_read_only = fell_back};
}

}  // namespace ioplane::block
