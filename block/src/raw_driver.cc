// raw: the format driver that passes requests to its "file" child, shifted
// by `offset` and bounded by `size` (a window into the child).
#include "drivers.h"
#include "graph_internal.h"
#include "ioplane/block/node.h"

namespace ioplane::block {
namespace {

class RawDriver final : public Driver {
public:
    RawDriver(uint64_t offset, uint64_t size, bool window) : offset_(offset), size_(size), window_(window) {}
    const char* format_name() const override { return "raw"; }
    std::string filename() const override { return file().driver().filename(); }
    bool direct_io() const override { return file().driver().direct_io(); }
    uint64_t allocated_bytes() const override { return file().driver().allocated_bytes(); }
    // QEMU's raw asks its file (raw_get_info).
    uint64_t cluster_size() const override { return file().driver().cluster_size(); }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return edge().co_preadv(offset_ + offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        return edge().co_pwritev(offset_ + offset, bytes, iov, flags);
    }
    // The request path flushes the file child after this.
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        return edge().co_pdiscard(offset_ + offset, bytes);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        return edge().co_pwrite_zeroes(offset_ + offset, bytes, flags);
    }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        return edge().co_block_status(offset_ + offset, bytes, query);
    }
    uint64_t length() const override { return size_; }
    // Padding happens here, above the file, as the file would do it anyway.
    uint32_t request_alignment() const override { return file().driver().request_alignment(); }
    uint32_t memory_alignment() const override { return file().driver().memory_alignment(); }
    DriverCaps caps() const override {
        DriverCaps c = file().driver().caps();
        c.can_truncate = false;
        return c;
    }
    // A pass-through (QEMU's raw without offset or size is a filter); a
    // window must not see its file resized under it.
    Perms child_perms(ChildRole, uint32_t perm, uint32_t shared) const override {
        return {perm, window_ ? shared & ~kPermResize : shared};
    }

private:
    BlockEdge& edge() const { return child(ChildRole::file); }
    BlockNode& file() const { return edge().child(); }
    const uint64_t offset_;
    const uint64_t size_;
    const bool window_;  // offset or size given
};

}  // namespace

Result<Opened> open_raw(OptionReader& opts, const OpenContext& oc) {
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    const uint64_t file_size = (*file)->driver().length();
    auto offset = opts.get_size("offset");
    if (!offset) return std::unexpected(offset.error());
    auto size = opts.get_size("size");
    if (!size) return std::unexpected(size.error());
    const uint64_t off = offset->value_or(0);
    if (off > file_size) return fail(EINVAL, "'offset' is past the end of the file");
    const uint64_t sz = size->value_or(file_size - off);
    if (sz > file_size - off) return fail(EINVAL, "'offset' + 'size' is past the end of the file");
    const uint32_t align = (*file)->driver().request_alignment();
    if (off % align || (size->has_value() && sz % align))
        return fail(EINVAL, "'offset' and 'size' must be multiples of " + std::to_string(align));
    const bool window = offset->has_value() || size->has_value();
    return Opened{std::make_unique<RawDriver>(off, sz, window), {{ChildRole::file, *file}}};
}

}  // namespace ioplane::block
