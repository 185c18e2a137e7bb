// KickNotifier's state machine (deassigned / assigned / polled) with real
// AioContexts driven from the test thread (their home), a real eventfd as
// the front end's kick fd, and hooks that record what the notifier asked for.
#include "kick_notifier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/event_notifier.h"
#include "ioplane/core/timer.h"

namespace ioplane::vhost_user {
namespace {

using State = KickNotifier::State;

std::unique_ptr<AioContext> make_context(const char* name, PollParams poll = {}) {
    auto ctx = AioContext::create(name, poll);
    EXPECT_TRUE(ctx) << ctx.error().describe();
    return ctx ? std::move(*ctx) : nullptr;
}

EventNotifier make_eventfd() {
    auto e = EventNotifier::create();
    EXPECT_TRUE(e);
    return std::move(*e);
}

// Runs non-blocking iterations until nothing happens.
void run_until_idle(AioContext& ctx) {
    for (int i = 0; i < 1000 && ctx.poll(false); i++) {
    }
}

// Polls `ctx` (blocking, but never longer than 1 ms at a time) until `done`
// or `timeout_ns`; false on timeout.
bool poll_until(AioContext& ctx, const std::function<bool()>& done, int64_t timeout_ns = 2'000'000'000) {
    Timer wake(ctx, [] {});
    const int64_t deadline = now_ns() + timeout_ns;
    while (!done()) {
        if (now_ns() > deadline) return false;
        wake.arm_in(1'000'000);
        ctx.poll(true);
    }
    return true;
}

// Runs `ctx` for `ns`, blocking in between.
void run_for(AioContext& ctx, int64_t ns) {
    Timer wake(ctx, [] {});
    const int64_t deadline = now_ns() + ns;
    while (now_ns() < deadline) {
        wake.arm_at(deadline);
        ctx.poll(true);
    }
}

// What the notifier asked of the queue. `work` plays the avail ring: has_work
// reports it, process consumes it.
struct Recorder {
    int processed = 0;
    std::vector<AioContext*> process_contexts;  // where each process ran
    bool work = false;
    int has_work_calls = 0;
    int has_work_calls_with_kicks_off = 0;  // while the last set_notifications said off
    std::vector<bool> notifications;        // set_notifications arguments, in order

    KickNotifier::Hooks hooks() {
        return {.process =
                    [this] {
                        processed++;
                        process_contexts.push_back(AioContext::current());
                        work = false;
                    },
                .has_work =
                    [this] {
                        has_work_calls++;
                        if (!notifications.empty() && !notifications.back()) has_work_calls_with_kicks_off++;
                        return work;
                    },
                .set_notifications = [this](bool on) { notifications.push_back(on); }};
    }
};

class KickNotifierTest : public ::testing::Test {
protected:
    std::unique_ptr<AioContext> ctx_ = make_context("queue");
    EventNotifier kick_ = make_eventfd();
    Recorder rec_;
    KickNotifier n_{rec_.hooks()};

    void TearDown() override {
        n_.stop();  // the destructor requires deassigned
        run_until_idle(*ctx_);
    }
};

TEST_F(KickNotifierTest, StartsDeassigned) {
    EXPECT_EQ(n_.state(), State::deassigned);
    EXPECT_EQ(n_.context(), nullptr);
    EXPECT_STREQ(KickNotifier::state_name(State::deassigned), "deassigned");
    EXPECT_STREQ(KickNotifier::state_name(State::assigned), "assigned");
    EXPECT_STREQ(KickNotifier::state_name(State::polled), "polled");
    n_.stop();  // stopping a deassigned notifier does nothing
    EXPECT_EQ(n_.state(), State::deassigned);
    EXPECT_TRUE(rec_.notifications.empty());
}

// ---- deassigned -> assigned ----

TEST_F(KickNotifierTest, StartWithAKickFdAssignsAndRunsOneFirstCheck) {
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    EXPECT_EQ(n_.state(), State::assigned);
    EXPECT_EQ(n_.context(), ctx_.get());
    EXPECT_EQ(rec_.processed, 0);  // not synchronously: in the context's loop
    run_until_idle(*ctx_);
    // Without any kick: buffers made available while nobody watched.
    EXPECT_EQ(rec_.processed, 1);
    ASSERT_EQ(rec_.process_contexts.size(), 1u);
    EXPECT_EQ(rec_.process_contexts[0], ctx_.get());
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 1);  // once only
}

TEST_F(KickNotifierTest, EachKickRunsProcessAndIsConsumed) {
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    run_until_idle(*ctx_);
    ASSERT_EQ(rec_.processed, 1);
    for (int i = 1; i <= 3; i++) {
        kick_.set();
        ASSERT_TRUE(poll_until(*ctx_, [&] { return rec_.processed == 1 + i; }));
        EXPECT_FALSE(kick_.test_and_clear()) << "the notifier reads the eventfd";
        run_until_idle(*ctx_);
        EXPECT_EQ(rec_.processed, 1 + i);  // a consumed kick does not fire again
    }
    // Kicks that pile up before the loop runs make one call.
    kick_.set();
    kick_.set();
    ASSERT_TRUE(poll_until(*ctx_, [&] { return rec_.processed == 5; }));
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 5);
}

