// Test helpers. run_until_idle() steps several AioContexts that all live in
// the test's thread until none of them makes progress, so cross-context logic
// can be tested deterministically, without thread timing (SPDK's
// ut_multithread habit).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <thread>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/clock.h"

namespace ioplane::test {

inline std::unique_ptr<AioContext> make_context(const char* name, PollParams poll = {}) {
    auto ctx = AioContext::create(name, poll);
    if (!ctx) ADD_FAILURE() << ctx.error().describe();
    return ctx ? std::move(*ctx) : nullptr;
}

// Returns the number of rounds in which something ran.
inline size_t run_until_idle(std::initializer_list<AioContext*> contexts, size_t max_rounds = 1'000'000) {
    size_t rounds = 0;
    for (; rounds < max_rounds; rounds++) {
        bool progress = false;
        for (AioContext* ctx : contexts) progress |= ctx->poll(false);
        if (!progress) break;
    }
    return rounds;
}

// Polls `ctx` (blocking) until `done()` or the deadline; false on timeout.
inline bool poll_until(AioContext& ctx, const std::function<bool()>& done, int64_t timeout_ns = 10'000'000'000) {
    const int64_t deadline = now_ns() + timeout_ns;
    while (!done()) {
        if (now_ns() > deadline) return false;
        ctx.poll(false);
        if (!done()) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return true;
}

// Spins (yielding) until `done()` or the deadline; false on timeout.
inline bool wait_until(const std::function<bool()>& done, int64_t timeout_ns = 10'000'000'000) {
    const int64_t deadline = now_ns() + timeout_ns;
    while (!done()) {
        if (now_ns() > deadline) return false;
        std::this_thread::yield();
    }
    return true;
}

}  // namespace ioplane::test
