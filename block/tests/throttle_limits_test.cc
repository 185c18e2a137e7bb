// Throttle limits: parsing, validation, JSON, and the leaky buckets on
// simulated time (a stream asks at time t; if wait_ns() is 0 its request goes
// and is charged, else it asks again after the wait).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "../src/throttle_limits.h"

namespace ioplane::block {
namespace {

using nlohmann::json;
using K = ThrottleBucketKind;

constexpr int64_t kSecond = 1'000'000'000;

// Reads `text` (keyval, or JSON if it starts with '{') over `base` and checks
// that no other key was given.
Result<ThrottleLimits> parse(std::string_view text, const ThrottleLimits& base = {}) {
    auto tree = parse_option_string(text);
    if (!tree) return std::unexpected(tree.error());
    OptionReader r(*tree);
    auto l = read_throttle_limits(r, base);
    if (!l) return l;
    if (auto used = r.check_all_used(); !used) return std::unexpected(used.error());
    return l;
}

ThrottleLimits limits(std::string_view text) {
    auto l = parse(text);
    EXPECT_TRUE(l) << text << ": " << l.error().message;
    return l.value_or(ThrottleLimits{});
}

// The nineteen members of QAPI's ThrottleLimits.
const std::set<std::string> kQapiKeys = {
    "iops-total", "iops-total-max", "iops-total-max-length", "iops-read",  "iops-read-max",
    "iops-read-max-length", "iops-write", "iops-write-max", "iops-write-max-length", "bps-total",
    "bps-total-max", "bps-total-max-length", "bps-read", "bps-read-max", "bps-read-max-length",
    "bps-write", "bps-write-max", "bps-write-max-length", "iops-size",
};

// Every key given, with distinct values where a valid combination allows.
constexpr std::string_view kAllKeys =
    "iops-total=100,iops-total-max=200,iops-total-max-length=3,"
    "iops-read=0,iops-read-max=0,iops-read-max-length=1,"
    "iops-write=0,iops-write-max=0,iops-write-max-length=1,"
    "bps-total=0,bps-total-max=0,bps-total-max-length=1,"
    "bps-read=1000,bps-read-max=5000,bps-read-max-length=2,"
    "bps-write=2000,bps-write-max=2000,bps-write-max-length=1,"
    "iops-size=4096";

// ------------------------------------------------------------------ parsing

TEST(ThrottleLimitsParse, NothingGivenIsUnlimited) {
    ThrottleLimits l = limits("");
    EXPECT_EQ(l, ThrottleLimits{});
    EXPECT_FALSE(l.any());
    for (const ThrottleBucketConfig& b : l.buckets) EXPECT_EQ(b.burst_length, 1u);
}

TEST(ThrottleLimitsParse, ReadsEveryKey) {
    ThrottleLimits l = limits(kAllKeys);
    EXPECT_TRUE(l.any());
    EXPECT_EQ(l[K::iops_total], (ThrottleBucketConfig{100, 200, 3}));
    EXPECT_EQ(l[K::iops_read], (ThrottleBucketConfig{0, 0, 1}));
    EXPECT_EQ(l[K::iops_write], (ThrottleBucketConfig{0, 0, 1}));
    EXPECT_EQ(l[K::bps_total], (ThrottleBucketConfig{0, 0, 1}));
    EXPECT_EQ(l[K::bps_read], (ThrottleBucketConfig{1000, 5000, 2}));
    EXPECT_EQ(l[K::bps_write], (ThrottleBucketConfig{2000, 2000, 1}));
    EXPECT_EQ(l.iops_size, 4096u);
}

TEST(ThrottleLimitsParse, JsonSyntaxIsTyped) {
    ThrottleLimits l = limits(R"({"iops-total": 100, "bps-write": 1000, "bps-write-max": 3000})");
    EXPECT_EQ(l[K::iops_total].avg, 100u);
    EXPECT_EQ(l[K::bps_write], (ThrottleBucketConfig{1000, 3000, 1}));

    auto bad = parse(R"({"iops-total": "100"})");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("'iops-total'"), std::string::npos) << bad.error().message;
}

TEST(ThrottleLimitsParse, AbsentKeysKeepTheBase) {
    ThrottleLimits base = limits("iops-total=100,bps-read=1000,bps-read-max=4000");
    auto l = parse("bps-read=2000,iops-size=512", base);
    ASSERT_TRUE(l) << l.error().message;
    EXPECT_EQ((*l)[K::iops_total].avg, 100u);
    EXPECT_EQ((*l)[K::bps_read], (ThrottleBucketConfig{2000, 4000, 1}));
    EXPECT_EQ(l->iops_size, 512u);
}

TEST(ThrottleLimitsParse, TheMergedLimitsAreValidated) {
    ThrottleLimits base = limits("iops-total=100");
    // QEMU refuses a read limit while the group still has a total one ...
    auto l = parse("iops-read=50", base);
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().message.find("'iops-total'"), std::string::npos) << l.error().message;
    EXPECT_NE(l.error().message.find("'iops-read'"), std::string::npos) << l.error().message;
    // ... and accepts it when the same update clears the total.
    l = parse("iops-total=0,iops-read=50", base);
    ASSERT_TRUE(l) << l.error().message;
    EXPECT_EQ((*l)[K::iops_total].avg, 0u);
    EXPECT_EQ((*l)[K::iops_read].avg, 50u);
}

