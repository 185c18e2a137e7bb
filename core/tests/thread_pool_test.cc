#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "harness.h"
#include "ioplane/core/thread_pool.h"

namespace ioplane {
namespace {

using test::make_context;
using test::poll_until;

// A gate that workers block on until the test opens it.
class Gate {
public:
    void open() {
        std::lock_guard lk(mu_);
        open_ = true;
        cv_.notify_all();
    }
    void pass() {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return open_; });
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool open_ = false;
};

TEST(ThreadPool, CompletionRunsInTheSubmittingContextNotOnTheWorker) {
    auto ctx = make_context("t");
    ThreadPool& pool = ctx->thread_pool();
    EXPECT_EQ(pool.thread_count(), 0u);  // lazy
    std::thread::id work_thread, done_thread;
    int ret = 0;
    pool.submit(
        [&] {
            work_thread = std::this_thread::get_id();
            return 5;
        },
        [&](int r) {
            ret = r;
            done_thread = std::this_thread::get_id();
        });
    EXPECT_EQ(pool.thread_count(), 1u);
    ASSERT_TRUE(poll_until(*ctx, [&] { return ret != 0; }));
    EXPECT_EQ(ret, 5);
    EXPECT_NE(work_thread, std::this_thread::get_id());
    EXPECT_EQ(done_thread, std::this_thread::get_id());
}

TEST(ThreadPool, NeverMoreThreadsThanTheLimit) {
    auto ctx = make_context("t");
    ThreadPool& pool = ctx->thread_pool();
    pool.set_limits({.max_threads = 2});
    Gate gate;
    std::atomic<int> running{0}, max_running{0};
    int done = 0;
    for (int i = 0; i < 8; i++)
        pool.submit(
            [&] {
                int now = ++running;
                int prev = max_running.load();
                while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
                }
                gate.pass();
                running--;
                return 0;
            },
            [&](int) { done++; });
    EXPECT_LE(pool.thread_count(), 2u);
    ASSERT_TRUE(test::wait_until([&] { return running == 2; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a third would show up now
    EXPECT_EQ(running, 2);
    gate.open();
    ASSERT_TRUE(poll_until(*ctx, [&] { return done == 8; }));
    EXPECT_EQ(max_running, 2);
}

TEST(ThreadPool, IdleWorkersRetire) {
    auto ctx = make_context("t");
    ThreadPool& pool = ctx->thread_pool();
    pool.set_limits({.max_threads = 4, .idle_timeout_ns = 20'000'000});
    int done = 0;
    for (int i = 0; i < 3; i++) pool.submit([] { return 0; }, [&](int) { done++; });
    ASSERT_TRUE(poll_until(*ctx, [&] { return done == 3; }));
    ASSERT_TRUE(test::wait_until([&] { return pool.thread_count() == 0; }));
    // A retired pool starts workers again on demand.
    pool.submit([] { return 1; }, [&](int) { done++; });
    ASSERT_TRUE(poll_until(*ctx, [&] { return done == 4; }));
}

TEST(ThreadPool, QueuedWorkCanBeCancelledRunningWorkCannot) {
    auto ctx = make_context("t");
    ThreadPool& pool = ctx->thread_pool();
    pool.set_limits({.max_threads = 1});
    Gate gate;
    std::atomic<bool> first_started{false}, second_ran{false};
    int first_ret = 0, second_ret = 0;
    WorkItem* first = pool.submit(
        [&] {
            first_started = true;
            gate.pass();
            return 1;
        },
        [&](int r) { first_ret = r; });
    WorkItem* second = pool.submit(
        [&] {
            second_ran = true;
            return 2;
        },
        [&](int r) { second_ret = r; });
    ASSERT_TRUE(test::wait_until([&] { return first_started.load(); }));
    EXPECT_FALSE(pool.cancel(*first));  // running
    EXPECT_TRUE(pool.cancel(*second));  // queued
    gate.open();
    ASSERT_TRUE(poll_until(*ctx, [&] { return first_ret != 0 && second_ret != 0; }));
    EXPECT_EQ(first_ret, 1);
    EXPECT_EQ(second_ret, -ECANCELED);  // the completion still runs, once
    EXPECT_FALSE(second_ran);
}

TEST(ThreadPool, ContextDestructionWithQueuedWorkLeaksNothing) {
    Gate gate;
    std::atomic<bool> started{false};
    int completions = 0;
    {
        auto ctx = make_context("t");
        ThreadPool& pool = ctx->thread_pool();
        pool.set_limits({.max_threads = 1});
        pool.submit(
            [&] {
                started = true;
                gate.pass();
                return 0;
            },
            [&](int) { completions++; });
        for (int i = 0; i < 10; i++) pool.submit([] { return 0; }, [&](int) { completions++; });
        ASSERT_TRUE(test::wait_until([&] { return started.load(); }));
        std::thread opener([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            gate.open();
        });
        ctx.reset();  // joins the worker; queued items are released unrun (ASan: no leak)
        opener.join();
    }
    EXPECT_EQ(completions, 0);
}

}  // namespace
}  // namespace ioplane