TEST_F(KickNotifierTest, StartWithABadFdFailsAndStaysDeassigned) {
    const int closed_fd = ::dup(kick_.fd());
    ::close(closed_fd);
    EXPECT_FALSE(n_.start(*ctx_, closed_fd));
    EXPECT_EQ(n_.state(), State::deassigned);
    EXPECT_EQ(n_.context(), nullptr);
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 0);
    // And it can start properly afterwards.
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 1);
}

// ---- assigned -> deassigned ----

TEST_F(KickNotifierTest, StopDeassignsReenablesNotificationsAndIgnoresKicks) {
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    run_until_idle(*ctx_);
    ASSERT_EQ(rec_.processed, 1);
    n_.stop();
    EXPECT_EQ(n_.state(), State::deassigned);
    EXPECT_EQ(n_.context(), nullptr);
    ASSERT_FALSE(rec_.notifications.empty());
    EXPECT_TRUE(rec_.notifications.back());  // whoever watches next relies on kicks
    kick_.set();
    run_for(*ctx_, 5'000'000);
    EXPECT_EQ(rec_.processed, 1);
    EXPECT_TRUE(kick_.test_and_clear()) << "a deassigned notifier leaves the kick pending";
}

TEST_F(KickNotifierTest, StopBeforeTheFirstCheckRanCancelsIt) {
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    n_.stop();
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 0);  // no hook runs after stop()
}

// No lost kick: one sent while deassigned is still pending on the eventfd,
// and the notifier reads and processes it once it is assigned again.
TEST_F(KickNotifierTest, KickSentWhileDeassignedIsProcessedAfterRestart) {
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    run_until_idle(*ctx_);
    n_.stop();
    kick_.set();
    run_until_idle(*ctx_);
    ASSERT_EQ(rec_.processed, 1);
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    ASSERT_TRUE(poll_until(*ctx_, [&] { return rec_.processed >= 3; }));
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 3);  // the first check, and the kick
    EXPECT_FALSE(kick_.test_and_clear());
}

// ---- deassigned -> polled -> deassigned ----

TEST_F(KickNotifierTest, PolledStateFindsWorkWithoutKicks) {
    ASSERT_TRUE(n_.start(*ctx_, -1));
    EXPECT_EQ(n_.state(), State::polled);
    EXPECT_EQ(n_.context(), ctx_.get());
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 1);  // the first check

    // Nothing available: the ring is looked at, not processed.
    const int calls_before = rec_.has_work_calls;
    run_for(*ctx_, 5 * KickNotifier::kPollInterval);
    EXPECT_EQ(rec_.processed, 1);
    EXPECT_GT(rec_.has_work_calls, calls_before);

    // Work appears (no kick fd exists): found within a poll interval or so.
    for (int round = 2; round <= 3; round++) {
        rec_.work = true;
        ASSERT_TRUE(poll_until(*ctx_, [&] { return rec_.processed == round; }))
            << "available buffers not processed in the polled state";
        EXPECT_EQ(rec_.process_contexts.back(), ctx_.get());
    }
}

TEST_F(KickNotifierTest, StopLeavesThePolledState) {
    ASSERT_TRUE(n_.start(*ctx_, -1));
    run_until_idle(*ctx_);
    ASSERT_EQ(rec_.processed, 1);
    n_.stop();
    EXPECT_EQ(n_.state(), State::deassigned);
    EXPECT_EQ(n_.context(), nullptr);
    ASSERT_FALSE(rec_.notifications.empty());
    EXPECT_TRUE(rec_.notifications.back());
    // The poll timer is gone: work stays unprocessed.
    rec_.work = true;
    const int calls = rec_.has_work_calls;
    run_for(*ctx_, 5 * KickNotifier::kPollInterval);
    EXPECT_EQ(rec_.processed, 1);
    EXPECT_EQ(rec_.has_work_calls, calls);
    // polled -> deassigned -> assigned works.
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    EXPECT_EQ(n_.state(), State::assigned);
    run_until_idle(*ctx_);
    EXPECT_EQ(rec_.processed, 2);
}

