#include "signal_watcher.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace ioplane::daemon {
namespace {
sigset_t termination_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}
}  // namespace

void block_termination_signals() {
    sigset_t set = termination_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Result<std::unique_ptr<SignalWatcher>> SignalWatcher::create(AioContext& ctx, std::function<void(int)> on_signal) {
    sigset_t set = termination_signals();
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return fail_errno("signalfd");
    std::unique_ptr<SignalWatcher> w(new SignalWatcher(ctx, fd));
    FdHandlerSpec spec;
    spec.on_read = [fd, on_signal = std::move(on_signal)] {
        signalfd_siginfo info;
        while (::read(fd, &info, sizeof info) == sizeof info) on_signal(int(info.ssi_signo));
    };
    if (auto r = ctx.set_fd_handler(fd, std::move(spec)); !r) return std::unexpected(r.error());
    return w;
}

SignalWatcher::~SignalWatcher() {
    ctx_.remove_fd_handler(fd_);
    ::close(fd_);
}

}  // namespace ioplane::daemon
