// null-co: a node that stores nothing. Reads return zeroes (read-zeroes=on)
// or leave the buffer as it is (QEMU's default, for benchmarks that do not
// want the memset). latency-ns delays every request.
#include <cstring>

#include "drivers.h"
#include "ioplane/block/node.h"
#include "ioplane/core/coroutine.h"

namespace ioplane::block {
namespace {

class NullDriver final : public Driver {
public:
    NullDriver(uint64_t size, bool read_zeroes, int64_t latency_ns)
        : size_(size), read_zeroes_(read_zeroes), latency_ns_(latency_ns) {}
    const char* format_name() const override { return "null-co"; }

    Task<Result<void>> co_preadv(uint64_t, uint64_t, std::span<const iovec> iov) override {
        if (latency_ns_ > 0) co_await sleep_for(latency_ns_);
        if (read_zeroes_)
            for (const iovec& v : iov) std::memset(v.iov_base, 0, v.iov_len);
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwritev(uint64_t, uint64_t, std::span<const iovec>, uint32_t) override {
        if (latency_ns_ > 0) co_await sleep_for(latency_ns_);
        co_return Result<void>{};
    }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<void>> co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) override { co_return Result<void>{}; }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery) override {
        co_return BlockStatus{.bytes = bytes, .data = !read_zeroes_, .zero = read_zeroes_, .allocated = true,
                              .file = &node(), .offset = offset};
    }
    uint64_t length() const override { return size_; }
    DriverCaps caps() const override {
        return {.can_write = true, .can_discard = true, .can_write_zeroes = true, .can_fua = true,
                .can_flush = true, .can_block_status = read_zeroes_};
    }

private:
    const uint64_t size_;
    const bool read_zeroes_;
    const int64_t latency_ns_;
};

}  // namespace

Result<Opened> open_null(OptionReader& opts, const OpenContext&) {
    auto size = opts.get_size("size");
    if (!size) return std::unexpected(size.error());
    auto read_zeroes = opts.get_bool("read-zeroes");
    if (!read_zeroes) return std::unexpected(read_zeroes.error());
    auto latency = opts.get_uint64("latency-ns");
    if (!latency) return std::unexpected(latency.error());
    return Opened{std::make_unique<NullDriver>(size->value_or(uint64_t(1) << 30), read_zeroes->value_or(false),
                                               int64_t(latency->value_or(0)))};
}

}  // namespace ioplane::block
