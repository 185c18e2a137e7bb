#include "io_vector.h"

#include <algorithm>
#include <cstring>

namespace ioplane::block {

std::vector<iovec> iov_slice(std::span<const iovec> iov, uint64_t skip, uint64_t len) {
    std::vector<iovec> out;
    for (const iovec& v : iov) {
        if (len == 0) break;
        if (skip >= v.iov_len) {
            skip -= v.iov_len;
            continue;
        }
        const uint64_t n = std::min<uint64_t>(v.iov_len - skip, len);
        out.push_back({static_cast<char*>(v.iov_base) + skip, n});
        skip = 0;
        len -= n;
    }
    return out;
}

namespace {

// Calls fn(element pointer, bytes) over bytes [skip, skip + len) of iov.
template <class Fn>
void for_each_part(std::span<const iovec> iov, uint64_t skip, uint64_t len, Fn fn) {
    uint64_t done = 0;
    for (const iovec& v : iov) {
        if (done == len) break;
        if (skip >= v.iov_len) {
            skip -= v.iov_len;
            continue;
        }
        const uint64_t n = std::min<uint64_t>(v.iov_len - skip, len - done);
        fn(static_cast<char*>(v.iov_base) + skip, done, n);
        skip = 0;
        done += n;
    }
}

}  // namespace

void iov_to_buffer(std::span<const iovec> iov, uint64_t skip, void* buf, uint64_t len) {
    for_each_part(iov, skip, len, [buf](char* p, uint64_t at, uint64_t n) { std::memcpy(static_cast<char*>(buf) + at, p, n); });
}

void buffer_to_iov(const void* buf, std::span<const iovec> iov, uint64_t skip, uint64_t len) {
    for_each_part(iov, skip, len,
                  [buf](char* p, uint64_t at, uint64_t n) { std::memcpy(p, static_cast<const char*>(buf) + at, n); });
}

void iov_zero(std::span<const iovec> iov, uint64_t skip, uint64_t len) {
    for_each_part(iov, skip, len, [](char* p, uint64_t, uint64_t n) { std::memset(p, 0, n); });
}

bool iov_aligned(std::span<const iovec> iov, uint32_t align) {
    if (align <= 1) return true;
    for (const iovec& v : iov)
        if ((reinterpret_cast<uintptr_t>(v.iov_base) | v.iov_len) % align) return false;
    return true;
}

namespace {

// aligned_alloc wants a size that is a multiple of the alignment.
char* allocate(uint64_t align, uint64_t size) {
    align = std::max<uint64_t>(align, 64);
    return static_cast<char*>(std::aligned_alloc(align, (size + align - 1) / align * align));
}

}  // namespace

AlignedBuffer::AlignedBuffer(uint64_t align, uint64_t size) : data_(allocate(align, size)), size_(size) {}

}  // namespace ioplane::block
