// Defaults for the optional driver functions.
#include <cstring>
#include <vector>

#include "ioplane/block/driver.h"
#include "ioplane/block/node.h"

namespace ioplane::block {

Task<Result<void>> Driver::co_pdiscard(uint64_t, uint64_t) {
    co_return {};  // discard is advisory: doing nothing is correct
}

// Writes zeroes as data, in bounded chunks; refused under kNoFallback (the
// caller asked to fail rather than be slow).
Task<Result<void>> Driver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
    if (flags & kNoFallback) co_return fail(ENOTSUP, "efficient zeroing not supported");
    const uint64_t kChunk = max_transfer() ? std::min<uint64_t>(max_transfer(), 1 << 20) : 1 << 20;
    const uint32_t align = std::max<uint32_t>(request_alignment(), 4096);
    void* zeroes = std::aligned_alloc(align, kChunk);
    if (zeroes == nullptr) co_return fail(ENOMEM, "zero buffer");
    std::memset(zeroes, 0, kChunk);
    Result<void> r;
    while (bytes > 0 && r) {
        const uint64_t n = std::min(bytes, kChunk);
        iovec iov{zeroes, n};
        r = co_await co_pwritev(offset, n, std::span(&iov, 1), flags & kWriteFua);
        offset += n;
        bytes -= n;
    }
    std::free(zeroes);
    co_return r;
}

// "All data, here": right for a driver that stores every byte itself.
Task<Result<BlockStatus>> Driver::co_block_status(uint64_t offset, uint64_t bytes, StatusQuery) {
    co_return BlockStatus{.bytes = bytes, .file = node_, .offset = offset};
}

Task<Result<void>> Driver::co_truncate(uint64_t) { co_return fail(ENOTSUP, "resizing not supported"); }

Task<Result<void>> Driver::co_change_backing_file(const std::string&, const std::string&) {
    co_return fail(ENOTSUP, std::string("format '") + format_name() + "' has no backing file name to change");
}

// QEMU's message names the node (the storage daemon has no devices) and
// carries the errno's text (error_setg_errno).
Result<void> Driver::can_store_bitmap(const std::string&, uint64_t) const {
    return fail(ENOTSUP, "Can't store persistent bitmaps to " + node_->node_name() + ": Operation not supported");
}

Task<Result<void>> Driver::co_remove_persistent_bitmap(const std::string&) { co_return Result<void>{}; }

}  // namespace ioplane::block
