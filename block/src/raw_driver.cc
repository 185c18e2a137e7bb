// raw: the format driver that passes requests to its "file" child, shifted
// by `offset` and bounded by `size` (a window into the child).
#include "drivers.h"
#include "graph_internal.h"

namespace ioplane::block {
namespace {

class RawDriver final : public Driver {
public:
    RawDriver(std::shared_ptr<BlockNode> file, uint64_t offset, uint64_t size)
        : file_(std::move(file)), offset_(offset), size_(size) {}
    const char* format_name() const override { return "raw"; }
    std::string filename() const override { return file_->driver().filename(); }
    bool direct_io() const override { return file_->driver().direct_io(); }
    uint64_t allocated_bytes() const override { return file_->driver().allocated_bytes(); }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return child().co_preadv(offset_ + offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        return child().co_pwritev(offset_ + offset, bytes, iov, flags);
    }
    Task<Result<void>> co_flush() override { return child().co_flush(); }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        return child().co_pdiscard(offset_ + offset, bytes);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        return child().co_pwrite_zeroes(offset_ + offset, bytes, flags);
    }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        return child().co_block_status(offset_ + offset, bytes, query);
    }
    uint64_t length() const override { return size_; }
    uint32_t request_alignment() const override { return file_->driver().request_alignment(); }
    DriverCaps caps() const override {
        DriverCaps c = file_->driver().caps();
        c.can_truncate = false;
        return c;
    }

private:
    Driver& child() { return file_->driver(); }
    std::shared_ptr<BlockNode> file_;
    const uint64_t offset_;
    const uint64_t size_;
};

}  // namespace

Result<Opened> open_raw(OptionReader& opts, const OpenContext& oc) {
    const nlohmann::json* child_opts = opts.get_raw("file");
    if (child_opts == nullptr) return fail(EINVAL, "missing 'file'");
    auto file = open_child(oc.graph, *child_opts, oc);
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
    return Opened{std::make_unique<RawDriver>(*file, off, sz), *file};
}

}  // namespace ioplane::block
