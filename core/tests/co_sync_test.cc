#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "harness.h"
#include "ioplane/core/co_mutex.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/co_rwlock.h"
#include "ioplane/core/iothread.h"

namespace ioplane {
namespace {

using test::make_context;

TEST(CoMutex, ExcludesAndServesWaitersInArrivalOrder) {
    auto ctx = make_context("t");
    CoMutex m;
    std::vector<int> order;
    int inside = 0, max_inside = 0;
    auto worker = [&](int id) -> Task<void> {
        co_await m.lock();
        inside++;
        max_inside = std::max(max_inside, inside);
        order.push_back(id);
        co_await yield_now();  // others run meanwhile and must queue
        co_await yield_now();
        inside--;
        m.unlock();
    };
    for (int i = 0; i < 5; i++) spawn(*ctx, worker(i));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(max_inside, 1);
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
    EXPECT_FALSE(m.locked());
}

TEST(CoMutex, UnlockerCannotOvertakeAWaiter) {
    auto ctx = make_context("t");
    CoMutex m;
    std::vector<std::string> trace;
    spawn(*ctx, [](CoMutex& m, std::vector<std::string>& trace) -> Task<void> {
        co_await m.lock();
        co_await yield_now();  // B queues now
        m.unlock();
        trace.push_back("A unlocked");
        co_await m.lock();  // must wait behind B (fairness)
        trace.push_back("A relocked");
        m.unlock();
    }(m, trace));
    spawn(*ctx, [](CoMutex& m, std::vector<std::string>& trace) -> Task<void> {
        auto guard = co_await m.scoped_lock();
        trace.push_back("B locked");
    }(m, trace));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(trace, (std::vector<std::string>{"A unlocked", "B locked", "A relocked"}));
}

TEST(CoMutex, WaitersResumeInTheirOwnContext) {
    auto a = make_context("a");
    auto b = make_context("b");
    CoMutex m;
    AioContext* resumed_in = nullptr;
    ASSERT_TRUE(m.try_lock());
    spawn(*b, [](CoMutex& m, AioContext*& out) -> Task<void> {
        co_await m.lock();
        out = AioContext::current();
        m.unlock();
    }(m, resumed_in));
    test::run_until_idle({a.get(), b.get()});
    a->schedule_oneshot([&] { m.unlock(); });  // released from context a
    test::run_until_idle({a.get(), b.get()});
    EXPECT_EQ(resumed_in, b.get());
}

// Coroutines in two IOThreads update a plain counter under a CoMutex with
// suspension points inside the critical section. TSan reports any access
// that the mutex does not order.
TEST(CoMutex, ProtectsDataAcrossThreads) {
    auto io0 = IOThread::start({.id = "m0"});
    auto io1 = IOThread::start({.id = "m1"});
    ASSERT_TRUE(io0 && io1);
    CoMutex m;
    long counter = 0;
    std::atomic<int> finished{0};
    constexpr int kPerCoroutine = 500, kCoroutines = 8;
    auto body = [&]() -> Task<void> {
        for (int i = 0; i < kPerCoroutine; i++) {
            auto guard = co_await m.scoped_lock();
            long v = counter;
            if (i % 7 == 0) co_await yield_now();
            counter = v + 1;
        }
        finished++;
    };
    for (int i = 0; i < kCoroutines; i++) spawn((i % 2 ? *io1 : *io0)->ctx(), body());
    ASSERT_TRUE(test::wait_until([&] { return finished == kCoroutines; }, 60'000'000'000));
    (*io0)->stop();
    (*io1)->stop();
    EXPECT_EQ(counter, long(kPerCoroutine) * kCoroutines);
}

TEST(CoQueue, NextWakesInOrderAndRestartAllWakesEveryone) {
    auto ctx = make_context("t");
    CoQueue q;
    std::vector<int> woke;
    for (int i = 0; i < 4; i++)
        spawn(*ctx, [](CoQueue& q, std::vector<int>& woke, int id) -> Task<void> {
            co_await q.wait();
            woke.push_back(id);
        }(q, woke, i));
    test::run_until_idle({ctx.get()});
    EXPECT_TRUE(woke.empty());
    EXPECT_TRUE(q.next());
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(woke, (std::vector<int>{0}));
    q.restart_all();
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(woke, (std::vector<int>{0, 1, 2, 3}));
    EXPECT_TRUE(q.empty());
    EXPECT_FALSE(q.next());
}

TEST(CoQueue, WaitWithMutexLosesNoWakeup) {
    auto ctx = make_context("t");
    CoMutex m;
    CoQueue q;
    int items = 0, consumed = 0;
    spawn(*ctx, [](CoMutex& m, CoQueue& q, int& items, int& consumed) -> Task<void> {
        co_await m.lock();
        while (consumed < 3) {
            while (items == 0) co_await q.wait(m);  // releases m while waiting
            items--;
            consumed++;
        }
        m.unlock();
    }(m, q, items, consumed));
    spawn(*ctx, [](CoMutex& m, CoQueue& q, int& items) -> Task<void> {
        for (int i = 0; i < 3; i++) {
            co_await m.lock();
            items++;
            q.next();
            m.unlock();
            co_await yield_now();
        }
    }(m, q, items));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(consumed, 3);
    EXPECT_FALSE(m.locked());
}

TEST(CoRwLock, ReadersShareWritersExclude) {
    auto ctx = make_context("t");
    CoRwLock l;
    unsigned max_readers = 0;
    bool writer_saw_readers = false;
    for (int i = 0; i < 3; i++)
        spawn(*ctx, [](CoRwLock& l, unsigned& max_readers) -> Task<void> {
            co_await l.rdlock();
            max_readers = std::max(max_readers, l.readers());
            co_await yield_now();
            l.unlock();
        }(l, max_readers));
    spawn(*ctx, [](CoRwLock& l, bool& saw) -> Task<void> {
        co_await l.wrlock();
        saw = l.readers() > 0;
        l.unlock();
    }(l, writer_saw_readers));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(max_readers, 3u);
    EXPECT_FALSE(writer_saw_readers);
    EXPECT_FALSE(l.write_locked());
    EXPECT_EQ(l.readers(), 0u);
}

TEST(CoRwLock, WaitingWriterHoldsBackLaterReaders) {
    auto ctx = make_context("t");
    CoRwLock l;
    std::vector<std::string> trace;
    auto reader = [](CoRwLock& l, std::vector<std::string>& trace, std::string name) -> Task<void> {
        co_await l.rdlock();
        trace.push_back(name);
        co_await yield_now();
        l.unlock();
    };
    spawn(*ctx, reader(l, trace, "r1"));
    spawn(*ctx, [](CoRwLock& l, std::vector<std::string>& trace) -> Task<void> {
        co_await l.wrlock();
        trace.push_back("w");
        l.downgrade();  // now a reader: r2 may join
        trace.push_back("w-downgraded");
        co_await yield_now();
        l.unlock();
    }(l, trace));
    spawn(*ctx, reader(l, trace, "r2"));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(trace, (std::vector<std::string>{"r1", "w", "w-downgraded", "r2"}));
}

TEST(CoQueue, WaitWhileDoesNotSuspendWhenThePredicateIsFalse) {
    auto ctx = make_context("t");
    CoQueue q;
    std::atomic<bool> gate_closed{true};
    int passed = 0;
    auto waiter = [](CoQueue& q, std::atomic<bool>& closed, int& passed) -> Task<void> {
        while (closed.load()) co_await q.wait_while([&] { return closed.load(); });
        passed++;
    };
    spawn(*ctx, waiter(q, gate_closed, passed));
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(passed, 0);
    EXPECT_FALSE(q.empty());
    gate_closed = false;
    q.restart_all();
    spawn(*ctx, waiter(q, gate_closed, passed));  // open gate: passes without waiting
    test::run_until_idle({ctx.get()});
    EXPECT_EQ(passed, 2);
}

}  // namespace
}  // namespace ioplane
