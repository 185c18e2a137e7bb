#include "ioplane/core/aio_wait.h"

namespace ioplane {

namespace detail {
std::atomic<unsigned> g_aio_waiters{0};
}

void run_in_context_sync(AioContext& ctx, Callback fn) {
    if (ctx.in_home_thread()) {
        fn();
        return;
    }
    std::atomic<bool> done{false};
    ctx.schedule_oneshot([&fn, &done] {
        fn();
        done.store(true, std::memory_order_release);
        aio_wait_kick();
    });
    aio_wait_while(ctx, [&done] { return !done.load(std::memory_order_acquire); });
}

void aio_wait_kick() {
    // Pairs with the increment in aio_wait_while(). Both are RMWs of the same
    // variable: if this one comes first, the waiter's increment reads from it
    // and so sees the caller's change of the condition; if the waiter's comes
    // first, this one reads a count > 0 and wakes it. (An RMW rather than a
    // fence, which ThreadSanitizer cannot model.)
    if (detail::g_aio_waiters.fetch_add(0, std::memory_order_seq_cst) > 0) {
        if (AioContext* main = main_context()) main->schedule_oneshot([] {});
    }
}

}  // namespace ioplane
