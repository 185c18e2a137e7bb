#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "harness.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/event_notifier.h"
#include "ioplane/core/timer.h"

namespace ioplane {
namespace {

using test::make_context;

struct Pipe {
    int rd = -1, wr = -1;
    Pipe() {
        int fds[2];
        EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
        rd = fds[0];
        wr = fds[1];
    }
    ~Pipe() {
        if (rd >= 0) close(rd);
        if (wr >= 0) close(wr);
    }
    void put() { ASSERT_EQ(write(wr, "x", 1), 1); }
    void drain() {
        char buf[64];
        while (read(rd, buf, sizeof buf) > 0) {
        }
    }
};

TEST(AioContext, IdlePollMakesNoProgress) {
    auto ctx = make_context("t");
    EXPECT_FALSE(ctx->poll(false));
    EXPECT_EQ(AioContext::current(), nullptr);
}

// What an IOThread's deletion checks: fds and timers that something still
// waits on (the context's own wake-up notifier is not counted).
TEST(AioContext, WaitingWorkCountsWatchedFdsAndArmedTimers) {
    auto ctx = make_context("t");
    EXPECT_TRUE(ctx->waiting_work().empty());
    Pipe p;
    FdHandlerSpec spec;
    spec.on_read = [] {};
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, std::move(spec)));
    Timer timer(*ctx, [] {});
    timer.arm_in(1'000'000'000);
    EXPECT_EQ(ctx->waiting_work().fds, 1u);
    EXPECT_EQ(ctx->waiting_work().timers, 1u);
    timer.cancel();
    ctx->remove_fd_handler(p.rd);
    EXPECT_TRUE(ctx->waiting_work().empty());
}

TEST(AioContext, ReadHandlerRunsWhenFdIsReadable) {
    auto ctx = make_context("t");
    Pipe p;
    int reads = 0;
    AioContext* current_inside = nullptr;
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read = [&] {
                                               reads++;
                                               current_inside = AioContext::current();
                                               p.drain();
                                           }}));
    EXPECT_FALSE(ctx->poll(false));
    p.put();
    EXPECT_TRUE(ctx->poll(true));
    EXPECT_EQ(reads, 1);
    EXPECT_EQ(current_inside, ctx.get());
    ctx->remove_fd_handler(p.rd);
    p.put();
    EXPECT_FALSE(ctx->poll(false));
    EXPECT_EQ(reads, 1);
}

TEST(AioContext, BhScheduledByFdHandlerRunsInTheSameIteration) {
    auto ctx = make_context("t");
    Pipe p;
    bool bh_ran = false;
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read = [&] {
                                               p.drain();
                                               ctx->schedule_oneshot([&] { bh_ran = true; });
                                           }}));
    p.put();
    EXPECT_TRUE(ctx->poll(true));
    EXPECT_TRUE(bh_ran);
    ctx->remove_fd_handler(p.rd);
}

TEST(AioContext, WriteInterestCanBeToggled) {
    auto ctx = make_context("t");
    Pipe p;
    int writes = 0;
    ASSERT_TRUE(ctx->set_fd_handler(p.wr, {.on_write = [&] { writes++; }}));
    ctx->poll(false);
    EXPECT_EQ(writes, 1);  // an empty pipe is writable
    ASSERT_TRUE(ctx->set_fd_events(p.wr, 0));
    ctx->poll(false);
    EXPECT_EQ(writes, 1);
    ASSERT_TRUE(ctx->set_fd_events(p.wr, kFdWrite));
    ctx->poll(false);
    EXPECT_EQ(writes, 2);
    EXPECT_FALSE(ctx->set_fd_events(12345, kFdRead));  // not watched: an error, not a crash
}

TEST(AioContext, HangupReachesReadHandlerAndSilencedFdDoesNotSpin) {
    auto ctx = make_context("t");
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    int reads = 0;
    ASSERT_TRUE(ctx->set_fd_handler(sv[0], {.on_read = [&] { reads++; }}));
    close(sv[1]);
    EXPECT_TRUE(ctx->poll(false));
    EXPECT_EQ(reads, 1);
    ASSERT_TRUE(ctx->set_fd_events(sv[0], 0));  // hung up and silenced: no busy loop
    EXPECT_FALSE(ctx->poll(false));
    ctx->remove_fd_handler(sv[0]);
    close(sv[0]);
}

TEST(AioContext, HandlerMayRemoveAnotherReadyHandler) {
    auto ctx = make_context("t");
    Pipe a, b;
    int a_calls = 0, b_calls = 0;
    auto remove_other = [&](int other) {
        ctx->remove_fd_handler(other);  // the other may be in this iteration's ready list
    };
    ASSERT_TRUE(ctx->set_fd_handler(a.rd, {.on_read = [&] {
                                               a_calls++;
                                               a.drain();
                                               remove_other(b.rd);
                                           }}));
    ASSERT_TRUE(ctx->set_fd_handler(b.rd, {.on_read = [&] {
                                               b_calls++;
                                               b.drain();
                                               remove_other(a.rd);
                                           }}));
    a.put();
    b.put();
    ctx->poll(false);
    EXPECT_EQ(a_calls + b_calls, 1);  // whichever ran first removed the other
}

