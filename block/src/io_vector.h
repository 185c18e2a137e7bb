// Small helpers for the request path's iovecs and bounce buffers.
//
// Thread contract: any thread; pure apart from the buffer's allocation.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

namespace ioplane::block {

// Bytes [skip, skip + len) of `iov` (which must hold them).
std::vector<iovec> iov_slice(std::span<const iovec> iov, uint64_t skip, uint64_t len);
// Copies `len` bytes between `iov`, from byte `skip` on, and `buf`.
void iov_to_buffer(std::span<const iovec> iov, uint64_t skip, void* buf, uint64_t len);
void buffer_to_iov(const void* buf, std::span<const iovec> iov, uint64_t skip, uint64_t len);
// Zeroes `len` bytes of `iov` from byte `skip` on.
void iov_zero(std::span<const iovec> iov, uint64_t skip, uint64_t len);
// Whether every element starts and ends at a multiple of `align`.
bool iov_aligned(std::span<const iovec> iov, uint32_t align);

// A buffer aligned for O_DIRECT, freed with its scope.
class AlignedBuffer {
public:
    AlignedBuffer(uint64_t align, uint64_t size);
    ~AlignedBuffer() { std::free(data_); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;

    explicit operator bool() const { return data_ != nullptr; }
    char* data() const { return data_; }
    uint64_t size() const { return size_; }
    iovec whole() const { return {data_, size_}; }

private:
    char* data_;
    uint64_t size_;
};

}  // namespace ioplane::block
