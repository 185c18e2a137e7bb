#include "ioplane/core/coroutine.h"

#include <cstdlib>

#include "ioplane/core/log.h"

namespace ioplane {
namespace {

// The frame of a spawned task's driver. It owns itself: it frees its frame
// when the task finishes (final_suspend never suspends).
struct Detached {
    struct promise_type;
    using Handle = std::coroutine_handle<promise_type>;

    // Starts the driver in its context; if the context goes away first,
    // frees the unstarted frame.
    class StartNode final : public BhNode {
    public:
        Handle h;

    private:
        void run() override { h.resume(); }  // may free the frame and this node
        void discard() override { h.destroy(); }
    };

    struct promise_type {
        static void* operator new(std::size_t size) { return detail::alloc_frame(size); }
        static void operator delete(void* p, std::size_t size) noexcept { detail::free_frame(p, size); }
        StartNode start;
        Detached get_return_object() noexcept { return {Handle::from_promise(*this)}; }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept {
            try {
                throw;
            } catch (const std::exception& e) {
                LOG_ERROR("spawned coroutine failed: %s", e.what());
            } catch (...) {
                LOG_ERROR("spawned coroutine failed with an unknown exception");
            }
            std::abort();
        }
    };
    Handle h;
};

Detached drive(Task<void> task) { co_await std::move(task); }

}  // namespace

void spawn(AioContext& ctx, Task<void> task) {
    Detached d = drive(std::move(task));
    d.h.promise().start.h = d.h;
    ctx.schedule_node(d.h.promise().start);
}

void spawn_now(Task<void> task) {
    (void)current_context_or_die();
    drive(std::move(task)).h.resume();  // the driver frees itself when the task ends
}

}  // namespace ioplane
