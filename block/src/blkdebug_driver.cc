// blkdebug: a filter that fails chosen requests, for testing error paths
// (QEMU's blkdebug, with LevelDB's fault-injection wrapper in mind). Also
// imposes a request alignment and a maximum transfer on the node, so that
// the request path's padding and splitting can be driven by real clients.
//
//   driver=blkdebug,image.driver=file,image.filename=disk.img,align=4096,
//     inject-error.0.event=write_aio,inject-error.0.sector=2048,
//     inject-error.0.errno=5,inject-error.0.once=on
//
// Rules follow QEMU's model: an inject-error rule is armed when its event
// happens (in its state, if it names one) and then fails every request of
// its I/O types that touches its sector (any sector if none), once or
// always; set-state rules move the node between numbered states on events.
// QEMU's events come from the format above; here the node raises them for
// the requests that reach it: read_aio (read), write_aio and pwritev
// (write), pwritev_zero (write-zeroes), flush_to_os and flush_to_disk
// (flush). Format-internal events (l2_load, ...) never happen on such a
// stack, so rules naming them are refused rather than left to never fire.
#include <array>
#include <mutex>

#include "drivers.h"
#include "filter_driver.h"
#include "graph_internal.h"
#include "ioplane/core/log.h"

namespace ioplane::block {
namespace {

enum class IoType { read, write, write_zeroes, discard, flush, block_status };
constexpr uint32_t bit(IoType t) { return 1u << static_cast<unsigned>(t); }
constexpr uint32_t kDefaultIoTypes =
    bit(IoType::read) | bit(IoType::write) | bit(IoType::write_zeroes) | bit(IoType::discard) | bit(IoType::flush);

// The events this node raises, and for which requests.
struct EventInfo {
    const char* name;
    IoType raised_by;
};
constexpr std::array<EventInfo, 6> kEvents{{{"read_aio", IoType::read},
                                            {"write_aio", IoType::write},
                                            {"pwritev", IoType::write},
                                            {"pwritev_zero", IoType::write_zeroes},
                                            {"flush_to_os", IoType::flush},
                                            {"flush_to_disk", IoType::flush}}};
constexpr std::array<const char*, 6> kIoTypeNames{"read", "write", "write-zeroes", "discard", "flush", "block-status"};

struct InjectRule {
    size_t event;  // index in kEvents
    std::optional<int64_t> state;
    uint32_t iotypes = kDefaultIoTypes;
    int error = EIO;
    std::optional<uint64_t> sector;
    bool once = false;
    bool armed = false;
};

struct StateRule {
    size_t event;
    std::optional<int64_t> state;
    int64_t new_state;
};

Result<size_t> read_event(OptionReader& r) {
    auto name = r.require_string("event");
    if (!name) return std::unexpected(name.error());
    for (size_t i = 0; i < kEvents.size(); i++)
        if (*name == kEvents[i].name) return i;
    std::string known;
    for (const EventInfo& e : kEvents) known += std::string(known.empty() ? "" : ", ") + e.name;
    return fail(ENOTSUP, "parameter " + in_quotes(r.full_name("event")) + ": event " + in_quotes(*name) +
                             " does not happen on this node (it raises " + known + ")");
}

// A list option: each element an object read by `read_one(reader)`.
template <class T>
Result<std::vector<T>> read_list(OptionReader& r, const char* key, Result<T> (*read_one)(OptionReader&)) {
    std::vector<T> out;
    const nlohmann::json* list = r.get_raw(key);
    if (list == nullptr) return out;
    if (!list->is_array()) return fail(EINVAL, "parameter " + in_quotes(r.full_name(key)) + ": expected a list");
    for (size_t i = 0; i < list->size(); i++) {
        const nlohmann::json& element = (*list)[i];
        const std::string path = r.full_name(key) + "." + std::to_string(i) + ".";
        if (!element.is_object()) return fail(EINVAL, "parameter " + in_quotes(path) + ": expected an object");
        OptionReader er(element, r.syntax(), path);
        auto item = read_one(er);
        if (!item) return std::unexpected(item.error());
        if (auto c = er.check_all_used(); !c) return std::unexpected(c.error());
        out.push_back(std::move(*item));
    }
    return out;
}

Result<InjectRule> read_inject_rule(OptionReader& r) {
    InjectRule rule;
    auto event = read_event(r);
    if (!event) return std::unexpected(event.error());
    rule.event = *event;
    auto state = r.get_int64("state");
    if (!state) return std::unexpected(state.error());
    rule.state = *state;
    auto iotype = r.get_string("iotype");
    if (!iotype) return std::unexpected(iotype.error());
    if (*iotype) {
        auto it = std::find(kIoTypeNames.begin(), kIoTypeNames.end(), **iotype);
        if (it == kIoTypeNames.end())
            return fail(EINVAL, "parameter " + in_quotes(r.full_name("iotype")) + ": unknown I/O type " + in_quotes(**iotype));
        rule.iotypes = 1u << (it - kIoTypeNames.begin());
    }
    auto error = r.get_int64("errno");
    if (!error) return std::unexpected(error.error());
    if (*error && (**error <= 0 || **error > 4095))
        return fail(EINVAL, "parameter " + in_quotes(r.full_name("errno")) + ": expected an errno between 1 and 4095");
    rule.error = int(error->value_or(EIO));
    auto sector = r.get_int64("sector");
    if (!sector) return std::unexpected(sector.error());
    if (*sector && **sector >= 0) rule.sector = uint64_t(**sector);  // QEMU: -1 is "any"
    auto once = r.get_bool("once");
    if (!once) return std::unexpected(once.error());
    rule.once = once->value_or(false);
    // QEMU: fail before yielding; this filter never touches its child for a
    // failed request, so every failure is immediate.
    auto immediately = r.get_bool("immediately");
    if (!immediately) return std::unexpected(immediately.error());
    return rule;
}

Result<StateRule> read_state_rule(OptionReader& r) {
    auto event = read_event(r);
    if (!event) return std::unexpected(event.error());
    auto state = r.get_int64("state");
    if (!state) return std::unexpected(state.error());
    auto new_state = r.get_int64("new_state");
    if (!new_state) return std::unexpected(new_state.error());
    if (!*new_state) return fail(EINVAL, "missing " + in_quotes(r.full_name("new_state")));
    return StateRule{*event, *state, **new_state};
}

struct Rules {
    std::vector<InjectRule> inject;
    std::vector<StateRule> states;
};

Result<Rules> read_rules(OptionReader& r) {
    auto inject = read_list(r, "inject-error", read_inject_rule);
    if (!inject) return std::unexpected(inject.error());
    auto states = read_list(r, "set-state", read_state_rule);
    if (!states) return std::unexpected(states.error());
    return Rules{std::move(*inject), std::move(*states)};
}

Result<uint32_t> read_perm_list(OptionReader& r, const char* key) {
    static constexpr std::pair<const char*, uint32_t> kNames[] = {{"consistent-read", kPermConsistentRead},
                                                                  {"write", kPermWrite},
                                                                  {"write-unchanged", kPermWriteUnchanged},
                                                                  {"resize", kPermResize},
                                                                  {"graph-mod", kPermGraphChange}};
    const nlohmann::json* list = r.get_raw(key);
    uint32_t perms = 0;
    if (list == nullptr) return perms;
    if (!list->is_array()) return fail(EINVAL, "parameter " + in_quotes(r.full_name(key)) + ": expected a list");
    for (const auto& v : *list) {
        auto it = std::find_if(std::begin(kNames), std::end(kNames),
                               [&v](auto& n) { return v.is_string() && v.get<std::string>() == n.first; });
        if (it == std::end(kNames))
            return fail(EINVAL, "parameter " + in_quotes(r.full_name(key)) + ": unknown permission " + v.dump());
        perms |= it->second;
    }
    return perms;
}

class BlkdebugDriver final : public FilterDriver {
public:
    BlkdebugDriver(Rules rules, uint32_t align, uint64_t max_transfer, uint32_t take, uint32_t unshare)
        : inject_(std::move(rules.inject)), states_(std::move(rules.states)), align_(align),
          max_transfer_(max_transfer), take_(take), unshare_(unshare) {}
    const char* format_name() const override { return "blkdebug"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        if (auto r = check(IoType::read, offset, bytes); !r) co_return r;
        co_return co_await edge().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        if (auto r = check(IoType::write, offset, bytes); !r) co_return r;
        co_return co_await edge().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        if (auto r = check(IoType::write_zeroes, offset, bytes); !r) co_return r;
        co_return co_await edge().co_pwrite_zeroes(offset, bytes, flags);
    }
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
        if (auto r = check(IoType::discard, offset, bytes); !r) co_return r;
        co_return co_await edge().co_pdiscard(offset, bytes);
    }
    // The request path flushes the child after this.
    Task<Result<void>> co_flush() override { co_return check(IoType::flush, 0, 0); }
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query) override {
        if (auto r = check(IoType::block_status, offset, bytes); !r) co_return std::unexpected(r.error());
        co_return co_await edge().co_block_status(offset, bytes, query);
    }

