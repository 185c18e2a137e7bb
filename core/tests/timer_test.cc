#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "harness.h"
#include "ioplane/core/clock.h"

namespace ioplane {
namespace {

using test::make_context;

TEST(Timer, FiresInDeadlineOrder) {
    auto ctx = make_context("t");
    std::mt19937 rng(42);
    std::vector<int64_t> fired;
    std::vector<std::unique_ptr<Timer>> timers;
    const int64_t base = now_ns();
    for (int i = 0; i < 2000; i++) {
        int64_t deadline = base - 1'000'000 + int64_t(rng() % 1'000'000);  // all expired
        auto t = std::make_unique<Timer>(*ctx, [&fired, deadline] { fired.push_back(deadline); });
        t->arm_at(deadline);
        timers.push_back(std::move(t));
    }
    EXPECT_TRUE(ctx->poll(false));
    ASSERT_EQ(fired.size(), 2000u);
    EXPECT_TRUE(std::is_sorted(fired.begin(), fired.end()));
}

TEST(Timer, RearmAndCancel) {
    auto ctx = make_context("t");
    int a = 0, b = 0;
    Timer ta(*ctx, [&] { a++; });
    Timer tb(*ctx, [&] { b++; });
    ta.arm_in(3'600'000'000'000);  // an hour
    tb.arm_in(3'600'000'000'000);
    EXPECT_TRUE(ta.armed());
    ta.arm_in(-1);  // re-armed into the past: fires now
    tb.cancel();
    EXPECT_FALSE(tb.armed());
    ctx->poll(false);
    EXPECT_EQ(a, 1);
    EXPECT_EQ(b, 0);
    EXPECT_FALSE(ta.armed());
}

TEST(Timer, BlockingPollSleepsUntilDeadlineNotLonger) {
    auto ctx = make_context("t");
    bool fired = false;
    Timer t(*ctx, [&] { fired = true; });
    const int64_t start = now_ns();
    t.arm_in(2'000'000);
    while (!fired) ctx->poll(true);
    const int64_t elapsed = now_ns() - start;
    EXPECT_GE(elapsed, 2'000'000);
    EXPECT_LT(elapsed, 1'000'000'000);  // not stuck in an infinite wait
}

TEST(Timer, RearmingForNowInCallbackDoesNotLivelock) {
    auto ctx = make_context("t");
    int fired = 0;
    std::unique_ptr<Timer> t;
    t = std::make_unique<Timer>(*ctx, [&] {
        fired++;
        t->arm_in(0);
    });
    t->arm_in(0);
    ctx->poll(false);  // returns although the timer is always due
    EXPECT_GE(fired, 1);
    EXPECT_LE(fired, 2);
    t->cancel();
}

TEST(Timer, CallbackMayDestroyAnotherExpiredTimer) {
    auto ctx = make_context("t");
    auto second = std::make_unique<Timer>(*ctx, [] { FAIL() << "destroyed timer fired"; });
    Timer first(*ctx, [&] { second.reset(); });
    first.arm_at(now_ns() - 2);
    second->arm_at(now_ns() - 1);
    ctx->poll(false);
    EXPECT_EQ(second, nullptr);
}

}  // namespace
}  // namespace ioplane
