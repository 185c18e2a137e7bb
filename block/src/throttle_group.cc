#include "ioplane/block/throttle_group.h"

#include <algorithm>

#include "ioplane/block/node.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "throttle_limits.h"

namespace ioplane::block {
namespace {

// A waiting request sleeps at most this long before it looks again, so that
// a drain or new limits take effect within it.
constexpr int64_t kMaxSleepNs = 10'000'000;

}  // namespace

ThrottleGroup::ThrottleGroup(std::string id) : id_(std::move(id)), state_(std::make_unique<ThrottleState>()) {
    state_->set_limits(ThrottleLimits{}, now_ns());
}

ThrottleGroup::~ThrottleGroup() = default;

Result<void> ThrottleGroup::set_limits(OptionReader& limits) {
    assert_in_main_thread();
    std::lock_guard lk(mu_);
    auto merged = read_throttle_limits(limits, state_->limits());
    if (!merged) return std::unexpected(merged.error());
    if (auto c = limits.check_all_used(); !c) return c;
    state_->set_limits(*merged, now_ns());
    return {};
}

nlohmann::json ThrottleGroup::limits_json() const {
    assert_in_main_thread();
    std::lock_guard lk(mu_);
    return to_json(state_->limits());
}

// A request takes a ticket; it goes at once if the direction is idle, else
// it waits in its member's queue until a finished request hands it the
// turn (next_turn). The request being served waits for the buckets.
Task<void> ThrottleGroup::co_throttle(bool write, uint64_t bytes, const BlockNode& member) {
    assert_in_context(member.ctx());
    Direction& d = dirs_[write];
    uint64_t ticket;
    bool go;
    {
        std::lock_guard lk(mu_);
        if (!state_->enabled(write)) co_return;
        ticket = d.next_ticket++;
        go = !d.busy;
        if (go) d.busy = true;
        else d.waiting[&member].push_back(ticket);
    }
    if (!go) co_await co_wait_for_turn(d, ticket);
    for (;;) {
        int64_t wait = 0;
        {
            std::lock_guard lk(mu_);
            if (!member.quiesced()) wait = state_->wait_ns(write, now_ns());
            if (wait == 0) state_->account(write, bytes);
        }
        if (wait == 0) break;
        co_await sleep_for(std::min(wait, kMaxSleepNs));
    }
    {
        std::lock_guard lk(mu_);
        const std::optional<uint64_t> next = next_turn(d, &member);
        d.busy = next.has_value();
        // Pairs with the acquire loads of waiters: they see their turn.
        if (next) d.serving.store(*next, std::memory_order_release);
    }
    d.turn.restart_all();
}

std::optional<uint64_t> ThrottleGroup::next_turn(Direction& d, const BlockNode* last) {
    if (d.waiting.empty()) return std::nullopt;
    auto it = d.waiting.upper_bound(last);
    if (it == d.waiting.end()) it = d.waiting.begin();
    const uint64_t ticket = it->second.front();
    it->second.pop_front();
    if (it->second.empty()) d.waiting.erase(it);
    return ticket;
}

Task<void> ThrottleGroup::co_wait_for_turn(Direction& d, uint64_t ticket) {
    while (d.serving.load(std::memory_order_acquire) != ticket)
        co_await d.turn.wait_while([&d, ticket] { return d.serving.load(std::memory_order_acquire) != ticket; });
}

Result<void> ThrottleGroups::add(const std::string& id, OptionReader& options) {
    assert_in_main_thread();
    if (groups_.count(id)) return fail(EEXIST, "attempt to add duplicate property '" + id + "' to object");
    auto group = std::make_shared<ThrottleGroup>(id);
    auto limits = options.get_object("limits");
    if (!limits) return std::unexpected(limits.error());
    if (*limits)
        if (auto r = group->set_limits(**limits); !r) return r;
    // QEMU's legacy properties (x-iops-total=..., used by its iotests): the
    // same limits, flat; applied after `limits`, as QEMU applies properties
    // in order.
    nlohmann::json legacy = nlohmann::json::object();
    for (const char* kind : {"bps-total", "bps-read", "bps-write", "iops-total", "iops-read", "iops-write"})
        for (const char* suffix : {"", "-max", "-max-length"}) {
            const std::string key = std::string(kind) + suffix;
            if (const nlohmann::json* v = options.get_raw("x-" + key)) legacy[key] = *v;
        }
    if (const nlohmann::json* v = options.get_raw("x-iops-size")) legacy["iops-size"] = *v;
    if (!legacy.empty()) {
        OptionReader flat(legacy, options.syntax(), options.full_name(""));
        if (auto r = group->set_limits(flat); !r) return r;
    }
    if (auto c = options.check_all_used(); !c) return c;
    groups_[id] = std::move(group);
    return {};
}

Result<void> ThrottleGroups::remove(const std::string& id) {
    assert_in_main_thread();
    auto it = groups_.find(id);
    if (it == groups_.end()) return fail(ENOENT, "object '" + id + "' not found");
    if (it->second.use_count() > 1) return fail(EBUSY, "object '" + id + "' is in use, can not be deleted");  // QEMU's words
    groups_.erase(it);
    return {};
}

std::shared_ptr<ThrottleGroup> ThrottleGroups::find(const std::string& id) const {
    auto it = groups_.find(id);
    return it == groups_.end() ? nullptr : it->second;
}

}  // namespace ioplane::block