TEST(AioContext, HandlerMayRemoveItself) {
    auto ctx = make_context("t");
    Pipe p;
    int calls = 0;
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read = [&] {
                                               calls++;
                                               ctx->remove_fd_handler(p.rd);  // destroys this lambda later
                                           }}));
    p.put();
    ctx->poll(false);
    ctx->poll(false);
    EXPECT_EQ(calls, 1);
}

TEST(AioContext, RegularFileCannotBeWatched) {
    auto ctx = make_context("t");
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto r = ctx->set_fd_handler(fd, {.on_read = [] {}});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM);
    EXPECT_NE(r.error().message.find("fd"), std::string::npos);
    close(fd);
}

TEST(AioContext, EventNotifierWakesBlockingPollFromAnotherThread) {
    auto ctx = make_context("t");
    auto n = EventNotifier::create();
    ASSERT_TRUE(n);
    int fired = 0;
    ASSERT_TRUE(ctx->set_fd_handler(n->fd(), {.on_read = [&] {
                                                  if (n->test_and_clear()) fired++;
                                              }}));
    std::thread setter([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        n->set();
    });
    while (fired == 0) ctx->poll(true);
    setter.join();
    EXPECT_EQ(fired, 1);
    ctx->remove_fd_handler(n->fd());
}

TEST(AioContext, GuardedFdHandlerIsDeferredDuringNestedPoll) {
    auto ctx = make_context("t");
    ReentrancyGuard guard;
    Pipe p;
    std::vector<std::string> events;
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read =
                                               [&] {
                                                   events.push_back("fd");
                                                   p.drain();
                                               },
                                           .guard = &guard}));
    ctx->schedule_oneshot([&] {
        ReentrancyGuard::Scope in_device(guard);
        p.put();
        ctx->poll(false);  // nested: the fd is ready but the device is busy
        ctx->poll(false);  // deferred fd is silent: no spinning on it
        events.push_back("device-end");
    });
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(events, (std::vector<std::string>{"device-end", "fd"}));
}

// ---- adaptive polling ----

