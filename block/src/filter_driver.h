// FilterDriver: the base of filter drivers (blkdebug, throttle,
// copy-on-read): one child of role `filtered`, to which every request and
// every property passes unchanged unless the filter overrides it.
//
// Thread contract: as Driver's.
#pragma once

#include "ioplane/block/node.h"

namespace ioplane::block {

class FilterDriver : public Driver {
public:
    std::string filename() const override { return file().driver().filename(); }
    bool direct_io() const override { return file().driver().direct_io(); }
    uint64_t allocated_bytes() const override { return file().driver().allocated_bytes(); }
    uint64_t cluster_size() const override { return file().driver().cluster_size(); }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return edge().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        return edge().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        return edge().co_pwrite_zeroes(offset, bytes, flags);
    }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        return edge().co_pdiscard(offset, bytes);
    }
    // The request path flushes the child after this.
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        return edge().co_block_status(offset, bytes, query);
    }

    uint64_t length() const override { return file().driver().length(); }
    uint32_t request_alignment() const override { return file().limits().request_alignment; }
    uint32_t memory_alignment() const override { return file().limits().memory_alignment; }
    DriverCaps caps() const override {
        DriverCaps c = file().driver().caps();
        c.can_truncate = false;
        return c;
    }

protected:
    BlockEdge& edge() const { return child(ChildRole::filtered); }
    BlockNode& file() const { return edge().child(); }
};

}  // namespace ioplane::block
