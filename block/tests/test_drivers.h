// Drivers for the block layer's unit tests: an in-memory disk with the
// limits a real one has (request and memory alignment, a maximum transfer,
// no native FUA), which records what reached it and can take its time (so
// that requests race), and a copy-on-write overlay for backing chains.
//
// Thread contract: the node's context, as any driver.
#pragma once

#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ioplane/block/node.h"
#include "ioplane/core/coroutine.h"

namespace ioplane::block::testing {

struct MemLimits {
    uint32_t request_alignment = 1;
    uint32_t memory_alignment = 1;
    uint64_t max_transfer = 0;
    bool fua = true;
    int64_t max_delay_ns = 0;  // each request sleeps a random time up to this
};

class MemDriver : public Driver {
public:
    MemDriver(uint64_t size, MemLimits limits) : data_(size, 0), limits_(limits) {}
    const char* format_name() const override { return "mem"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        note("read", offset, bytes, iov);
        co_await delay();
        uint64_t at = offset;
        for (const iovec& v : iov) {
            std::memcpy(v.iov_base, data_.data() + at, v.iov_len);
            at += v.iov_len;
        }
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        note((flags & kWriteFua) ? "write fua" : "write", offset, bytes, iov);
        co_await delay();
        uint64_t at = offset;
        for (const iovec& v : iov) {
            std::memcpy(data_.data() + at, v.iov_base, v.iov_len);
            at += v.iov_len;
        }
        co_return Result<void>{};
    }
    Task<Result<void>> co_flush() override {
        log.push_back("flush");
        co_return Result<void>{};
    }
    uint64_t length() const override { return data_.size(); }
    uint32_t request_alignment() const override { return limits_.request_alignment; }
    uint32_t memory_alignment() const override { return limits_.memory_alignment; }
    uint64_t max_transfer() const override { return limits_.max_transfer; }
    DriverCaps caps() const override { return {.can_fua = limits_.fua}; }

    std::vector<char>& data() { return data_; }
    std::vector<std::string> log;     // "read OFFSET BYTES", "write[ fua] ...", "flush"
    std::vector<std::string> misuse;  // requests that broke the limits

private:
    void note(const std::string& what, uint64_t offset, uint64_t bytes, std::span<const iovec> iov) {
        log.push_back(what + " " + std::to_string(offset) + " " + std::to_string(bytes));
        const uint64_t a = limits_.request_alignment;
        if (offset % a || bytes % a) misuse.push_back("unaligned " + log.back());
        if (limits_.max_transfer && bytes > limits_.max_transfer) misuse.push_back("too large " + log.back());
        for (const iovec& v : iov)
            if ((reinterpret_cast<uintptr_t>(v.iov_base) | v.iov_len) % limits_.memory_alignment)
                misuse.push_back("buffer " + log.back());
    }
    Task<void> delay() {
        if (limits_.max_delay_ns > 0)
            co_await sleep_for(std::uniform_int_distribution<int64_t>(0, limits_.max_delay_ns)(rng_));
    }

    std::vector<char> data_;
    const MemLimits limits_;
    std::mt19937_64 rng_{42};
};

// A copy-on-write layer in 512-byte blocks: written blocks are its own,
// the others read from the backing child (zeroes without one). Block status
// says which.
class CowDriver : public Driver {
public:
    static constexpr uint64_t kBlock = 512;
    explicit CowDriver(uint64_t size) : data_(size, 0), allocated_(size / kBlock, false) {}
    const char* format_name() const override { return "cow"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        std::vector<char> buf(bytes);
        for (uint64_t b = offset / kBlock; b * kBlock < offset + bytes; b++) {
            const uint64_t start = std::max(b * kBlock, offset), end = std::min((b + 1) * kBlock, offset + bytes);
            char* to = buf.data() + (start - offset);
            if (allocated_[b]) {
                std::memcpy(to, data_.data() + start, end - start);
            } else if (BlockEdge* backing = node().child(ChildRole::backing)) {
                iovec v{to, end - start};
                if (auto r = co_await backing->co_preadv(start, end - start, std::span(&v, 1)); !r) co_return r;
            } else {
                std::memset(to, 0, end - start);
            }
        }
        uint64_t at = 0;
        for (const iovec& v : iov) {
            std::memcpy(v.iov_base, buf.data() + at, v.iov_len);
            at += v.iov_len;
        }
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t) override {
        uint64_t at = offset;
        for (const iovec& v : iov) {
            std::memcpy(data_.data() + at, v.iov_base, v.iov_len);
            at += v.iov_len;
        }
        for (uint64_t b = offset / kBlock; b * kBlock < offset + bytes; b++) allocated_[b] = true;
        co_return Result<void>{};
    }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery) override {
        const uint64_t first = offset / kBlock;
        uint64_t end = (first + 1) * kBlock;
        while (end < offset + bytes && allocated_[end / kBlock] == allocated_[first]) end += kBlock;
        end = std::min(end, offset + bytes);
        if (allocated_[first])
            co_return BlockStatus{.bytes = end - offset, .file = &node(), .offset = offset};
        co_return BlockStatus{.bytes = end - offset, .data = false, .allocated = false};
    }
    uint64_t length() const override { return data_.size(); }
    uint32_t request_alignment() const override { return kBlock; }
    DriverCaps caps() const override { return {.can_fua = false, .can_block_status = true}; }

private:
    std::vector<char> data_;
    std::vector<bool> allocated_;
};

}  // namespace ioplane::block::testing