    uint32_t request_alignment() const override { return std::max(align_, FilterDriver::request_alignment()); }
    uint64_t max_transfer() const override { return max_transfer_; }
    Perms child_perms(ChildRole, uint32_t perm, uint32_t shared) const override {
        return {perm | take_, shared & ~unshare_};
    }

    // New rules from blockdev-reopen replace the old ones (armed or not),
    // and the state starts again at 1: a test drives error paths from QMP.
    std::vector<std::string> reopenable_options() const override { return {"inject-error", "set-state"}; }
    Result<std::function<void()>> prepare_reopen(OptionReader& options) override {
        auto rules = read_rules(options);
        if (!rules) return std::unexpected(rules.error());
        return std::function<void()>([this, rules = std::move(*rules)]() mutable {
            std::lock_guard lk(mu_);
            inject_ = std::move(rules.inject);
            states_ = std::move(rules.states);
            state_ = 1;
        });
    }

private:
    // Raises the request's events, then fails it if an armed rule matches.
    // The rules are shared by every request of the node; a mutex keeps that
    // simple (a test filter, not a fast path).
    Result<void> check(IoType type, uint64_t offset, uint64_t bytes) {
        std::lock_guard lk(mu_);
        for (size_t e = 0; e < kEvents.size(); e++)
            if (kEvents[e].raised_by == type) raise(e);
        for (auto it = inject_.begin(); it != inject_.end(); ++it) {
            if (!it->armed || !(it->iotypes & (1u << static_cast<unsigned>(type)))) continue;
            if (it->sector) {  // a flush touches no sector
                const uint64_t at = *it->sector * 512;
                if (at < offset || at >= offset + bytes) continue;
            }
            const int error = it->error;
            LOG_DEBUG("blkdebug '%s': %s at %llu+%llu fails with errno %d", node().node_name().c_str(),
                      kIoTypeNames[static_cast<unsigned>(type)], (unsigned long long)offset,
                      (unsigned long long)bytes, error);
            if (it->once) inject_.erase(it);
            return fail(error, "node '" + node().node_name() + "': injected error");
        }
        return {};
    }

