// The extents of one context's NBD_REPLY_TYPE_BLOCK_STATUS chunk, gathered
// the way QEMU's server does (nbd_extent_array_add): an extent with the
// flags of the one before it lengthens that one while the sum fits the 32
// bits of an extent's length, empty ones are dropped, and at most `max`
// extents are kept (1 for NBD_CMD_FLAG_REQ_ONE). Once an extent does not
// fit, add() says so and the list takes no more: the reply then covers
// less than was asked, as the spec allows, and never a range it did not
// look at.
//
// Thread contract: not thread-safe; one request's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nbd/protocol.h"

namespace ioplane::nbd {

class ExtentList {
public:
    explicit ExtentList(size_t max) : max_(max) {}

    // false if the list is full (this extent and all later ones are left
    // out). length <= UINT32_MAX (asserted): callers stay within one
    // request's 32-bit length.
    bool add(uint64_t length, uint32_t flags);

    std::span<const Extent> extents() const { return extents_; }
    // Bytes covered so far.
    uint64_t total() const { return total_; }
    bool full() const { return full_; }

private:
    const size_t max_;
    std::vector<Extent> extents_;
    uint64_t total_ = 0;
    bool full_ = false;
};

}  // namespace ioplane::nbd
