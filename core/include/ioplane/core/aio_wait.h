// aio_wait_while (QEMU's AIO_WAIT_WHILE): wait for a condition that another
// context will change, while keeping the caller's own loop running.
//
// Pairing: the thread that changes the condition calls aio_wait_kick()
// afterwards. The waiter is counted (an acq_rel increment) before it evaluates
// the condition; aio_wait_kick() reads the count with an RMW after the change.
// So either the waiter sees the change, or the kicker sees the waiter and
// wakes the main loop with a BH.
#pragma once

#include <atomic>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/main_loop.h"

namespace ioplane {

namespace detail {
extern std::atomic<unsigned> g_aio_waiters;
}

// Any thread. Wakes the main loop if it is in aio_wait_while().
void aio_wait_kick();

// Main thread. Runs `fn` in ctx's home thread and waits for it, running the
// main loop meanwhile (for the rare configuration step that must touch an
// object from its own context, e.g. moving an fd handler).
void run_in_context_sync(AioContext& ctx, Callback fn);

// Main thread, or the home thread of `ctx`. Runs loop iterations until
// `cond()` is false: ctx's own loop if called in its home thread, otherwise
// the main loop's, relying on aio_wait_kick() from the thread that changes
// the condition.
//
// A kick wakes only the main loop: a waiter in an IOThread's own context must
// have its condition changed by work that runs in (or is scheduled into) that
// context.
template <class Cond>
void aio_wait_while(AioContext& ctx, Cond&& cond) {
    AioContext* loop = &ctx;
    if (!ctx.in_home_thread()) {
        assert_in_main_thread();
        loop = main_context();
    }
    detail::g_aio_waiters.fetch_add(1, std::memory_order_seq_cst);  // pairs with aio_wait_kick()
    while (cond()) loop->poll(true);
    detail::g_aio_waiters.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ioplane