    // QEMU's blkdebug_debug_event: state changes take effect after every
    // rule of the event has seen the old state.
    void raise(size_t event) {
        int64_t new_state = state_;
        for (InjectRule& rule : inject_)
            if (rule.event == event && (!rule.state || *rule.state == state_)) rule.armed = true;
        for (const StateRule& rule : states_)
            if (rule.event == event && (!rule.state || *rule.state == state_)) new_state = rule.new_state;
        state_ = new_state;
    }

    std::mutex mu_;
    std::vector<InjectRule> inject_;  // guarded by mu_
    std::vector<StateRule> states_;   // guarded by mu_
    int64_t state_ = 1;               // guarded by mu_; QEMU starts in state 1
    const uint32_t align_;
    const uint64_t max_transfer_;
    const uint32_t take_;
    const uint32_t unshare_;
};

}  // namespace

Result<Opened> open_blkdebug(OptionReader& opts, const OpenContext& oc) {
    auto config = opts.get_string("config");
    if (!config) return std::unexpected(config.error());
    if (*config) return fail(ENOTSUP, "blkdebug: 'config' files are not supported; use inject-error and set-state");
    for (const char* key : {"opt-write-zero", "max-write-zero", "opt-discard", "max-discard"}) {
        auto v = opts.get_uint64(key);
        if (!v) return std::unexpected(v.error());
        if (v->value_or(0) != 0) return fail(ENOTSUP, std::string("blkdebug: '") + key + "' is not supported");
    }
    auto align = opts.get_uint64("align");
    if (!align) return std::unexpected(align.error());
    const uint64_t a = align->value_or(0);
    if (a != 0 && (a & (a - 1) || a > (1u << 30)))
        return fail(EINVAL, "parameter 'align': must be a power of 2 up to 1 GiB, or 0");
    auto max_transfer = opts.get_uint64("max-transfer");
    if (!max_transfer) return std::unexpected(max_transfer.error());
    const uint64_t mt = max_transfer->value_or(0);
    if (mt != 0 && (mt > INT32_MAX || (a && mt % a)))
        return fail(EINVAL, "parameter 'max-transfer': must be a multiple of 'align' below 2 GiB, or 0");
    auto rules = read_rules(opts);
    if (!rules) return std::unexpected(rules.error());
    auto take = read_perm_list(opts, "take-child-perms");
    if (!take) return std::unexpected(take.error());
    auto unshare = read_perm_list(opts, "unshare-child-perms");
    if (!unshare) return std::unexpected(unshare.error());
    auto image = open_child(opts, "image", oc);
    if (!image) return std::unexpected(image.error());
    const uint32_t image_align = (*image)->driver().request_alignment();
    if (mt != 0 && mt % image_align)
        return fail(EINVAL, "parameter 'max-transfer': must be a multiple of the image's alignment (" +
                                std::to_string(image_align) + ")");
    return Opened{std::make_unique<BlkdebugDriver>(std::move(*rules), uint32_t(a), mt, *take, *unshare),
                  {{ChildRole::filtered, *image}}};
}

}  // namespace ioplane::block
