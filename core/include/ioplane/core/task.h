// Task<T>: a lazy C++20 coroutine that owns its frame. It starts when awaited
// and resumes its awaiter by symmetric transfer when it finishes, so chains of
// tasks use no stack. A Task dropped before it was awaited frees its frame.
// Exceptions thrown in the body propagate to the awaiter; results that can fail
// are better returned as Result<T> (std::expected), which needs no support here.
//
// Thread contract: a Task runs in whatever context resumes it; awaiting and
// destroying happen in the context that owns it.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "ioplane/core/detail/frame_pool.h"

// Symmetric transfer needs the compiler to turn "resume the next coroutine"
// into a tail call. GCC does at -O2, but not with -fsanitize=address or
// thread: there every task that completes without suspending (a cached
// lookup, a read from tmpfs) leaves its frames on the stack until something
// really suspends, and a long loop of such awaits overflows it. In those
// builds a task is started by a call, and one that completes during that
// call returns to its awaiter by returning from it.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define IOPLANE_TASK_INLINE_COMPLETION 1
#endif

namespace ioplane {

template <class T = void>
class Task;

namespace detail {

#ifdef IOPLANE_TASK_INLINE_COMPLETION
// The task the current thread is starting inside its awaiter's
// await_suspend (null once it has completed there).
inline thread_local void* g_task_starting = nullptr;
#endif

struct PromiseBase {
    // Frames come from the per-thread frame cache (detail/frame_pool.h).
    static void* operator new(std::size_t size) { return alloc_frame(size); }
    static void operator delete(void* p, std::size_t size) noexcept { free_frame(p, size); }

    std::coroutine_handle<> continuation = std::noop_coroutine();
    std::exception_ptr exception;

    std::suspend_always initial_suspend() noexcept { return {}; }
    struct FinalAwaiter {
        bool await_ready() noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
#ifdef IOPLANE_TASK_INLINE_COMPLETION
            if (g_task_starting == h.address()) {
                g_task_starting = nullptr;  // completed inside the awaiter's call: it continues on return
                return std::noop_coroutine();
            }
#endif
            return h.promise().continuation;  // symmetric transfer to the awaiter
        }
        void await_resume() noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { exception = std::current_exception(); }
    void rethrow_if_failed() {
        if (exception) std::rethrow_exception(exception);
    }
};

template <class T>
struct Promise : PromiseBase {
    std::optional<T> value;
    Task<T> get_return_object() noexcept;
    template <class U = T>
    void return_value(U&& v) {
        value.emplace(std::forward<U>(v));
    }
    T take() {
        rethrow_if_failed();
        return std::move(*value);
    }
};

template <>
struct Promise<void> : PromiseBase {
    Task<void> get_return_object() noexcept;
    void return_void() noexcept {}
    void take() { rethrow_if_failed(); }
};

}  // namespace detail

template <class T>
class [[nodiscard]] Task {
public:
    using promise_type = detail::Promise<T>;
    using Handle = std::coroutine_handle<promise_type>;

    Task() = default;
    explicit Task(Handle h) noexcept : h_(h) {}
    Task(Task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
    Task& operator=(Task&& other) noexcept {
        if (this != &other) {
            if (h_) h_.destroy();
            h_ = std::exchange(other.h_, {});
        }
        return *this;
    }
    ~Task() {
        if (h_) h_.destroy();
    }

    bool valid() const { return bool(h_); }
    bool done() const { return h_ && h_.done(); }

    // `co_await std::move(task)` starts the task and yields its result.
    auto operator co_await() && noexcept {
        struct Awaiter {
            Handle h;
            bool await_ready() noexcept { return false; }
#ifdef IOPLANE_TASK_INLINE_COMPLETION
            bool await_suspend(std::coroutine_handle<> awaiting) noexcept {
                h.promise().continuation = awaiting;
                void* outer = std::exchange(detail::g_task_starting, h.address());
                h.resume();
                const bool completed = detail::g_task_starting == nullptr;
                detail::g_task_starting = outer;
                return !completed;  // false: the awaiter goes on at once
            }
#else
            std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
                h.promise().continuation = awaiting;
                return h;
            }
#endif
            T await_resume() { return h.promise().take(); }
        };
        return Awaiter{h_};
    }

    // Gives up ownership of the frame (for spawn()).
    Handle release() noexcept { return std::exchange(h_, {}); }

private:
    Handle h_;
};

namespace detail {
template <class T>
Task<T> Promise<T>::get_return_object() noexcept {
    return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
    return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace ioplane
