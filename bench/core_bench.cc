// Core runtime benchmarks, each beside a physical reference measured in the
// same run (see docs/BENCHMARKS.md; bench/core_report.py prints the ratios).
#include <benchmark/benchmark.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <coroutine>
#include <thread>

#include "ioplane/core/coroutine.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/run_in_worker.h"
#include "ioplane/core/thread_pool.h"

using namespace ioplane;

namespace {

std::unique_ptr<AioContext> make_ctx(const char* name, PollParams poll = {}) { return std::move(*AioContext::create(name, poll)); }

// ---- references ----

__attribute__((noinline)) int plain_call(int x) {
    benchmark::DoNotOptimize(x);
    return x + 1;
}

void BM_Ref_PlainFunctionCall(benchmark::State& state) {
    int x = 0;
    for (auto _ : state) x = plain_call(x);
    benchmark::DoNotOptimize(x);
}
BENCHMARK(BM_Ref_PlainFunctionCall);

void BM_Ref_MallocFree64(benchmark::State& state) {
    for (auto _ : state) {
        void* p = malloc(64);
        benchmark::DoNotOptimize(p);
        free(p);
    }
}
BENCHMARK(BM_Ref_MallocFree64);

// Two threads bouncing a token through two eventfds with blocking reads: the
// cheapest kernel-mediated cross-thread round trip.
void BM_Ref_EventfdPingPong(benchmark::State& state) {
    int to_peer = eventfd(0, EFD_CLOEXEC), to_me = eventfd(0, EFD_CLOEXEC);
    std::atomic<bool> stop{false};
    std::thread peer([&] {
        uint64_t v;
        while (read(to_peer, &v, sizeof v) == sizeof v && !stop.load(std::memory_order_relaxed)) {
            uint64_t one = 1;
            (void)!write(to_me, &one, sizeof one);
        }
    });
    uint64_t one = 1, v;
    for (auto _ : state) {
        (void)!write(to_peer, &one, sizeof one);
        (void)!read(to_me, &v, sizeof v);
    }
    stop = true;
    (void)!write(to_peer, &one, sizeof one);
    peer.join();
    close(to_peer);
    close(to_me);
}
BENCHMARK(BM_Ref_EventfdPingPong)->UseRealTime();

// ---- bottom halves ----

void BM_BhScheduleDispatch(benchmark::State& state) {
    auto ctx = make_ctx("bench");
    int runs = 0;
    BhPtr bh = ctx->new_bh([&] { runs++; });
    for (auto _ : state) {
        bh->schedule();
        ctx->poll(false);
    }
    bh.reset();
    if (runs != int(state.iterations())) state.SkipWithError("BH did not run every time");
}
BENCHMARK(BM_BhScheduleDispatch);

void BM_OneshotScheduleDispatch(benchmark::State& state) {
    auto ctx = make_ctx("bench");
    int runs = 0;
    for (auto _ : state) {
        ctx->schedule_oneshot([&] { runs++; });
        ctx->poll(false);
    }
    benchmark::DoNotOptimize(runs);
}
BENCHMARK(BM_OneshotScheduleDispatch);

// Context A (this thread) -> IOThread B -> back to A, as one-shot BHs.
// Arg: poll-max-ns of both loops (0: both sleep in the kernel every time).
void BM_CrossThreadRoundTrip(benchmark::State& state) {
    const PollParams poll{.max_ns = state.range(0)};
    auto a = make_ctx("a", poll);
    auto b = IOThread::start({.id = "b", .poll = poll});
    AioContext& bctx = (*b)->ctx();
    bool done = false;
    for (auto _ : state) {
        done = false;
        bctx.schedule_oneshot([&] { a->schedule_oneshot([&] { done = true; }); });
        while (!done) a->poll(true);
    }
}
BENCHMARK(BM_CrossThreadRoundTrip)->Arg(0)->Arg(32768)->UseRealTime();

// ---- coroutines ----

Task<int> ready_task() { co_return 1; }

void BM_CoroutineCreateRunDestroy(benchmark::State& state) {
    for (auto _ : state) {
        Task<int> t = ready_task();
        auto h = t.release();
        h.resume();  // runs to completion; continuation is a no-op
        benchmark::DoNotOptimize(h.promise().value);
        h.destroy();
    }
}
BENCHMARK(BM_CoroutineCreateRunDestroy);

void BM_AwaitReadyTask(benchmark::State& state) {
    auto ctx = make_ctx("bench");
    block_on(*ctx, [](benchmark::State& state) -> Task<void> {
        int sum = 0;
        for (auto _ : state) sum += co_await ready_task();
        benchmark::DoNotOptimize(sum);
    }(state));
}
BENCHMARK(BM_AwaitReadyTask);

struct Generator {
    struct promise_type {
        Generator get_return_object() { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

Generator suspend_forever(int& counter) {
    for (;;) {
        counter++;
        co_await std::suspend_always{};
    }
}

// One resume() plus the coroutine's suspension back to the caller.
void BM_CoroutineSuspendResumePair(benchmark::State& state) {
    int counter = 0;
    Generator g = suspend_forever(counter);
    for (auto _ : state) g.h.resume();
    benchmark::DoNotOptimize(counter);
    g.h.destroy();
}
BENCHMARK(BM_CoroutineSuspendResumePair);

// ---- workers ----

// Arg: poll-max-ns of the coroutine's context.
void BM_RunInWorkerRoundTrip(benchmark::State& state) {
    auto ctx = make_ctx("bench", {.max_ns = state.range(0)});
    block_on(*ctx, [](benchmark::State& state) -> Task<void> {
        int sum = 0;
        for (auto _ : state) sum += co_await run_in_worker([] { return 1; });
        benchmark::DoNotOptimize(sum);
    }(state));
}
BENCHMARK(BM_RunInWorkerRoundTrip)->Arg(0)->Arg(32768)->UseRealTime();

void BM_ThreadPoolSubmitComplete(benchmark::State& state) {
    auto ctx = make_ctx("bench", {.max_ns = state.range(0)});
    ThreadPool& pool = ctx->thread_pool();
    bool done = false;
    for (auto _ : state) {
        done = false;
        pool.submit([] { return 0; }, [&](int) { done = true; });
        while (!done) ctx->poll(true);
    }
}
BENCHMARK(BM_ThreadPoolSubmitComplete)->Arg(0)->Arg(32768)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
