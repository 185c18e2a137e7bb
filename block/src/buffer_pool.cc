#include "buffer_pool.h"

namespace ioplane::block {

BufferPool::BufferPool(uint64_t align, uint64_t buffer_size, size_t keep)
    : align_(align), buffer_size_(buffer_size), keep_(keep) {}

BufferPool::Lease BufferPool::take(uint64_t bytes) {
    if (bytes > buffer_size_) return Lease(nullptr, std::make_unique<AlignedBuffer>(align_, bytes));
    {
        std::lock_guard lock(mu_);
        if (!free_.empty()) {
            auto buffer = std::move(free_.back());
            free_.pop_back();
            return Lease(this, std::move(buffer));
        }
    }
    return Lease(this, std::make_unique<AlignedBuffer>(align_, buffer_size_));
}

void BufferPool::give_back(std::unique_ptr<AlignedBuffer> buffer) {
    std::lock_guard lock(mu_);
    if (free_.size() < keep_) free_.push_back(std::move(buffer));
}

BufferPool::Lease::~Lease() {
    if (pool_ && buffer_ && *buffer_) pool_->give_back(std::move(buffer_));
}

}  // namespace ioplane::block
