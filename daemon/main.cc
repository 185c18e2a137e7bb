// ioplane-storage-daemon: qemu-storage-daemon's command line, ioplane's
// runtime. Parses the options, builds the configuration in the main loop,
// serves until SIGINT/SIGTERM, then shuts down cleanly (exit 0).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "daemon/options.h"
#include "daemon/qmp_commands.h"
#include "daemon/storage_daemon.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "signal_watcher.h"

using namespace ioplane;

namespace {

constexpr const char* kProgram = "ioplane-storage-daemon";

Result<void> write_pidfile(const std::string& path) {
    std::ofstream f(path, std::ios::trunc);
    f << getpid() << "\n";
    f.close();
    if (!f) return fail(EIO, "--pidfile: cannot write '" + path + "'");
    return {};
}

// Every client connection, 9P fid and open image is a descriptor: take all
// the hard limit allows (systemd and shells often leave the soft one at 1024).
void raise_descriptor_limit() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
    const rlim_t was = r.rlim_cur;
    r.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &r) == 0)
        LOG_INFO("open files limit raised from %llu to %llu", (unsigned long long)was, (unsigned long long)r.rlim_max);
}

int run(const daemon::DaemonConfig& config) {
    daemon::block_termination_signals();  // before any thread exists
    ::signal(SIGPIPE, SIG_IGN);              // a vanished client is EPIPE, not death
    raise_descriptor_limit();

    auto main_loop = MainLoop::create();
    if (!main_loop) {
        std::fprintf(stderr, "%s: %s\n", kProgram, main_loop.error().describe().c_str());
        return 1;
    }
    daemon::StorageDaemon storage(**main_loop);
    auto watcher = daemon::SignalWatcher::create((*main_loop)->ctx(), [&](int signo) {
        LOG_INFO("received %s, shutting down", strsignal(signo));
        storage.request_shutdown("host-signal");
    });
    if (!watcher) {
        std::fprintf(stderr, "%s: %s\n", kProgram, watcher.error().describe().c_str());
        return 1;
    }
    Result<void> started;
    {
        BqlGuard bql;  // configuration runs under the big lock, like monitor commands
        daemon::register_qmp_commands(storage);
        started = storage.start(config);
    }
    if (!started) {
        std::fprintf(stderr, "%s: %s\n", kProgram, started.error().message.c_str());
        BqlGuard bql;
        storage.shutdown();
        return 1;
    }
    if (config.pidfile) {
        if (auto r = write_pidfile(*config.pidfile); !r) {
            std::fprintf(stderr, "%s: %s\n", kProgram, r.error().message.c_str());
            return 1;
        }
    }
    LOG_INFO("ready; stop with SIGINT (Ctrl-C) or SIGTERM");
    (*main_loop)->run();
    bool flushed;
    {
        BqlGuard bql;
        flushed = storage.shutdown();
    }
    if (config.pidfile) ::unlink(config.pidfile->c_str());
    LOG_INFO("exiting%s", flushed ? "" : " (a flush failed: exit status 1)");
    return flushed ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    pthread_setname_np(pthread_self(), "main");
    auto config = daemon::parse_command_line(argc, argv);
    if (!config) {
        std::fprintf(stderr, "%s: %s\n", kProgram, config.error().message.c_str());
        return 1;
    }
    for (const std::string& w : config->warnings) std::fprintf(stderr, "%s: warning: %s\n", kProgram, w.c_str());
    if (config->help) {
        std::fputs(daemon::usage_text(), stdout);
        return 0;
    }
    if (config->version) {
        std::printf("%s %s\n", kProgram, IOPLANE_VERSION);
        return 0;
    }
    if (config->option_help) {
        std::fputs(config->option_help->c_str(), stdout);
        return 0;
    }
    if (config->daemonize) {
        std::fprintf(stderr, "%s: --daemonize is not supported yet (run it under a supervisor)\n", kProgram);
        return 1;
    }
    return run(*config);
}
