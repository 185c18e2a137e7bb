#include "ioplane/core/iothread.h"

#include <pthread.h>
#include <unistd.h>

#include <future>

namespace ioplane {

Result<std::unique_ptr<IOThread>> IOThread::start(Options options) {
    auto ctx = AioContext::create(options.id, options.poll);
    if (!ctx) return std::unexpected(ctx.error());
    std::unique_ptr<IOThread> t(new IOThread(std::move(options.id), std::move(*ctx), options.poll));
    std::promise<void> attached;
    std::future<void> ready = attached.get_future();
    t->thread_ = std::thread([self = t.get(), &attached] {
        pthread_setname_np(pthread_self(), self->id_.substr(0, 15).c_str());
        self->ctx_->attach_to_current_thread();
        self->tid_ = ::gettid();
        attached.set_value();
        self->run();
    });
    ready.wait();  // so that in_home_thread() is right for every caller from now on
    return t;
}

IOThread::~IOThread() {
    stop();
    ctx_->attach_to_current_thread();  // destroyed by whoever destroys us
}

void IOThread::run() {
    while (!stopping_.load(std::memory_order_acquire)) ctx_->poll(true);
    // Run what is queued (and what that queues), and let thread-pool work
    // finish and complete here, before leaving.
    ctx_->drain();
    // The context is destroyed by the owner thread after join; it becomes
    // that thread's then.
}

void IOThread::stop() {
    if (!thread_.joinable()) return;
    IOPLANE_ASSERT(!ctx_->in_home_thread());
    ctx_->schedule_oneshot([this] { stopping_.store(true, std::memory_order_release); });
    thread_.join();
    ctx_->attach_to_current_thread();  // the owner now destroys it
}

}  // namespace ioplane