TEST(ThrottleLimitsParse, OtherKeysAreLeftForTheCaller) {
    auto tree = parse_option_string("iops-total=10,throttle-group=g0");
    ASSERT_TRUE(tree);
    OptionReader r(*tree);
    ASSERT_TRUE(read_throttle_limits(r));
    auto used = r.check_all_used();
    ASSERT_FALSE(used);
    EXPECT_NE(used.error().message.find("'throttle-group'"), std::string::npos) << used.error().message;
}

TEST(ThrottleLimitsParse, MessagesNameTheKeyWithItsPath) {
    auto tree = parse_option_string("limits.iops-total=10,limits.iops-total-max=5");
    ASSERT_TRUE(tree);
    OptionReader r(*tree);
    auto nested = r.get_object("limits");
    ASSERT_TRUE(nested && *nested);
    auto l = read_throttle_limits(**nested);
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().message.find("'limits.iops-total-max'"), std::string::npos) << l.error().message;
    EXPECT_NE(l.error().message.find("'limits.iops-total'"), std::string::npos) << l.error().message;
}

// One case per validity rule: the limits, the key the message must name, and
// what it must say about it.
struct Invalid {
    const char* text;
    const char* key;
    const char* says;
};

void PrintTo(const Invalid& i, std::ostream* os) { *os << i.text; }

class ThrottleLimitsInvalid : public ::testing::TestWithParam<Invalid> {};

TEST_P(ThrottleLimitsInvalid, IsRefusedNamingTheKey) {
    auto l = parse(GetParam().text);
    ASSERT_FALSE(l) << GetParam().text << " was accepted";
    EXPECT_EQ(l.error().code, EINVAL);
    const std::string& m = l.error().message;
    EXPECT_NE(m.find("'" + std::string(GetParam().key) + "'"), std::string::npos) << m;
    EXPECT_NE(m.find(GetParam().says), std::string::npos) << m;
}

INSTANTIATE_TEST_SUITE_P(
    EachRule, ThrottleLimitsInvalid,
    ::testing::Values(
        Invalid{"iops-total=abc", "iops-total", "integer"},
        Invalid{"bps-read=-1", "bps-read", "must not be negative"},
        Invalid{"iops-total=1000000000000001", "iops-total", "must be within [0, 1000000000000000]"},
        Invalid{"bps-read=100,bps-read-max=1000000000000001", "bps-read-max", "must be within [0, 1000000000000000]"},
        Invalid{"iops-write=10,iops-write-max=20,iops-write-max-length=0", "iops-write-max-length",
                "must be within [1, 4294967295]"},
        Invalid{"iops-write=10,iops-write-max=20,iops-write-max-length=4294967296", "iops-write-max-length",
                "must be within [1, 4294967295]"},
        Invalid{"bps-total=100,bps-total-max-length=2", "bps-total-max-length", "requires 'bps-total-max'"},
        Invalid{"bps-write=1,bps-write-max=1000000000000000,bps-write-max-length=2", "bps-write-max-length",
                "must not exceed"},
        Invalid{"iops-read-max=100", "iops-read-max", "requires 'iops-read'"},
        Invalid{"iops-read=100,iops-read-max=99", "iops-read-max", "must not be lower than 'iops-read'"},
        Invalid{"bps-total=100,bps-write=100", "bps-total", "cannot be used together with 'bps-write'"},
        Invalid{"iops-total=100,iops-read=100", "iops-total", "cannot be used together with 'iops-read'"},
        Invalid{"iops-total-max=20,iops-read-max=30", "iops-total-max", "cannot be used together with 'iops-read-max'"},
        Invalid{"iops-size=4096", "iops-size", "requires"},
        Invalid{"bps-total=100,iops-size=4096", "iops-size", "requires"}));

