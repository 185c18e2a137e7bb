// ioplane-storage-daemon: qemu-storage-daemon's command line, ioplane's
// runtime. Parses the options, builds the configuration in the main loop,
// serves until SIGINT/SIGTERM, then shuts down cleanly (exit 0).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "daemon/options.h"
#include "daemon/qmp_commands.h"
#include "daemon/storage_daemon.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "signal_watcher.h"

using namespace ioplane;

namespace {

constexpr const char* kProgram = "ioplane-storage-daemon";

// --pidfile, as qemu-storage-daemon writes it (QEMU's qemu_write_pidfile):
// the file is created if needed but not truncated before it is locked
// (F_SETLK, write lock), so a second daemon given the same path fails
// without touching the first one's pid; the lock holds while the daemon
// runs (the fd stays open). Then the pid and a newline. The file is removed
// at exit, by its real path (resolved now, as QEMU does).
struct Pidfile {
    int fd = -1;
    std::string real_path;
};

Result<Pidfile> write_pidfile(const std::string& path) {
    int fd = -1;
    for (;;) {
        fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, S_IRUSR | S_IWUSR);
        if (fd < 0) {
            const int err = errno;
            return fail(err, "cannot create PID file: Could not create '" + path + "': " + std::strerror(err));
        }
        struct stat opened, now;
        if (::fstat(fd, &opened) != 0) {
            const int err = errno;
            ::close(fd);
            return fail(err, std::string("cannot create PID file: Cannot stat file: ") + std::strerror(err));
        }
        struct flock lock{};
        lock.l_type = F_WRLCK;
        lock.l_whence = SEEK_SET;
        if (::fcntl(fd, F_SETLK, &lock) != 0) {
            const int err = errno;
            ::close(fd);
            return fail(err, std::string("cannot create PID file: Cannot lock pid file: ") + std::strerror(err));
        }
        // The path we locked must still be the file there: another daemon
        // may have removed or replaced it meanwhile. If not, try again.
        if (::stat(path.c_str(), &now) == 0 && now.st_dev == opened.st_dev && now.st_ino == opened.st_ino) break;
        ::close(fd);
    }
    const std::string text = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::write(fd, text.data(), text.size()) != ssize_t(text.size())) {
        const int err = errno;
        ::unlink(path.c_str());
        ::close(fd);
        return fail(err, std::string("cannot create PID file: Failed to write pid file: ") + std::strerror(err));
    }
    char* real = ::realpath(path.c_str(), nullptr);
    if (real == nullptr) {
        const int err = errno;
        ::unlink(path.c_str());
        ::close(fd);
        return fail(err, "cannot resolve PID file path: " + path + ": " + std::strerror(err));
    }
    Pidfile p{fd, real};
    std::free(real);
    return p;
}

void remove_pidfile(const Pidfile& p) {
    ::unlink(p.real_path.c_str());
    ::close(p.fd);
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

// --daemonize, as QEMU does it: the parent waits on a pipe and exits 0 only
// once the daemon (a grandchild, in its own session) reports that start-up
// is complete, with its pidfile written; if start-up fails the daemon exits
// 1, its error already on the standard error it shares with the parent,
// and the parent, reading no report, exits 1 too. Returns the pipe's write
// end, in the daemon. Before any thread exists (fork keeps only the caller).
int daemonize() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        std::perror("--daemonize: pipe");
        std::exit(1);
    }
    const pid_t child = ::fork();
    if (child < 0) {
        std::perror("--daemonize: fork");
        std::exit(1);
    }
    if (child > 0) {
        ::close(fds[1]);
        uint8_t status = 1;
        ssize_t n;
        do n = ::read(fds[0], &status, 1); while (n < 0 && errno == EINTR);
        std::exit(n == 1 && status == 0 ? 0 : 1);
    }
    ::close(fds[0]);
    ::setsid();  // no controlling terminal: its hang-up and job control are not ours
    const pid_t daemon = ::fork();
    if (daemon < 0) std::_Exit(1);
    if (daemon > 0) std::_Exit(0);  // the session leader goes; the parent still waits on the pipe
    ::umask(027);
    return fds[1];
}

// Start-up is complete: tell the waiting parent, and give up the terminal's
// standard streams (the daemon logs nothing once detached).
void report_ready(int pipe_fd) {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        for (int fd = 0; fd <= 2; fd++) ::dup2(null, fd);
        ::close(null);
    }
    const uint8_t ok = 0;
    (void)!::write(pipe_fd, &ok, 1);
    ::close(pipe_fd);
}

int run(const daemon::DaemonConfig& config) {
    const int ready_pipe = config.daemonize ? daemonize() : -1;
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
        storage.request_shutdown();
    });
    if (!watcher) {
        std::fprintf(stderr, "%s: %s\n", kProgram, watcher.error().describe().c_str());
        return 1;
    }
    Result<void> started;
    {
        BqlGuard bql;  // configuration runs under the big lock, like monitor commands
        daemon::register_qmp_commands(storage);
        daemon::register_job_commands(storage);
        started = storage.start(config);
    }
    if (!started) {
        std::fprintf(stderr, "%s: %s\n", kProgram, started.error().message.c_str());
        BqlGuard bql;
        storage.shutdown();
        return 1;
    }
    // As qemu-storage-daemon: after the exports and monitors exist, before
    // the main loop serves anyone.
    std::optional<Pidfile> pidfile;
    if (config.pidfile) {
        auto p = write_pidfile(*config.pidfile);
        if (!p) {
            std::fprintf(stderr, "%s: %s\n", kProgram, p.error().message.c_str());
            BqlGuard bql;
            storage.shutdown();
            return 1;
        }
        pidfile = std::move(*p);
    }
    LOG_INFO("ready; stop with SIGINT (Ctrl-C) or SIGTERM");
    if (ready_pipe >= 0) report_ready(ready_pipe);
    (*main_loop)->run();
    bool flushed;
    {
        BqlGuard bql;
        flushed = storage.shutdown();
    }
    if (pidfile) remove_pidfile(*pidfile);
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
    return run(*config);
}
