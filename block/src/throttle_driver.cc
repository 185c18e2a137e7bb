// throttle: a filter that holds requests to the limits of a throttle group
// (QEMU's throttle driver: `driver=throttle,throttle-group=g,file=...`).
// Reads count as reads; writes, write-zeroes and discards as writes (their
// bytes too, as QEMU counts them); flushes and block status pass freely.
// blockdev-reopen may name another group.
#include <atomic>

#include "drivers.h"
#include "filter_driver.h"
#include "graph_internal.h"
#include "ioplane/block/throttle_group.h"

namespace ioplane::block {
namespace {

class ThrottleDriver final : public FilterDriver {
public:
    ThrottleDriver(ThrottleGroups& groups, std::shared_ptr<ThrottleGroup> group)
        : groups_(groups), group_(std::move(group)), active_(group_.get()) {}
    const char* format_name() const override { return "throttle"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        co_await group().co_throttle(false, bytes, node());
        co_return co_await edge().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        co_await group().co_throttle(true, bytes, node());
        co_return co_await edge().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        co_await group().co_throttle(true, bytes, node());
        co_return co_await edge().co_pwrite_zeroes(offset, bytes, flags);
    }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        co_await group().co_throttle(true, bytes, node());
        co_return co_await edge().co_pdiscard(offset, bytes);
    }

    std::vector<std::string> reopenable_options() const override { return {"throttle-group"}; }
    // QEMU's throttle_reopen_prepare: the node joins another group; the
    // switch happens drained (no request is inside a group then).
    Result<std::function<void()>> prepare_reopen(OptionReader& options) override {
        auto group = find_group(groups_, options);
        if (!group) return std::unexpected(group.error());
        return std::function<void()>([this, group = std::move(*group)]() mutable {
            group_ = std::move(group);
            active_.store(group_.get(), std::memory_order_release);
        });
    }

    // `throttle-group`, which must exist (QEMU's words).
    static Result<std::shared_ptr<ThrottleGroup>> find_group(ThrottleGroups& groups, OptionReader& opts) {
        auto name = opts.require_string("throttle-group");
        if (!name) return std::unexpected(name.error());
        auto group = groups.find(*name);
        if (!group) return fail(ENOENT, "Throttle group '" + *name + "' does not exist");
        return group;
    }

private:
    ThrottleGroup& group() const { return *active_.load(std::memory_order_acquire); }

    ThrottleGroups& groups_;
    std::shared_ptr<ThrottleGroup> group_;  // main thread, drained
    std::atomic<ThrottleGroup*> active_;    // group_, for the request path
};

}  // namespace

Result<Opened> open_throttle(OptionReader& opts, const OpenContext& oc) {
    auto group = ThrottleDriver::find_group(oc.graph.throttle_groups(), opts);
    if (!group) return std::unexpected(group.error());
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    return Opened{std::make_unique<ThrottleDriver>(oc.graph.throttle_groups(), std::move(*group)),
                  {{ChildRole::filtered, *file}}};
}

}  // namespace ioplane::block