// ---- a move between contexts: stop() in one, start() in the other ----

TEST_F(KickNotifierTest, MoveToAnotherContextProcessesKicksThereOnly) {
    auto other = make_context("other");
    ASSERT_TRUE(n_.start(*ctx_, kick_.fd()));
    run_until_idle(*ctx_);
    ASSERT_EQ(rec_.processed, 1);

    n_.stop();
    kick_.set();  // in between: neither context watches
    run_until_idle(*ctx_);
    run_until_idle(*other);
    EXPECT_EQ(rec_.processed, 1);

    ASSERT_TRUE(n_.start(*other, kick_.fd()));
    EXPECT_EQ(n_.context(), other.get());
    // The old context has nothing to do with it any more.
    run_for(*ctx_, 2'000'000);
    EXPECT_EQ(rec_.processed, 1);
    ASSERT_TRUE(poll_until(*other, [&] { return rec_.processed >= 3; }));
    run_until_idle(*other);
    EXPECT_EQ(rec_.processed, 3);  // the first check and the pending kick
    EXPECT_FALSE(kick_.test_and_clear());

    kick_.set();
    run_for(*ctx_, 2'000'000);
    EXPECT_EQ(rec_.processed, 3);
    ASSERT_TRUE(poll_until(*other, [&] { return rec_.processed == 4; }));
    for (size_t i = 1; i < rec_.process_contexts.size(); i++)
        EXPECT_EQ(rec_.process_contexts[i], other.get()) << "process call " << i;
    n_.stop();
    run_until_idle(*other);
}

// ---- busy polling ----

// Grows `ctx`'s busy-poll window: events that come shortly (100 µs) after
// the loop starts waiting are worth polling for.
void grow_poll_window(AioContext& ctx) {
    Timer t(ctx, [] {});
    for (int i = 0; i < 100 && ctx.poll_window_ns() < 200'000; i++) {
        t.arm_in(100'000);
        ctx.poll(true);
    }
}

TEST(KickNotifierBusyPoll, AssignedQueueIsPolledWithKicksOffWhileTheLoopPolls) {
    auto ctx = make_context("polling", {.max_ns = 1'000'000});
    EventNotifier kick = make_eventfd();
    Recorder rec;
    KickNotifier n(rec.hooks());
    ASSERT_TRUE(n.start(*ctx, kick.fd()));
    run_until_idle(*ctx);
    ASSERT_EQ(rec.processed, 1);

    grow_poll_window(*ctx);
    ASSERT_GT(ctx->poll_window_ns(), 0) << "the loop never started busy-polling";
    // The loop turned ring kicks off while it polled (and back on after).
    ASSERT_FALSE(rec.notifications.empty());
    EXPECT_NE(std::find(rec.notifications.begin(), rec.notifications.end(), false), rec.notifications.end());
    // Polling the ring is what replaces the kicks meanwhile.
    EXPECT_GT(rec.has_work_calls_with_kicks_off, 0);

    // Work without a kick (the driver saw kicks off): found by polling.
    rec.work = true;
    const int calls = rec.has_work_calls;
    ASSERT_TRUE(poll_until(*ctx, [&] { return rec.processed == 2; }));
    EXPECT_GT(rec.has_work_calls, calls);
    EXPECT_FALSE(kick.test_and_clear());

    n.stop();
    EXPECT_TRUE(rec.notifications.back());  // kicks on again for whoever is next
    run_until_idle(*ctx);
}

TEST(KickNotifierBusyPoll, PolledQueueIsFoundByTheBusyPollPhase) {
    auto ctx = make_context("polling", {.max_ns = 1'000'000});
    Recorder rec;
    KickNotifier n(rec.hooks());
    ASSERT_TRUE(n.start(*ctx, -1));
    run_until_idle(*ctx);
    grow_poll_window(*ctx);
    ASSERT_GT(ctx->poll_window_ns(), 0);
    EXPECT_NE(std::find(rec.notifications.begin(), rec.notifications.end(), false), rec.notifications.end());
    EXPECT_GT(rec.has_work_calls_with_kicks_off, 0);
    rec.work = true;
    ASSERT_TRUE(poll_until(*ctx, [&] { return rec.processed == 2; }));
    n.stop();
    EXPECT_TRUE(rec.notifications.back());
    run_until_idle(*ctx);
}

}  // namespace
}  // namespace ioplane::vhost_user
