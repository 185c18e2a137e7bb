// Throttle limits: parsing, validation, JSON.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "../src/throttle_limits.h"

namespace ioplane::block {
namespace {

using nlohmann::json;
using K = ThrottleBucketKind;

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

}  // namespace
}  // namespace ioplane::block
