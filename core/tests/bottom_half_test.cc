#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "harness.h"

namespace ioplane {
namespace {

using test::make_context;

TEST(BottomHalf, RunsOnceHoweverOftenScheduled) {
    auto ctx = make_context("t");
    int runs = 0;
    BhPtr bh = ctx->new_bh([&] { runs++; });
    bh->schedule();
    bh->schedule();
    EXPECT_TRUE(bh->scheduled());
    EXPECT_TRUE(ctx->poll(false));
    EXPECT_EQ(runs, 1);
    EXPECT_FALSE(ctx->poll(false));
    EXPECT_EQ(runs, 1);
    bh->schedule();
    ctx->poll(false);
    EXPECT_EQ(runs, 2);
}

TEST(BottomHalf, RunInSchedulingOrder) {
    auto ctx = make_context("t");
    std::vector<int> order;
    for (int i = 0; i < 100; i++) ctx->schedule_oneshot([&order, i] { order.push_back(i); });
    ctx->poll(false);
    ASSERT_EQ(order.size(), 100u);
    for (int i = 0; i < 100; i++) EXPECT_EQ(order[i], i);
}

TEST(BottomHalf, CancelledBhDoesNotRun) {
    auto ctx = make_context("t");
    int runs = 0;
    BhPtr bh = ctx->new_bh([&] { runs++; });
    bh->schedule();
    bh->cancel();
    EXPECT_FALSE(ctx->poll(false));
    EXPECT_EQ(runs, 0);
    bh->schedule();  // still usable after a cancel
    ctx->poll(false);
    EXPECT_EQ(runs, 1);
}

TEST(BottomHalf, DeletedWhileScheduledNeverRunsAndIsFreed) {
    auto ctx = make_context("t");
    auto token = std::make_shared<int>(0);
    int runs = 0;
    BhPtr bh = ctx->new_bh([&runs, token] { runs++; });
    bh->schedule();
    bh.reset();  // queued: the loop frees it (ASan checks the free)
    EXPECT_EQ(token.use_count(), 2);
    ctx->poll(false);
    EXPECT_EQ(runs, 0);
    EXPECT_EQ(token.use_count(), 1);
}

TEST(BottomHalf, RescheduleFromItsOwnCallbackRunsNextIteration) {
    auto ctx = make_context("t");
    int runs = 0;
    BhPtr bh;
    bh = ctx->new_bh([&] {
        if (++runs < 3) bh->schedule();
    });
    bh->schedule();
    ctx->poll(false);
    EXPECT_EQ(runs, 1);  // not nested, not looping within the iteration
    ctx->poll(false);
    ctx->poll(false);
    EXPECT_EQ(runs, 3);
}

TEST(BottomHalf, MayDeleteItselfWhileRunning) {
    auto ctx = make_context("t");
    BhPtr bh;
    bool ran = false;
    bh = ctx->new_bh([&] {
        ran = true;
        bh.reset();
    });
    bh->schedule();
    ctx->poll(false);
    EXPECT_TRUE(ran);
    EXPECT_EQ(bh, nullptr);
}

TEST(BottomHalf, QueuedOneshotsAreReleasedWhenContextIsDestroyed) {
    auto token = std::make_shared<int>(0);
    bool ran = false;
    {
        auto ctx = make_context("t");
        ctx->schedule_oneshot([token, &ran] { ran = true; });
        EXPECT_EQ(token.use_count(), 2);
    }
    EXPECT_FALSE(ran);
    EXPECT_EQ(token.use_count(), 1);
}

TEST(BottomHalf, ScheduledFromAnotherThreadRunsInHomeThread) {
    auto ctx = make_context("t");
    std::atomic<int> runs{0};
    std::thread::id ran_on;
    std::thread other([&] {
        for (int i = 0; i < 1000; i++)
            ctx->schedule_oneshot([&] {
                ran_on = std::this_thread::get_id();
                runs++;
            });
    });
    other.join();
    ASSERT_TRUE(test::poll_until(*ctx, [&] { return runs == 1000; }));
    EXPECT_EQ(ran_on, std::this_thread::get_id());
}

// A device BH that a nested event loop would run while the device is busy is
// deferred until the device's guard is released, not run re-entrantly.
TEST(ReentrancyGuard, GuardedBhIsDeferredDuringNestedPoll) {
    auto ctx = make_context("t");
    ReentrancyGuard guard;
    std::vector<std::string> events;
    BhPtr device_bh = ctx->new_bh([&] { events.push_back("device-bh"); }, &guard);
    ctx->schedule_oneshot([&] {
        ReentrancyGuard::Scope in_device(guard);  // device handling a request...
        events.push_back("device-start");
        device_bh->schedule();
        ctx->poll(false);  // ...runs a nested loop (e.g. a synchronous wait)
        ctx->poll(false);
        events.push_back("device-end");
    });
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(events, (std::vector<std::string>{"device-start", "device-end", "device-bh"}));
}

TEST(ReentrancyGuard, BhRunsWithItsGuardEngaged) {
    auto ctx = make_context("t");
    ReentrancyGuard guard;
    bool engaged_inside = false;
    BhPtr bh = ctx->new_bh([&] { engaged_inside = guard.engaged(); }, &guard);
    bh->schedule();
    ctx->poll(false);
    EXPECT_TRUE(engaged_inside);
    EXPECT_FALSE(guard.engaged());
}

// A BH that waits synchronously (nested poll) for something a later BH of the
// same batch does must see that BH run (QEMU's BHListSlice).
TEST(BottomHalf, NestedPollRunsTheRestOfTheOuterBatch) {
    auto ctx = make_context("t");
    bool cond = true;
    bool waited_ok = false;
    ctx->schedule_oneshot([&] {
        for (int i = 0; i < 10 && cond; i++) ctx->poll(false);
        waited_ok = !cond;
    });
    ctx->schedule_oneshot([&] { cond = false; });
    test::run_until_idle({ctx.get()});
    EXPECT_TRUE(waited_ok);
}

// Deleting a BH from its own callback must not free the callback's captures
// while it still runs (ASan reports a use-after-free otherwise).
TEST(BottomHalf, SelfDeleteKeepsCapturesAliveUntilTheCallbackReturns) {
    auto ctx = make_context("t");
    BhPtr bh;
    std::string seen;
    bh = ctx->new_bh([&bh, &seen, text = std::string(100, 'x')] {
        bh.reset();
        seen = text;  // a capture, used after the reset
    });
    bh->schedule();
    ctx->poll(false);
    EXPECT_EQ(seen, std::string(100, 'x'));
}

TEST(BottomHalf, SelfDeleteAfterRescheduleIsFreedByTheLoop) {
    auto ctx = make_context("t");
    int runs = 0;
    BhPtr bh;
    bh = ctx->new_bh([&] {
        runs++;
        bh->schedule();
        bh.reset();  // queued again: the loop frees it, without running it
    });
    bh->schedule();
    ctx->poll(false);
    ctx->poll(false);
    EXPECT_EQ(runs, 1);
}
}  // namespace
}  // namespace ioplane
