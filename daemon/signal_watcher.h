// SIGINT/SIGTERM delivered as an fd event in the main loop (signalfd), so
// shutdown runs as ordinary main-loop code under the BQL, never in a signal
// handler.
#pragma once

#include <functional>

#include "ioplane/core/aio_context.h"

namespace ioplane::daemon {

// Main thread, before any other thread is started: blocks the signals in
// this thread (threads created later inherit the mask).
void block_termination_signals();

class SignalWatcher {
public:
    // Main thread. Calls `on_signal(signo)` in `ctx` for each SIGINT/SIGTERM.
    static Result<std::unique_ptr<SignalWatcher>> create(AioContext& ctx, std::function<void(int)> on_signal);
    ~SignalWatcher();

private:
    SignalWatcher(AioContext& ctx, int fd) : ctx_(ctx), fd_(fd) {}
    AioContext& ctx_;
    int fd_;
};

}  // namespace ioplane::daemon
