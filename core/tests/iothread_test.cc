#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "harness.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"

namespace ioplane {
namespace {

TEST(IOThread, RunsBhsInItsOwnNamedThread) {
    auto io = IOThread::start({.id = "io-name"});
    ASSERT_TRUE(io);
    std::atomic<bool> done{false};
    std::string name;
    bool home = false;
    (*io)->ctx().schedule_oneshot([&] {
        char buf[16];
        pthread_getname_np(pthread_self(), buf, sizeof buf);
        name = buf;
        home = (*io)->ctx().in_home_thread();
        done = true;
    });
    ASSERT_TRUE(test::wait_until([&] { return done.load(); }));
    EXPECT_EQ(name, "io-name");
    EXPECT_TRUE(home);
    EXPECT_FALSE((*io)->ctx().in_home_thread());
}

TEST(IOThread, StopRunsWhatIsQueuedAndWhatThatQueues) {
    std::atomic<int> ran{0};
    auto io = IOThread::start({.id = "io-stop"});
    ASSERT_TRUE(io);
    AioContext& ctx = (*io)->ctx();
    for (int i = 0; i < 100; i++)
        ctx.schedule_oneshot([&] {
            ran++;
            ctx.schedule_oneshot([&] { ran++; });
        });
    (*io)->stop();
    EXPECT_EQ(ran, 200);
    (*io)->stop();  // idempotent
}

TEST(IOThread, StartStopCyclesAreClean) {
    for (int i = 0; i < 50; i++) {
        auto io = IOThread::start({.id = "cycle"});
        ASSERT_TRUE(io);
        (*io)->ctx().schedule_oneshot([] {});
    }
}

class MainLoopTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop) << loop.error().describe();
        loop_ = std::move(*loop);
    }
    std::unique_ptr<MainLoop> loop_;
};

TEST_F(MainLoopTest, OnlyOneMainLoop) {
    auto second = MainLoop::create();
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code, EBUSY);
}

TEST_F(MainLoopTest, KnowsTheMainThread) {
    EXPECT_TRUE(in_main_thread());
    EXPECT_EQ(main_context(), &loop_->ctx());
    auto io = IOThread::start({.id = "io"});
    ASSERT_TRUE(io);
    std::atomic<int> in_main{-1};
    (*io)->ctx().schedule_oneshot([&] { in_main = in_main_thread(); });
    ASSERT_TRUE(test::wait_until([&] { return in_main >= 0; }));
    EXPECT_EQ(in_main, 0);
}

TEST_F(MainLoopTest, HoldsTheBigLockWhileDispatchingAndDropsItWhileSleeping) {
    std::atomic<bool> other_took_bql{false}, bh_ran{false};
    bool held_in_bh = false;
    loop_->ctx().schedule_oneshot([&] {
        held_in_bh = bql_locked();
        bh_ran = true;
    });
    std::thread other([&] {
        test::wait_until([&] { return bh_ran.load(); });
        BqlGuard g;  // the main loop is running: succeeds once it sleeps
        other_took_bql = true;
    });
    std::thread stopper([&] {
        test::wait_until([&] { return other_took_bql.load(); });
        loop_->request_stop();
    });
    loop_->run();
    other.join();
    stopper.join();
    EXPECT_TRUE(held_in_bh);
    EXPECT_TRUE(other_took_bql);
    EXPECT_FALSE(bql_locked());
}

// notify() without a BH (request_stop) must wake a loop that is about to
// sleep: the loop checks notified_ after announcing notify_me_.
TEST_F(MainLoopTest, RequestStopFromAnotherThreadIsNeverLost) {
    for (int round = 0; round < 300; round++) {
        MainLoop* loop = loop_.get();
        std::thread stopper([loop, round] {
            if (round % 3) std::this_thread::sleep_for(std::chrono::microseconds(round % 50));
            loop->request_stop();
        });
        loop_->run();  // hangs (test timeout) if the wake-up is lost
        stopper.join();
        loop_.reset();
        auto next = MainLoop::create();
        ASSERT_TRUE(next);
        loop_ = std::move(*next);
    }
}

TEST_F(MainLoopTest, AioWaitWhileReturnsWhenAnIOThreadChangesTheCondition) {
    auto io = IOThread::start({.id = "io-wait", .poll = {}});
    ASSERT_TRUE(io);
    for (int round = 0; round < 200; round++) {
        std::atomic<bool> busy{true};
        (*io)->ctx().schedule_oneshot([&] {
            busy.store(false);
            aio_wait_kick();
        });
        aio_wait_while((*io)->ctx(), [&] { return busy.load(); });
        EXPECT_FALSE(busy);
    }
}

// The main thread waits on its own context for a condition that an IOThread
// changes: the kick must wake it.
TEST_F(MainLoopTest, AioWaitWhileOnTheMainContextIsWokenByAKick) {
    auto io = IOThread::start({.id = "io-kick", .poll = {}});
    ASSERT_TRUE(io);
    for (int round = 0; round < 200; round++) {
        std::atomic<bool> busy{true};
        (*io)->ctx().schedule_oneshot([&] {
            busy.store(false);
            aio_wait_kick();
        });
        aio_wait_while(loop_->ctx(), [&] { return busy.load(); });
    }
}

TEST_F(MainLoopTest, AioWaitWhileInTheHomeContextPollsThatContext) {
    bool flag = true;
    loop_->ctx().schedule_oneshot([&] { flag = false; });
    aio_wait_while(loop_->ctx(), [&] { return flag; });
    EXPECT_FALSE(flag);
}

}  // namespace
}  // namespace ioplane
