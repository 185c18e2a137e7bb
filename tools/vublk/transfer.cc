#include "transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ioplane::vublk {

namespace {

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

// One chunk of `bytes` at `offset` through slot 0.
std::expected<void, std::string> chunk(QueueRunner& r, const DeviceLimits& l, BlkOp op, uint64_t offset,
                                       uint32_t bytes) {
    auto segs = l.segments_for(bytes, 1);
    if (!segs) return std::unexpected(segs.error());
    BlkRequest req;
    req.op = op;
    req.sector = offset / kSectorSize;
    req.bytes = bytes;
    req.data_segments = *segs;
    auto c = r.execute(0, req);
    if (!c) return std::unexpected(c.error());
    if (c->status != kBlkSOk)
        return std::unexpected(std::string(op_name(op)) + " of " + std::to_string(bytes) + " bytes at offset " +
                               std::to_string(offset) + ": status " + status_name(c->status));
    return {};
}

std::expected<void, std::string> in_device(const DeviceLimits& l, uint64_t offset, uint64_t length) {
    if (offset > l.capacity_bytes || length > l.capacity_bytes - offset)
        return std::unexpected(std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                               " go past the device's end (" + std::to_string(l.capacity_bytes) + " bytes)");
    return {};
}

}  // namespace

std::expected<uint64_t, std::string> write_from_file(QueueRunner& r, const DeviceLimits& l, const std::string& path,
                                                     uint64_t offset) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::unexpected(sys_error("open " + path));
    struct stat st;
    std::expected<uint64_t, std::string> result = 0;
    if (::fstat(fd, &st) != 0) result = std::unexpected(sys_error("stat " + path));
    else if (st.st_size % kSectorSize) result = std::unexpected(path + ": the size is not a multiple of 512 bytes");
    else if (auto fits = in_device(l, offset, uint64_t(st.st_size)); !fits) result = std::unexpected(fits.error());
    const uint64_t total = result ? uint64_t(st.st_size) : 0;
    for (uint64_t done = 0; result && done < total;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(r.slot(0).data_capacity(), total - done));
        if (::pread(fd, r.slot(0).data(), n, off_t(done)) != ssize_t(n)) {
            result = std::unexpected(sys_error("read " + path));
        } else if (auto c = chunk(r, l, BlkOp::kWrite, offset + done, n); !c) {
            result = std::unexpected(c.error());
        } else {
            done += n;
            *result = done;
        }
    }
    ::close(fd);
    return result;
}

std::expected<uint64_t, std::string> read_to_file(QueueRunner& r, const DeviceLimits& l, const std::string& path,
                                                  uint64_t offset, uint64_t length) {
    if (auto fits = in_device(l, offset, length); !fits) return std::unexpected(fits.error());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return std::unexpected(sys_error("open " + path));
    std::expected<uint64_t, std::string> result = 0;
    for (uint64_t done = 0; result && done < length;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(r.slot(0).data_capacity(), length - done));
        if (auto c = chunk(r, l, BlkOp::kRead, offset + done, n); !c) {
            result = std::unexpected(c.error());
        } else if (::pwrite(fd, r.slot(0).data(), n, off_t(done)) != ssize_t(n)) {
            result = std::unexpected(sys_error("write " + path));
        } else {
            done += n;
            *result = done;
        }
    }
    if (::close(fd) != 0 && result) result = std::unexpected(sys_error("close " + path));
    return result;
}

}  // namespace ioplane::vublk