TEST(ThrottleLimitsValidate, LimitsAtTheBoundsAreValid) {
    EXPECT_TRUE(parse("bps-total=1000000000000000"));
    EXPECT_TRUE(parse("bps-total=1,bps-total-max=1000000000000000"));
    EXPECT_TRUE(parse("iops-total=1,iops-total-max=1,iops-total-max-length=4294967295"));
    EXPECT_TRUE(parse("iops-read=10,iops-read-max=10,iops-write=5,iops-size=1"));
}

TEST(ThrottleLimitsValidate, ChecksAStructBuiltInCode) {
    ThrottleLimits l;
    EXPECT_TRUE(validate(l));
    l[K::bps_write].avg = 10;
    l[K::bps_write].burst_length = 0;
    auto r = validate(l);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("'bps-write-max-length'"), std::string::npos) << r.error().message;
    l[K::bps_write].burst_length = 1;
    EXPECT_TRUE(validate(l));
}

// ------------------------------------------------------------------ JSON

TEST(ThrottleLimitsJson, HasEveryQapiKey) {
    json j = to_json(ThrottleLimits{});
    std::set<std::string> keys;
    for (const auto& [k, v] : j.items()) {
        keys.insert(k);
        ASSERT_TRUE(v.is_number_integer()) << k;
        // Unset is 0, except a burst length, which is 1 second.
        EXPECT_EQ(v.get<int64_t>(), k.ends_with("-max-length") ? 1 : 0) << k;
    }
    EXPECT_EQ(keys, kQapiKeys);
}

TEST(ThrottleLimitsJson, RoundTrips) {
    ThrottleLimits l = limits(kAllKeys);
    json j = to_json(l);
    EXPECT_EQ(j["bps-read-max"], 5000);
    EXPECT_EQ(j["iops-total-max-length"], 3);
    EXPECT_EQ(j["iops-size"], 4096);
    OptionTree tree{j, OptionSyntax::json};
    OptionReader r(tree);
    auto back = read_throttle_limits(r);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_TRUE(r.check_all_used());
    EXPECT_EQ(*back, l);
}

// ------------------------------------------------------------------ buckets

struct Stream {
    bool write = false;
    uint64_t bytes = 4096;
    int64_t next_ns = 0;    // when it asks next
    uint64_t requests = 0;  // requests that went
};

// Runs the streams in time order until `end_ns`: each asks at its time; if
// wait_ns() is 0 its request goes (and is charged) and it asks again at once,
// else it asks again after the wait. Of streams asking at the same time, the
// one with fewer requests goes first (the group's round robin, which is not
// ThrottleState's business).
void run(ThrottleState& s, std::vector<Stream>& streams, int64_t end_ns) {
    for (uint64_t steps = 0;; ++steps) {
        ASSERT_LT(steps, 100'000'000u) << "no progress: is the state unlimited?";
        auto it = std::min_element(streams.begin(), streams.end(), [](const Stream& a, const Stream& b) {
            return std::pair(a.next_ns, a.requests) < std::pair(b.next_ns, b.requests);
        });
        if (it->next_ns >= end_ns) return;
        int64_t w = s.wait_ns(it->write, it->next_ns);
        ASSERT_GE(w, 0);
        if (w == 0) {
            s.account(it->write, it->bytes);
            ++it->requests;
        } else {
            it->next_ns += w;
        }
    }
}

uint64_t run_one(ThrottleState& s, Stream& stream, int64_t end_ns) {
    std::vector<Stream> v{stream};
    run(s, v, end_ns);
    stream = v[0];
    return stream.requests;
}

// How many units a bucket lets through from empty in `seconds` of a stream
// that never stops: what leaked plus what it holds when full (its size, plus
// the one request that brings it there).
double expected_units(double avg, double seconds, double size) { return avg * seconds + size + 1; }

