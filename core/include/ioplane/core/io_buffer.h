// IoBuffer: a page-aligned data buffer for one request (an NBD read or write
// payload), recycled through a per-thread cache by power-of-two size class.
// Page alignment satisfies any O_DIRECT alignment. Recycling matters: a
// batch of 64 requests that each malloc and free a few KiB makes glibc trim
// and re-fault its heap on every batch (madvise, then page faults).
//
// Thread contract: any thread; a buffer may be freed by another thread than
// the one that allocated it (it then joins that thread's cache).
#pragma once

#include <cstddef>
#include <utility>

namespace ioplane {

class IoBuffer {
public:
    IoBuffer() = default;
    // At least `len` bytes (at least one page); empty if memory is exhausted.
    static IoBuffer allocate(std::size_t len);

    IoBuffer(IoBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), cls_(o.cls_) {}
    IoBuffer& operator=(IoBuffer&& o) noexcept {
        if (this != &o) {
            release();
            data_ = std::exchange(o.data_, nullptr);
            cls_ = o.cls_;
        }
        return *this;
    }
    ~IoBuffer() { release(); }

    char* get() const { return data_; }
    explicit operator bool() const { return data_ != nullptr; }
    void reset() { release(); }

private:
    IoBuffer(char* data, int cls) : data_(data), cls_(cls) {}
    void release() noexcept;

    char* data_ = nullptr;
    int cls_ = -1;  // size class, or -1 for an uncached (large) buffer
};

}  // namespace ioplane
