// snapshot-access (QEMU's block/snapshot-access.c): a read-only view of the
// snapshot a copy-before-write filter keeps (copy_before_write.h): what
// image fleecing exports over NBD. Reads and block status come from the
// target where the filter copied old data and from the source elsewhere;
// a discard tells the filter the snapshot no longer needs that range (a
// backup client that copied it); writes are refused.
#include "copy_before_write.h"
#include "drivers.h"
#include "graph_internal.h"

namespace ioplane::block {
namespace {

class SnapshotAccessDriver final : public Driver {
public:
    const char* format_name() const override { return "snapshot-access"; }
    std::string filename() const override { return file().driver().filename(); }
    uint64_t length() const override { return file().length(); }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return filter().co_snapshot_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t, uint64_t, std::span<const iovec>, uint32_t) override {
        co_return refuse_write();
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) override { co_return refuse_write(); }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        return filter().co_snapshot_pdiscard(offset, bytes);
    }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        return filter().co_snapshot_block_status(offset, bytes, query);
    }
    DriverCaps caps() const override {
        DriverCaps c;
        c.can_write = false;
        c.can_discard = true;
        c.can_block_status = true;
        return c;
    }
    // It reads through the filter's own children, so it needs nothing of
    // the filter node (QEMU's snapshot_access_child_perm).
    Perms child_perms(ChildRole, uint32_t, uint32_t) const override { return {0, kPermAll}; }

private:
    BlockNode& file() const { return child(ChildRole::file).child(); }
    CopyBeforeWrite& filter() const { return *as_copy_before_write(file()); }
    Result<void> refuse_write() const {
        return fail(ENOTSUP, "node '" + node().node_name() + "': a snapshot-access node cannot be written");
    }
};

}  // namespace

Result<Opened> open_snapshot_access(OptionReader& opts, const OpenContext& oc) {
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    if (!as_copy_before_write(**file))
        return fail(EINVAL, "snapshot-access: node '" + (*file)->node_name() + "' is not a copy-before-write filter");
    return Opened{std::make_unique<SnapshotAccessDriver>(), {{ChildRole::file, *file}}};
}

}  // namespace ioplane::block
