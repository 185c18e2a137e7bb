#include "throttle_limits.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "ioplane/core/thread_contract.h"

namespace ioplane::block {
namespace {

constexpr double kNsPerSecond = 1e9;
constexpr uint64_t kBurstLengthMax = UINT32_MAX;  // QEMU's LeakyBucket.burst_length is an unsigned int

// QAPI key of each bucket's avg, indexed by ThrottleBucketKind; "-max" and
// "-max-length" follow it.
constexpr std::array<std::string_view, kThrottleBucketCount> kBucketKeys = {
    "bps-total", "bps-read", "bps-write", "iops-total", "iops-read", "iops-write",
};

// The buckets a request in one direction is charged to and waits for.
constexpr std::array<ThrottleBucketKind, 2> kBytesBuckets[2] = {
    {ThrottleBucketKind::bps_total, ThrottleBucketKind::bps_read},
    {ThrottleBucketKind::bps_total, ThrottleBucketKind::bps_write},
};
constexpr std::array<ThrottleBucketKind, 2> kOpsBuckets[2] = {
    {ThrottleBucketKind::iops_total, ThrottleBucketKind::iops_read},
    {ThrottleBucketKind::iops_total, ThrottleBucketKind::iops_write},
};

enum class Field { avg, max, burst_length };

std::string key_of(std::size_t bucket, Field f) {
    std::string key(kBucketKeys[bucket]);
    if (f == Field::max) key += "-max";
    if (f == Field::burst_length) key += "-max-length";
    return key;
}

uint64_t& field(ThrottleBucketConfig& b, Field f) {
    return f == Field::avg ? b.avg : f == Field::max ? b.max : b.burst_length;
}
uint64_t field(const ThrottleBucketConfig& b, Field f) {
    return f == Field::avg ? b.avg : f == Field::max ? b.max : b.burst_length;
}

// "parameter 'limits.iops-total-max': must not be lower than 'limits.iops-total'"
std::unexpected<Error> bad(const std::string& quoted_key, const std::string& what) {
    return fail(EINVAL, "parameter " + quoted_key + ": " + what);
}

std::string range(uint64_t lo, uint64_t hi) {
    return "must be within [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// `prefix` is the reader's path ("limits."), for the keys in messages.
Result<void> validate_with_prefix(const ThrottleLimits& l, std::string_view prefix) {
    auto q = [prefix](const std::string& key) { return in_quotes(std::string(prefix) + key); };
    // A total limit excludes the read and write limits of the same kind
    // (avg and max separately); each total bucket is followed by its read
    // and write ones in ThrottleBucketKind.
    for (ThrottleBucketKind kind : {ThrottleBucketKind::bps_total, ThrottleBucketKind::iops_total}) {
        const std::size_t total = std::size_t(kind);
        for (Field f : {Field::avg, Field::max}) {
            if (field(l.buckets[total], f) == 0) continue;
            for (std::size_t rw : {total + 1, total + 2}) {
                if (field(l.buckets[rw], f) != 0)
                    return bad(q(key_of(total, f)), "cannot be used together with " + q(key_of(rw, f)));
            }
        }
    }
    if (l.iops_size != 0 && l[ThrottleBucketKind::iops_total].avg == 0 && l[ThrottleBucketKind::iops_read].avg == 0 &&
        l[ThrottleBucketKind::iops_write].avg == 0)
        return bad(q("iops-size"), "requires " + q("iops-total") + ", " + q("iops-read") + " or " + q("iops-write"));
    for (std::size_t i = 0; i < kThrottleBucketCount; ++i) {
        const ThrottleBucketConfig& b = l.buckets[i];
        const std::string avg = q(key_of(i, Field::avg)), max = q(key_of(i, Field::max)),
                          length = q(key_of(i, Field::burst_length));
        if (b.avg > kThrottleValueMax) return bad(avg, range(0, kThrottleValueMax));
        if (b.max > kThrottleValueMax) return bad(max, range(0, kThrottleValueMax));
        if (b.burst_length < 1 || b.burst_length > kBurstLengthMax) return bad(length, range(1, kBurstLengthMax));
        if (b.burst_length > 1 && b.max == 0) return bad(length, "requires " + max);
        if (b.max != 0 && b.burst_length > kThrottleValueMax / b.max)
            return bad(length, "times " + max + " must not exceed " + std::to_string(kThrottleValueMax));
        if (b.max != 0 && b.avg == 0) return bad(max, "requires " + avg);
        if (b.max != 0 && b.max < b.avg) return bad(max, "must not be lower than " + avg);
    }
    return {};
}

// Reads one QAPI 'int' key into `out` if present. Only negative values are
// refused here (QEMU would wrap them to huge unsigned ones and then refuse
// them as out of range); validate() checks the upper bounds on the merged
// limits.
Result<void> read_key(OptionReader& r, const std::string& key, uint64_t& out) {
    auto v = r.get_int64(key);
    if (!v) return std::unexpected(v.error());
    if (!*v) return {};
    if (**v < 0) return bad(in_quotes(r.full_name(key)), "must not be negative");
    out = uint64_t(**v);
    return {};
}

// Wait for one bucket (QEMU's throttle_compute_wait). The time it takes the
// excess over the bucket's size to leak: a stream that asks again after it
// sees the level back at the size, so the rate converges to avg.
double bucket_wait_ns(const ThrottleBucketConfig& b, double level, double burst_level) {
    if (b.avg == 0) return 0;
    // Without a max, a tenth of a second at avg may still go at once: QEMU's
    // allowance for guests that batch I/O (Linux CFQ groups it by 100 ms),
    // without which every other request would be throttled.
    const double size = b.max == 0 ? double(b.avg) / 10 : double(b.max) * double(b.burst_length);
    if (level > size) return (level - size) * kNsPerSecond / double(b.avg);
    // Inside a burst longer than a second, its rate is held to max (with the
    // same tenth of a second of slack).
    if (b.burst_length > 1) {
        const double burst_size = double(b.max) / 10;
        if (burst_level > burst_size) return (burst_level - burst_size) * kNsPerSecond / double(b.max);
    }
    return 0;
}

}  // namespace

bool ThrottleLimits::any() const {
    return std::any_of(buckets.begin(), buckets.end(), [](const ThrottleBucketConfig& b) { return b.avg != 0; });
}

Result<ThrottleLimits> read_throttle_limits(OptionReader& r, const ThrottleLimits& base) {
    ThrottleLimits l = base;
    for (std::size_t i = 0; i < kThrottleBucketCount; ++i) {
        for (Field f : {Field::avg, Field::max, Field::burst_length}) {
            if (auto ok = read_key(r, key_of(i, f), field(l.buckets[i], f)); !ok) return std::unexpected(ok.error());
        }
    }
    if (auto ok = read_key(r, "iops-size", l.iops_size); !ok) return std::unexpected(ok.error());
    if (auto ok = validate_with_prefix(l, r.full_name("")); !ok) return std::unexpected(ok.error());
    return l;
}

Result<void> validate(const ThrottleLimits& l) { return validate_with_prefix(l, ""); }

nlohmann::json to_json(const ThrottleLimits& l) {
    nlohmann::json j = nlohmann::json::object();
    for (std::size_t i = 0; i < kThrottleBucketCount; ++i) {
        for (Field f : {Field::avg, Field::max, Field::burst_length}) j[key_of(i, f)] = field(l.buckets[i], f);
    }
    j["iops-size"] = l.iops_size;
    return j;
}

void ThrottleState::set_limits(const ThrottleLimits& l, int64_t now_ns) {
    IOPLANE_ASSERT(validate(l).has_value());
    limits_ = l;
    levels_ = {};
    last_leak_ns_ = now_ns;
}

void ThrottleState::leak(int64_t now_ns) {
    if (now_ns <= last_leak_ns_) return;
    const double delta = double(now_ns - last_leak_ns_);
    last_leak_ns_ = now_ns;
    for (std::size_t i = 0; i < kThrottleBucketCount; ++i) {
        const ThrottleBucketConfig& b = limits_.buckets[i];
        Level& lv = levels_[i];
        lv.level = std::max(lv.level - double(b.avg) * delta / kNsPerSecond, 0.0);
        if (b.burst_length > 1) lv.burst_level = std::max(lv.burst_level - double(b.max) * delta / kNsPerSecond, 0.0);
    }
}

int64_t ThrottleState::wait_ns(bool write, int64_t now_ns) {
    leak(now_ns);
    double wait = 0;
    for (const auto& kinds : {kBytesBuckets[write], kOpsBuckets[write]}) {
        for (ThrottleBucketKind k : kinds) {
            const std::size_t i = std::size_t(k);
            wait = std::max(wait, bucket_wait_ns(limits_.buckets[i], levels_[i].level, levels_[i].burst_level));
        }
    }
    // Truncated, as QEMU does: less than a nanosecond of excess lets the
    // request go rather than arm a timer for nothing.
    if (wait >= double(INT64_MAX)) return INT64_MAX;
    return int64_t(wait);
}

void ThrottleState::account(bool write, uint64_t bytes) {
    const uint64_t op_size = limits_.iops_size;
    const double ops = op_size != 0 && bytes > op_size ? double(bytes) / double(op_size) : 1.0;
    auto charge = [&](ThrottleBucketKind k, double units) {
        const std::size_t i = std::size_t(k);
        // Unlimited buckets stay empty (QEMU fills them too, to no effect:
        // new limits empty every bucket).
        if (limits_.buckets[i].avg == 0) return;
        levels_[i].level += units;
        if (limits_.buckets[i].burst_length > 1) levels_[i].burst_level += units;
    };
    for (ThrottleBucketKind k : kBytesBuckets[write]) charge(k, double(bytes));
    for (ThrottleBucketKind k : kOpsBuckets[write]) charge(k, ops);
}

bool ThrottleState::enabled(bool write) const {
    for (const auto& kinds : {kBytesBuckets[write], kOpsBuckets[write]}) {
        for (ThrottleBucketKind k : kinds)
            if (limits_[k].avg != 0) return true;
    }
    return false;
}

}  // namespace ioplane::block
