// I/O throttling as QEMU does it (docs/throttle.txt, util/throttle.c): the
// limits of a throttle-group (QAPI ThrottleLimits) and the leaky buckets that
// enforce them. Pure accounting: the caller passes the time and arms its own
// timer with what wait_ns() returns, so tests can run on simulated time.
//
// Thread contract: plain values and a state machine; any thread, the caller
// serialises (one ThrottleState per group, used under the group's lock).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "ioplane/core/error.h"
#include "ioplane/core/keyval.h"

namespace ioplane::block {

// The six limits; bps buckets count bytes, iops buckets operations.
enum class ThrottleBucketKind { bps_total, bps_read, bps_write, iops_total, iops_read, iops_write };
inline constexpr std::size_t kThrottleBucketCount = 6;

// QEMU's THROTTLE_VALUE_MAX: the largest rate, and the largest burst
// (max * burst_length), that QEMU accepts.
inline constexpr uint64_t kThrottleValueMax = 1'000'000'000'000'000;

struct ThrottleBucketConfig {
    uint64_t avg = 0;           // units per second; 0: unlimited
    uint64_t max = 0;           // burst rate; 0: no burst beyond a tenth of a second at avg
    uint64_t burst_length = 1;  // seconds a burst at `max` may last
    bool operator==(const ThrottleBucketConfig&) const = default;
};

struct ThrottleLimits {
    std::array<ThrottleBucketConfig, kThrottleBucketCount> buckets{};
    uint64_t iops_size = 0;  // bytes per operation for iops buckets; 0: every request is one

    ThrottleBucketConfig& operator[](ThrottleBucketKind k) { return buckets[std::size_t(k)]; }
    const ThrottleBucketConfig& operator[](ThrottleBucketKind k) const { return buckets[std::size_t(k)]; }
    // Thread contract: any thread; the caller serialises.
    // Whether some limit is set (QEMU's throttle_enabled).
    bool any() const;
    bool operator==(const ThrottleLimits&) const = default;
};

// Thread contract: any thread; the caller serialises.
// Reads the QAPI ThrottleLimits keys (iops-total, iops-total-max,
// iops-total-max-length, ... bps-write-max-length, iops-size) from `r`. An
// absent key keeps its value from `base`, as QEMU's qom-set of a group's
// limits does; the merged result is then validated, so an update must clear
// iops-total (set it to 0) in the same call that sets iops-read. Other keys
// are left for the caller's check_all_used(). Errors name the key with the
// reader's path.
Result<ThrottleLimits> read_throttle_limits(OptionReader& r, const ThrottleLimits& base = {});

// Thread contract: any thread; the caller serialises.
// QEMU's throttle_is_valid(), with messages naming the key: rates and bursts
// within [0, kThrottleValueMax]; max-length within [1, 2^32-1] (QEMU keeps it
// in an unsigned int) and above 1 only with a max; a max needs its avg and may
// not be below it; a total limit excludes the read and write ones of the same
// kind (avg and max separately); iops-size needs an iops limit.
Result<void> validate(const ThrottleLimits& l);

// Thread contract: any thread; the caller serialises.
// The limits as QMP shows them (qom-get of a group's "limits"): all nineteen
// QAPI keys, unset ones as 0 (max-length as 1).
nlohmann::json to_json(const ThrottleLimits& l);

// The leaky buckets of one throttle group. Each bucket's level rises by what
// goes through and leaks at avg per second; a request waits while a bucket it
// is charged to is above its size (max * burst_length, or avg/10 without a
// max). With burst_length > 1 a second bucket, leaking at max, keeps the
// burst itself at the max rate.
class ThrottleState {
public:
    // Thread contract: any thread; the caller serialises.
    // `l` must be valid. Empties the buckets, as QEMU's throttle_config()
    // does: new limits start with a full burst allowance.
    void set_limits(const ThrottleLimits& l, int64_t now_ns);
    // Thread contract: any thread; the caller serialises.
    const ThrottleLimits& limits() const { return limits_; }

    // Thread contract: any thread; the caller serialises.
    // Leaks the buckets up to now_ns (a monotonic clock; an earlier time
    // leaks nothing), then returns 0 if a request in this direction may go
    // now, else how long to wait before asking again (INT64_MAX at most).
    int64_t wait_ns(bool write, int64_t now_ns);
    // Thread contract: any thread; the caller serialises.
    // Charges a request that goes: `bytes` to the bps buckets, and to the
    // iops buckets one operation, or bytes / iops_size if that is more
    // (fractional: 6 KiB with iops-size=4096 counts 1.5).
    void account(bool write, uint64_t bytes);
    // Thread contract: any thread; the caller serialises.
    // Whether some limit applies to requests in this direction.
    bool enabled(bool write) const;

private:
    struct Level {
        double level = 0;        // leaks at avg
        double burst_level = 0;  // leaks at max; used only when burst_length > 1
    };
    void leak(int64_t now_ns);

    ThrottleLimits limits_;
    std::array<Level, kThrottleBucketCount> levels_{};
    int64_t last_leak_ns_ = 0;
};

}  // namespace ioplane::block
