// ioplane-storage-daemon: the daemon's entry point. For now it brings up the
// runtime (main loop + one IOThread), reports what it does, and shuts down
// cleanly on SIGINT/SIGTERM. Exports come with the block layer.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "ioplane/core/iothread.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "signal_watcher.h"

using namespace ioplane;

namespace {

constexpr const char* kUsage =
    "Usage: ioplane-storage-daemon [options]\n"
    "\n"
    "Runs the ioplane storage daemon until SIGINT or SIGTERM.\n"
    "\n"
    "  -h, --help      show this help and exit\n"
    "  -V, --version   show the version and exit\n";

int run_daemon() {
    daemon::block_termination_signals();  // before any thread exists

    auto main_loop = MainLoop::create();
    if (!main_loop) {
        LOG_ERROR("main loop: %s", main_loop.error().describe().c_str());
        return 1;
    }
    auto watcher = daemon::SignalWatcher::create((*main_loop)->ctx(), [&](int signo) {
        LOG_INFO("received %s, shutting down", strsignal(signo));
        (*main_loop)->request_stop();
    });
    if (!watcher) {
        LOG_ERROR("signals: %s", watcher.error().describe().c_str());
        return 1;
    }
    auto iothread = IOThread::start({.id = "io0"});
    if (!iothread) {
        LOG_ERROR("iothread 'io0': %s", iothread.error().describe().c_str());
        return 1;
    }
    LOG_INFO("iothread '%s' running (poll-max-ns=%lld)", (*iothread)->id().c_str(),
             (long long)(*iothread)->ctx().poll_params().max_ns);
    LOG_INFO("main loop running; stop with SIGINT (Ctrl-C) or SIGTERM");

    (*main_loop)->run();

    (*iothread)->stop();
    LOG_INFO("iothread '%s' stopped", (*iothread)->id().c_str());
    iothread->reset();
    watcher->reset();
    LOG_INFO("exiting");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    pthread_setname_np(pthread_self(), "main");
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (arg == "-V" || arg == "--version") {
            std::printf("ioplane-storage-daemon %s\n", IOPLANE_VERSION);
            return 0;
        }
        std::fprintf(stderr, "ioplane-storage-daemon: unknown option '%s' (try --help)\n", arg.c_str());
        return 1;
    }
    return run_daemon();
}