ThrottleState state(std::string_view text, int64_t now_ns = 0) {
    ThrottleState s;
    s.set_limits(limits(text), now_ns);
    return s;
}

TEST(ThrottleState, IopsConvergeToTheLimit) {
    ThrottleState s = state("iops-total=100");
    Stream st;
    uint64_t n = run_one(s, st, 100 * kSecond);
    // Without a max, the bucket holds a tenth of a second at avg.
    EXPECT_NEAR(double(n), expected_units(100, 100, 10), 1.0);
    EXPECT_NEAR(double(n) / 100, 100, 1.0);  // within 1% of avg
}

TEST(ThrottleState, IopsBelowTenPerSecond) {
    // avg/10 is below one operation: every request after the first waits.
    ThrottleState s = state("iops-write=3");
    Stream st{.write = true};
    uint64_t n = run_one(s, st, 1000 * kSecond);
    EXPECT_NEAR(double(n), expected_units(3, 1000, 0.3), 1.0);
}

TEST(ThrottleState, BytesConvergeToTheLimit) {
    ThrottleState s = state("bps-total=1048576");
    Stream st{.bytes = 4096};
    uint64_t n = run_one(s, st, 60 * kSecond);
    double bytes = double(n) * 4096;
    EXPECT_NEAR(bytes, 1048576.0 * 60, 1048576.0 * 60 / 100);
    EXPECT_GE(bytes, 1048576.0 * 60);
    EXPECT_LE(bytes, expected_units(1048576, 60, 1048576 / 10) + 4096);
}

TEST(ThrottleState, ReadAndWriteLimitsAreSeparate) {
    ThrottleState s = state("bps-read=1000000,bps-write=250000");
    std::vector<Stream> streams{{.write = false, .bytes = 4096}, {.write = true, .bytes = 4096}};
    run(s, streams, 100 * kSecond);
    EXPECT_NEAR(double(streams[0].requests) * 4096, 1e8, 1e6);
    EXPECT_NEAR(double(streams[1].requests) * 4096, 2.5e7, 2.5e5);
}

TEST(ThrottleState, TotalLimitIsShared) {
    ThrottleState s = state("iops-total=200");
    std::vector<Stream> streams{{.write = false}, {.write = true}};
    run(s, streams, 100 * kSecond);
    uint64_t total = streams[0].requests + streams[1].requests;
    EXPECT_NEAR(double(total), 20000, 200);
    // Each direction gets a share, neither starves.
    EXPECT_GT(streams[0].requests, total / 4);
    EXPECT_GT(streams[1].requests, total / 4);
}

TEST(ThrottleState, IopsSizeCountsLargeRequestsInProportion) {
    // 16 KiB is 4 operations, 6 KiB 1.5, and 1 KiB (smaller) still 1.
    for (auto [bytes, ops] : {std::pair{16384u, 4.0}, std::pair{6144u, 1.5}, std::pair{1024u, 1.0}}) {
        ThrottleState s = state("iops-total=100,iops-size=4096");
        Stream st{.bytes = bytes};
        uint64_t n = run_one(s, st, 100 * kSecond);
        EXPECT_NEAR(double(n), 10000 / ops, 10000 / ops / 100) << bytes << " bytes";
    }
    // Without iops-size, size does not matter.
    ThrottleState s = state("iops-total=100");
    Stream st{.bytes = 16384};
    EXPECT_NEAR(double(run_one(s, st, 100 * kSecond)), 10000, 100);
}

TEST(ThrottleState, BurstOfOneSecondGoesAtOnce) {
    ThrottleState s = state("iops-total=100,iops-total-max=1000");
    uint64_t at_once = 0;
    while (s.wait_ns(false, 0) == 0 && at_once < 100000) {
        s.account(false, 4096);
        ++at_once;
    }
    EXPECT_NEAR(double(at_once), 1000, 1.0);
    // Then avg.
    Stream st{.requests = at_once};
    uint64_t n = run_one(s, st, 100 * kSecond);
    EXPECT_NEAR(double(n), expected_units(100, 100, 1000), 1.0);
    EXPECT_NEAR(double(n - at_once), 10000, 100);
}

