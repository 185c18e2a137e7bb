#include "ioplane/core/buffered_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ioplane/core/stream_io.h"

namespace ioplane {

BufferedReader::BufferedReader(AsyncFd& afd, size_t buffer_size)
    : afd_(afd), size_(buffer_size), buf_(new char[buffer_size]) {}

Task<Result<void>> BufferedReader::refill() {
    if (std::exchange(drained_, false) && !co_await afd_.readable()) co_return fail(ESHUTDOWN, "connection shut down");
    auto n = co_await read_some(afd_, buf_.get(), size_);
    if (!n) co_return std::unexpected(n.error());
    start_ = 0;
    end_ = *n;
    drained_ = *n < size_;
    co_return Result<void>{};
}

Task<Result<void>> BufferedReader::read_exact(void* dst, size_t len) {
    auto* out = static_cast<char*>(dst);
    while (len > 0) {
        if (start_ == end_) {
            // Large reads (write payloads) go straight to their buffer.
            if (len >= size_ / 2) {
                drained_ = false;
                co_return co_await ioplane::read_exact(afd_, out, len);
            }
            if (auto r = co_await refill(); !r) co_return r;
        }
        const size_t take = std::min(len, end_ - start_);
        std::memcpy(out, buf_.get() + start_, take);
        start_ += take;
        out += take;
        len -= take;
    }
    co_return Result<void>{};
}

Task<Result<void>> BufferedReader::skip(uint64_t len) {
    while (len > 0) {
        if (start_ == end_) {
            if (auto r = co_await refill(); !r) co_return r;
        }
        const size_t take = std::min<uint64_t>(len, end_ - start_);
        start_ += take;
        len -= take;
    }
    co_return Result<void>{};
}

}  // namespace ioplane