TEST(AdaptivePolling, DisabledWindowStaysZero) {
    auto ctx = make_context("t");
    Timer t(*ctx, [] {});
    for (int i = 0; i < 5; i++) {
        t.arm_in(20'000);
        ctx->poll(true);
    }
    EXPECT_EQ(ctx->poll_window_ns(), 0);
}

TEST(AdaptivePolling, WindowGrowsForShortWaitsAndShrinksForLongOnes) {
    auto ctx = make_context("t", {.max_ns = 200'000});
    Timer t(*ctx, [] {});
    // Events that come ~20 µs after the loop starts waiting: worth polling for.
    for (int i = 0; i < 20; i++) {
        t.arm_in(20'000);
        ctx->poll(true);
    }
    const int64_t grown = ctx->poll_window_ns();
    EXPECT_GT(grown, 0);
    EXPECT_LE(grown, 200'000);
    // Waits far beyond poll-max-ns: polling is wasted, the window shrinks to 0.
    for (int i = 0; i < 20 && ctx->poll_window_ns() > 0; i++) {
        t.arm_in(2'000'000);
        ctx->poll(true);
    }
    EXPECT_EQ(ctx->poll_window_ns(), 0);
}

// A producer in another thread makes work visible to the poll function and,
// only when the loop has notifications on (not polling), also writes the fd,
// as a virtqueue does. With a grown window, the loop finds the work by polling.
TEST(AdaptivePolling, PollFunctionFindsWorkWithoutTheKernelAndTogglesNotifications) {
    auto ctx = make_context("t", {.max_ns = 50'000'000});
    Pipe p;
    std::atomic<bool> work{false};
    std::atomic<bool> notifications{true};
    int by_poll = 0, by_kernel = 0;
    std::vector<bool> polling_changes;
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read =
                                               [&] {
                                                   p.drain();
                                                   if (work.exchange(false)) by_kernel++;
                                               },
                                           .poll = [&] { return work.load(); },
                                           .on_poll_ready =
                                               [&] {
                                                   if (work.exchange(false)) by_poll++;
                                               },
                                           .set_polling =
                                               [&](bool on) {
                                                   polling_changes.push_back(on);
                                                   notifications = !on;
                                               }}));
    // Grow the window: events that arrive ~1 ms after the loop starts waiting.
    Timer t(*ctx, [] {});
    for (int i = 0; i < 30; i++) {
        t.arm_in(1'000'000);
        ctx->poll(true);
    }
    ASSERT_GE(ctx->poll_window_ns(), 1'000'000);
    ASSERT_FALSE(polling_changes.empty());
    EXPECT_TRUE(polling_changes.front());  // notifications off while polling

    for (int round = 0; round < 20; round++) {
        std::thread producer([&] {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
            work = true;
            if (notifications) p.put();
        });
        while (by_poll + by_kernel == round) ctx->poll(true);
        producer.join();
    }
    EXPECT_EQ(by_poll + by_kernel, 20);
    EXPECT_GT(by_poll, 10);  // most arrivals are caught by polling
    for (size_t i = 1; i < polling_changes.size(); i++)
        EXPECT_NE(polling_changes[i], polling_changes[i - 1]);  // strictly alternating
    ctx->remove_fd_handler(p.rd);
}

// ---- cross-thread wake-up (notify_me protocol) ----

// Thousands of ping-pongs between a thread that schedules BHs and a loop that
// sleeps in the kernel between them. A lost wake-up leaves the loop asleep
// forever; the waiting side then times out and the test fails.
void ping_pong_without_lost_wakeups(PollParams poll) {
    auto ctx = make_context("loop", poll);
    std::atomic<bool> stop{false};
    std::atomic<int> done{0};
    // The loop thread becomes the context's home.
    std::atomic<bool> attached{false};
    std::thread loop([&] {
        ctx->attach_to_current_thread();
        attached = true;
        while (!stop.load()) ctx->poll(true);
        while (ctx->poll(false)) {
        }
    });
    ASSERT_TRUE(test::wait_until([&] { return attached.load(); }));
    constexpr int kRounds = 20000;
    bool lost = false;
    for (int i = 1; i <= kRounds && !lost; i++) {
        ctx->schedule_oneshot([&] { done.fetch_add(1, std::memory_order_release); });
        // Alternate between racing with the loop and letting it fall asleep.
        if (i % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
        lost = !test::wait_until([&] { return done.load(std::memory_order_acquire) == i; }, 5'000'000'000);
    }
    EXPECT_FALSE(lost) << "lost wake-up after " << done.load() << " round trips";
    ctx->schedule_oneshot([&] { stop = true; });
    loop.join();
    ctx->attach_to_current_thread();
}

TEST(NotifyMe, NoLostWakeupsWhenSleepingInKernel) { ping_pong_without_lost_wakeups({}); }
TEST(NotifyMe, NoLostWakeupsWithAdaptivePolling) { ping_pong_without_lost_wakeups({.max_ns = 32768}); }

// ---- deterministic multi-context harness ----

TEST(Harness, ContextsInOneThreadPingPongDeterministically) {
    auto a = make_context("a");
    auto b = make_context("b");
    std::vector<std::string> trace;
    std::function<void(int)> ping;
    ping = [&](int n) {
        AioContext* here = AioContext::current();
        trace.push_back(here->name() + std::to_string(n));
        if (n == 6) return;
        (here == a.get() ? b : a)->schedule_oneshot([&, n] { ping(n + 1); });
    };
    a->schedule_oneshot([&] { ping(1); });
    test::run_until_idle({a.get(), b.get()});
    EXPECT_EQ(trace, (std::vector<std::string>{"a1", "b2", "a3", "b4", "a5", "b6"}));
}

// A handler removed while the loop is in poll mode gets its notifications
// back (it may be attached to another context next).
TEST(AdaptivePolling, HandlerRemovedWhilePollingLeavesPollMode) {
    auto ctx = make_context("t", {.max_ns = 50'000'000});
    Pipe p;
    std::vector<bool> changes;
    std::atomic<bool> work{false};
    ASSERT_TRUE(ctx->set_fd_handler(p.rd, {.on_read = [] {},
                                           .poll = [&] { return work.load(); },
                                           .on_poll_ready = [&] { ctx->remove_fd_handler(p.rd); },
                                           .set_polling = [&](bool on) { changes.push_back(on); }}));
    Timer t(*ctx, [&] { work = true; });
    for (int i = 0; i < 20 && ctx->poll_window_ns() < 1'000'000; i++) {
        t.arm_in(1'000'000);
        ctx->poll(true);
        work = false;
    }
    work = true;
    ctx->poll(true);  // found by polling; the handler removes itself
    ASSERT_FALSE(changes.empty());
    EXPECT_FALSE(changes.back());
}

TEST(AioContext, ContextDestroyedWithArmedTimerDisarmsIt) {
    auto ctx = make_context("t");
    auto timer = std::make_unique<Timer>(*ctx, [] {});
    timer->arm_in(1'000'000'000);
    ctx.reset();
    EXPECT_FALSE(timer->armed());
    timer.reset();  // touches nothing freed
}
}  // namespace
}  // namespace ioplane