TEST(ThrottleState, LongBurstGoesAtMaxThenAvg) {
    // Bucket of 1000 * 10 operations, filled at up to 1000/s while it leaks
    // 100/s: the burst lasts 10000 / 900 = 11.1 s.
    ThrottleState s = state("iops-total=100,iops-total-max=1000,iops-total-max-length=10");
    Stream st;
    // During the burst the rate is max (its own bucket holds a tenth of a second at max).
    uint64_t n5 = run_one(s, st, 5 * kSecond);
    EXPECT_NEAR(double(n5), expected_units(1000, 5, 100), 1.0);
    uint64_t n10 = run_one(s, st, 10 * kSecond);
    EXPECT_NEAR(double(n10), expected_units(1000, 10, 100), 1.0);
    // After it, everything that went is the full bucket plus what leaked.
    uint64_t n20 = run_one(s, st, 20 * kSecond);
    EXPECT_NEAR(double(n20), expected_units(100, 20, 10000), 1.0);
    uint64_t n120 = run_one(s, st, 120 * kSecond);
    EXPECT_NEAR(double(n120 - n20), 10000, 100);

    // An idle spell long enough to empty the bucket (100 s at 100/s) allows a
    // new burst.
    st.next_ns = 300 * kSecond;
    uint64_t n305 = run_one(s, st, 305 * kSecond);
    EXPECT_NEAR(double(n305 - n120), expected_units(1000, 5, 100), 1.0);
}

TEST(ThrottleState, NewLimitsApplyMidRun) {
    ThrottleState s = state("iops-total=100");
    Stream st;
    uint64_t n1 = run_one(s, st, 50 * kSecond);
    EXPECT_NEAR(double(n1), expected_units(100, 50, 10), 1.0);

    // Raised: new limits empty the buckets, as QEMU's do, so the new bucket
    // (a tenth of a second at 1000/s) goes at once.
    int64_t t = st.next_ns;
    s.set_limits(limits("iops-total=1000"), t);
    EXPECT_EQ(s.limits()[K::iops_total].avg, 1000u);
    uint64_t n2 = run_one(s, st, 100 * kSecond);
    EXPECT_NEAR(double(n2 - n1), expected_units(1000, double(100 * kSecond - t) / kSecond, 100), 1.0);

    // Lowered, and for reads only.
    t = st.next_ns;
    s.set_limits(limits("iops-read=10"), t);
    uint64_t n3 = run_one(s, st, 200 * kSecond);
    EXPECT_NEAR(double(n3 - n2), expected_units(10, double(200 * kSecond - t) / kSecond, 1), 1.0);
}

TEST(ThrottleState, UnlimitedNeverWaits) {
    ThrottleState none;
    EXPECT_FALSE(none.enabled(false));
    EXPECT_FALSE(none.enabled(true));
    for (int i = 0; i < 100000; ++i) {
        ASSERT_EQ(none.wait_ns(i % 2, 0), 0);
        none.account(i % 2, uint64_t(1) << 30);
    }

    // A write limit leaves reads alone.
    ThrottleState s = state("iops-write=10,bps-write=1000");
    EXPECT_FALSE(s.enabled(false));
    EXPECT_TRUE(s.enabled(true));
    for (int i = 0; i < 100; ++i) s.account(true, 4096);
    EXPECT_GT(s.wait_ns(true, 0), 0);
    for (int i = 0; i < 100000; ++i) {
        ASSERT_EQ(s.wait_ns(false, 0), 0);
        s.account(false, uint64_t(1) << 30);
    }

    // Clearing the limits lifts them at once.
    s.set_limits(ThrottleLimits{}, 0);
    EXPECT_FALSE(s.enabled(true));
    EXPECT_EQ(s.wait_ns(true, 0), 0);
}

TEST(ThrottleState, TotalLimitsApplyToBothDirections) {
    ThrottleState s = state("bps-total=1000");
    EXPECT_TRUE(s.enabled(false));
    EXPECT_TRUE(s.enabled(true));
    s.account(false, 4096);
    // The wait is how long the excess over the bucket (100 bytes) takes to leak.
    EXPECT_EQ(s.wait_ns(true, 0), (4096 - 100) * kSecond / 1000);
    EXPECT_EQ(s.wait_ns(false, kSecond), (4096 - 100 - 1000) * kSecond / 1000);
}

}  // namespace
}  // namespace ioplane::block
