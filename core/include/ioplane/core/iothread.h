// IOThread: a named thread that runs its own AioContext until stopped (QEMU's
// -object iothread). The context is usable (BHs can be scheduled into it) as
// soon as start() returns.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "ioplane/core/aio_context.h"

namespace ioplane {

class IOThread {
public:
    struct Options {
        std::string id;
        PollParams poll{.max_ns = 32768};  // QEMU's default poll-max-ns for IOThreads
    };

    // Any thread.
    static Result<std::unique_ptr<IOThread>> start(Options options);
    // Not from the IOThread itself. Stops it if running, then destroys its
    // context: every thread that may still schedule into that context (another
    // IOThread hopping coroutines here) must have been stopped first.
    ~IOThread();
    IOThread(const IOThread&) = delete;
    IOThread& operator=(const IOThread&) = delete;

    // Any thread.
    const std::string& id() const { return id_; }
    AioContext& ctx() { return *ctx_; }
    // Any thread: the kernel's id of the thread (query-iothreads' thread-id).
    pid_t thread_id() const { return tid_; }
    const PollParams& poll_params() const { return poll_; }

    // Not from the IOThread itself. The loop finishes its iteration, runs the
    // BHs that are queued (and what they queue) and waits for its thread-pool
    // work to complete, then the thread exits and is joined. Coroutines still
    // waiting for anything else stay suspended: their owners stop them first.
    // Idempotent.
    void stop();

private:
    IOThread(std::string id, std::unique_ptr<AioContext> ctx, PollParams poll)
        : id_(std::move(id)), ctx_(std::move(ctx)), poll_(poll) {}
    void run();

    const std::string id_;
    std::unique_ptr<AioContext> ctx_;
    const PollParams poll_;
    pid_t tid_ = 0;  // set before start() returns
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace ioplane
