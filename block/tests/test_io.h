// Reads and writes through a BlockBackend for the block layer's unit tests.
//
// Thread contract: coroutines in the node's context, as the backend's.
#pragma once

#include <sys/uio.h>

#include <vector>

#include "ioplane/block/backend.h"

namespace ioplane::block::testing {

inline Task<Result<void>> write_bytes(BlockBackend& blk, uint64_t offset, std::vector<char> data, uint32_t flags = 0) {
    iovec iov{data.data(), data.size()};
    co_return co_await blk.co_pwritev(offset, data.size(), std::span(&iov, 1), flags);
}

// `len` bytes of `c`.
inline Task<Result<void>> write_pattern(BlockBackend& blk, uint64_t offset, uint64_t len, char c, uint32_t flags = 0) {
    return write_bytes(blk, offset, std::vector<char>(len, c), flags);
}

inline Task<Result<std::vector<char>>> read_bytes(BlockBackend& blk, uint64_t offset, uint64_t len) {
    std::vector<char> buf(len, '?');
    iovec iov{buf.data(), len};
    auto r = co_await blk.co_preadv(offset, len, std::span(&iov, 1));
    if (!r) co_return std::unexpected(r.error());
    co_return buf;
}

}  // namespace ioplane::block::testing
