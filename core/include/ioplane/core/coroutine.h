// Running coroutines in AioContexts: spawn a Task into a context, move a
// coroutine between contexts, sleep, and block a synchronous caller on a
// Task. A coroutine belongs to the context whose loop resumed it last
// (AioContext::current()).
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/task.h"
#include "ioplane/core/thread_contract.h"
#include "ioplane/core/timer.h"

namespace ioplane {

// A BH node that resumes one suspended coroutine. Embed it in an awaiter so
// that waking a coroutine in another context allocates nothing.
// Thread contract: arm() by the suspending coroutine; wake_in() any thread,
// once per suspension.
class CoroutineWakeup final : public BhNode {
public:
    void arm(std::coroutine_handle<> h) { h_ = h; }
    void wake_in(AioContext& ctx) { ctx.schedule_node(*this); }

private:
    void run() override { h_.resume(); }  // may destroy *this
    std::coroutine_handle<> h_;
};

// Coroutine: the context it runs in; aborts with a contract error outside
// any loop (e.g. a coroutine resumed by hand).
inline AioContext& current_context_or_die() {
    AioContext* ctx = AioContext::current();
    IOPLANE_ASSERT(ctx != nullptr);
    return *ctx;
}

// Any thread. Starts `task` in ctx's next loop iteration; nobody awaits it. An
// exception escaping it is a bug: it is logged and the process aborts. If the
// context is destroyed before the task started, the task is freed unrun.
void spawn(AioContext& ctx, Task<void> task);

// Inside a loop (a callback or coroutine of the current context). Runs `task`
// at once, up to its first suspension, then returns; nobody awaits it. Saves
// spawn()'s trip through a BH when a coroutine starts many others (a
// connection's receive loop starting one coroutine per request): they all run
// in this iteration, and so do the BHs they schedule.
void spawn_now(Task<void> task);

// Coroutine, any context. `co_await schedule_on(ctx)` continues in `ctx`
// (in its next iteration, even if ctx is the current context).
class ScheduleOn {
public:
    explicit ScheduleOn(AioContext& ctx) : ctx_(ctx) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        wakeup_.arm(h);
        wakeup_.wake_in(ctx_);  // after this line the coroutine may run elsewhere
    }
    void await_resume() const noexcept {}

private:
    AioContext& ctx_;
    CoroutineWakeup wakeup_;
};
inline ScheduleOn schedule_on(AioContext& ctx) { return ScheduleOn(ctx); }

// Coroutine. Lets the other work of the current context run first.
inline ScheduleOn yield_now() { return ScheduleOn(current_context_or_die()); }

// Coroutine. Resumes in the current context after `ns` nanoseconds.
class SleepFor {
public:
    explicit SleepFor(int64_t ns) : timer_(current_context_or_die(), [this] { h_.resume(); }), ns_(ns) {}
    bool await_ready() const noexcept { return ns_ <= 0; }
    void await_suspend(std::coroutine_handle<> h) {
        h_ = h;
        timer_.arm_in(ns_);
    }
    void await_resume() const noexcept {}

private:
    Timer timer_;
    std::coroutine_handle<> h_;
    int64_t ns_;
};
inline SleepFor sleep_for(int64_t ns) { return SleepFor(ns); }

namespace detail {
template <class T>
struct Outcome {
    std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
    std::exception_ptr exception;
};
// Runs `task` and records its outcome in `home`, where block_on() polls for
// it, even if the task ended in another context.
template <class T>
Task<void> capture_outcome(Task<T> task, Outcome<T>& out, AioContext& home) {
    std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
    std::exception_ptr exception;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(task);
            value.emplace(true);
        } else {
            value.emplace(co_await std::move(task));
        }
    } catch (...) {
        exception = std::current_exception();
    }
    if (AioContext::current() != &home) co_await schedule_on(home);
    out.exception = exception;
    out.value = std::move(value);
}
}  // namespace detail

// Home context of `ctx`. Runs `task` in ctx, polling ctx until it finishes,
// and returns its result (for synchronous callers: startup, tools, tests).
template <class T>
T block_on(AioContext& ctx, Task<T> task) {
    assert_in_context(ctx);
    detail::Outcome<T> out;
    spawn(ctx, detail::capture_outcome(std::move(task), out, ctx));
    while (!out.value && !out.exception) ctx.poll(true);
    if (out.exception) std::rethrow_exception(out.exception);
    if constexpr (!std::is_void_v<T>) return std::move(*out.value);
}

}  // namespace ioplane
