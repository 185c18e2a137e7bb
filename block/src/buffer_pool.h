// Bounce buffers a job's copies take and give back.
//
// A copy of 1 MiB in a freshly allocated buffer costs more than the copy:
// the allocator hands the pages back to the kernel when a burst of copies
// frees its buffers, and the next read into them faults every page in again
// (in the io_uring worker that does the read). A pool keeps the buffers of
// the copies in flight and lends them again, as QEMU's mirror keeps one
// buffer of buf-size for the job's life.
//
// Thread contract: any thread (one mutex: a job's copies run in its nodes'
// context, which changes only while they are drained).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "io_vector.h"

namespace ioplane::block {

class BufferPool {
public:
    // Buffers of `buffer_size` bytes aligned to `align`; up to `keep` of
    // them are kept between copies.
    BufferPool(uint64_t align, uint64_t buffer_size, size_t keep);

    // A buffer of at least `bytes`, returned to the pool with the lease (a
    // larger one than the pool's size is allocated for this copy alone).
    class Lease {
    public:
        Lease(Lease&&) = default;
        Lease& operator=(Lease&&) = delete;
        ~Lease();
        explicit operator bool() const { return buffer_ && *buffer_; }
        char* data() const { return buffer_->data(); }
        iovec first(uint64_t bytes) const { return {buffer_->data(), bytes}; }

    private:
        friend class BufferPool;
        Lease(BufferPool* pool, std::unique_ptr<AlignedBuffer> buffer) : pool_(pool), buffer_(std::move(buffer)) {}
        BufferPool* pool_;  // null: not the pool's
        std::unique_ptr<AlignedBuffer> buffer_;
    };
    // Any thread. Check the lease: it is empty when memory ran out.
    Lease take(uint64_t bytes);

private:
    void give_back(std::unique_ptr<AlignedBuffer> buffer);

    const uint64_t align_, buffer_size_;
    const size_t keep_;
    std::mutex mu_;
    std::vector<std::unique_ptr<AlignedBuffer>> free_;
};

}  // namespace ioplane::block
