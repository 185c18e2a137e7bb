// throttle: a filter that holds requests to the limits of a throttle group
// (QEMU's throttle driver: `driver=throttle,throttle-group=g,file=...`).
// Reads count as reads; writes, write-zeroes and discards as writes (their
// bytes too, as QEMU counts them); flushes and block status pass freely.
#include "drivers.h"
#include "filter_driver.h"
#include "graph_internal.h"
#include "ioplane/block/throttle_group.h"

namespace ioplane::block {
namespace {

class ThrottleDriver final : public FilterDriver {
public:
    explicit ThrottleDriver(std::shared_ptr<ThrottleGroup> group) : group_(std::move(group)) {}
    const char* format_name() const override { return "throttle"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        co_await group_->co_throttle(false, bytes, node());
        co_return co_await edge().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        co_await group_->co_throttle(true, bytes, node());
        co_return co_await edge().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        co_await group_->co_throttle(true, bytes, node());
        co_return co_await edge().co_pwrite_zeroes(offset, bytes, flags);
    }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        co_await group_->co_throttle(true, bytes, node());
        co_return co_await edge().co_pdiscard(offset, bytes);
    }

private:
    const std::shared_ptr<ThrottleGroup> group_;
};

}  // namespace

Result<Opened> open_throttle(OptionReader& opts, const OpenContext& oc) {
    auto group_name = opts.require_string("throttle-group");
    if (!group_name) return std::unexpected(group_name.error());
    auto group = oc.graph.throttle_groups().find(*group_name);
    if (!group) return fail(ENOENT, "throttle group '" + *group_name + "' does not exist");
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    return Opened{std::make_unique<ThrottleDriver>(std::move(group)), {{ChildRole::filtered, *file}}};
}

}  // namespace ioplane::block
