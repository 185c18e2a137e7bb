#include "ioplane/core/main_loop.h"

#include <mutex>

#include "ioplane/core/aio_wait.h"

namespace ioplane {
namespace {

std::atomic<AioContext*> g_main_ctx{nullptr};
std::mutex g_bql;
thread_local bool t_bql_held = false;

}  // namespace

Result<std::unique_ptr<MainLoop>> MainLoop::create(PollParams poll) {
    auto ctx = AioContext::create("main", poll);
    if (!ctx) return std::unexpected(ctx.error());
    (*ctx)->attach_to_current_thread();
    AioContext* expected = nullptr;
    if (!g_main_ctx.compare_exchange_strong(expected, ctx->get(), std::memory_order_acq_rel))
        return fail(EBUSY, "a main loop exists already");
    std::unique_ptr<MainLoop> loop(new MainLoop(std::move(*ctx)));
    // The BQL, if this thread holds it, is dropped only around the outermost
    // kernel wait (poll() may also be called without it, e.g. at startup).
    MainLoop* self = loop.get();
    loop->ctx_->set_wait_hooks(
        [self] {
            self->dropped_bql_ = bql_locked();
            if (self->dropped_bql_) bql_unlock();
        },
        [self] {
            if (self->dropped_bql_) bql_lock();
        });
    return loop;
}

MainLoop::~MainLoop() {
    assert_in_context(*ctx_);
    // Run what is queued and let thread-pool work complete.
    ctx_->drain();
    g_main_ctx.store(nullptr, std::memory_order_release);
}

void MainLoop::run() {
    assert_in_context(*ctx_);
    BqlGuard bql;
    while (!stop_requested()) ctx_->poll(true);
}

void MainLoop::request_stop() {
    stop_.store(true, std::memory_order_release);
    ctx_->notify();
}

CoMutex& configuration_turn() {
    static CoMutex turn;
    return turn;
}

AioContext* main_context() { return g_main_ctx.load(std::memory_order_acquire); }

bool in_main_thread() {
    AioContext* ctx = main_context();
    return ctx != nullptr && ctx->in_home_thread();
}

void bql_lock() {
    IOPLANE_ASSERT(!t_bql_held);
    g_bql.lock();
    t_bql_held = true;
}

void bql_unlock() {
    IOPLANE_ASSERT(t_bql_held);
    t_bql_held = false;
    g_bql.unlock();
}

bool bql_locked() { return t_bql_held; }

}  // namespace ioplane
