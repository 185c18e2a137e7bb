// `co_await run_in_worker(fn)`: runs the blocking call `fn` on a worker of the
// current context's thread pool and resumes the coroutine in that same context
// with fn's result (or its exception).
//
// Why it cannot re-enter a running coroutine (the "Co-routine re-entered
// recursively" race of QEMU's VirtFS series): the work is submitted inside
// await_suspend, when the coroutine is already suspended, and the worker does
// not resume it; it schedules a BH in the coroutine's context, which runs only
// after the current callback has returned to the loop.
//
// GCC 12 (Debian 12's compiler) destroys a closure temporary in a co_await
// expression twice (the coroutine-frame copy of aggregate temporaries), so
// a lambda that captures a shared_ptr or a std::string by value corrupts
// the heap. `fn` must therefore be trivially destructible: capture what the
// work needs by reference (the coroutine frame outlives the call) or as
// plain values. The test RunInWorker.CapturesAndResultsAreOwnedOnce guards
// the results side.
//
// `co_await run_here_or_in_worker(here, fn)` is the same, except that when
// `here` is true fn runs at once in the coroutine's own thread and nothing
// suspends: for callers that know this call cannot wait (a worker hop costs
// two thread wake-ups), choosing per call.
//
// Thread contract: coroutine running in an AioContext.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/thread_pool.h"

namespace ioplane {

template <class F>
class RunInWorker final : public WorkItem {
    static_assert(std::is_trivially_destructible_v<F>,
                  "run_in_worker: capture by reference or plain values (GCC 12 destroys closure temporaries in "
                  "co_await expressions twice); see run_in_worker.h");
    using R = std::invoke_result_t<F&>;
    using Stored = std::conditional_t<std::is_void_v<R>, bool, R>;

public:
    RunInWorker(F fn, bool here) : fn_(std::move(fn)), pool_(current_context_or_die().thread_pool()), here_(here) {}

    bool await_ready() {
        if (here_) work();
        return here_;
    }
    void await_suspend(std::coroutine_handle<> h) {
        h_ = h;
        pool_.submit(*this);
    }
    R await_resume() {
        // Moved out, so that this object holds nothing when it is destroyed.
        if (exception_) std::rethrow_exception(std::exchange(exception_, nullptr));
        if constexpr (!std::is_void_v<R>) return std::move(*result_);
    }

private:
    void work() override {
        try {
            if constexpr (std::is_void_v<R>) {
                fn_();
                result_.emplace(true);
            } else {
                result_.emplace(fn_());
            }
        } catch (...) {
            exception_ = std::current_exception();
        }
    }
    void complete(bool) override { h_.resume(); }  // never cancelled: nobody holds it

    F fn_;
    ThreadPool& pool_;
    const bool here_;
    std::coroutine_handle<> h_;
    std::optional<Stored> result_;
    std::exception_ptr exception_;
};

template <class F>
RunInWorker<F> run_in_worker(F fn) {
    return RunInWorker<F>(std::move(fn), false);
}

template <class F>
RunInWorker<F> run_here_or_in_worker(bool here, F fn) {
    return RunInWorker<F>(std::move(fn), here);
}

}  // namespace ioplane
