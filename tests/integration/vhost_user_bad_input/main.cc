// vhost_user_bad_input: a malformed vhost-user-blk front end against a
// running ioplane-storage-daemon (run.sh starts it). Every case runs on
// fresh connections, prints "ok NAME" or "FAIL NAME: why", and is followed
// by the good client (a well-behaved front end that must still get correct
// service) and checks of the daemon process: alive, and no fds kept from the
// case. Exit status 1 if anything failed.
//
//   vhost_user_bad_input --socket PATH [--pid PID] [--log FILE]
//                        [--case NAME]... [--skip NAME]... [--list] [--no-good-after]
//
// --pid enables the process checks (alive, fd count, memory), --log the
// checks of the daemon's log ("broke the ring").
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cases.h"
#include "harness.h"

using namespace vubbad;

namespace {

// A case that takes longer than this hangs somewhere (each wait inside has
// its own 5 s limit).
constexpr unsigned kCaseWatchdogSeconds = 60;
const char* g_current = "";

void on_watchdog(int) {
    char buf[256];
    const int n = std::snprintf(buf, sizeof buf, "FAIL %s: no progress in %u s (a hang)\n", g_current,
                                kCaseWatchdogSeconds);
    (void)!::write(STDOUT_FILENO, buf, size_t(n));
    ::_exit(1);
}

int usage() {
    std::fprintf(stderr,
                 "usage: vhost_user_bad_input --socket PATH [--pid PID] [--log FILE] [--case NAME]... [--skip NAME]... "
                 "[--list] [--no-good-after]\n");
    return 2;
}

// The daemon's open fds once it is idle again: sessions end asynchronously
// after the front end closes, so wait for the count to settle.
int settled_fd_count(int at_most, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int n = daemon_fd_count();
    while (n > at_most && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        n = daemon_fd_count();
    }
    return n;
}

// Runs `fn` as the step `name`; prints its result; false on failure.
bool run_step(const char* name, void (*fn)()) {
    g_current = name;
    ::alarm(kCaseWatchdogSeconds);
    const auto t0 = std::chrono::steady_clock::now();
    bool ok = true;
    std::string why;
    try {
        fn();
    } catch (const Failure& f) {
        ok = false;
        why = f.what;
    }
    ::alarm(0);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (ok)
        std::printf("ok   %s (%lld ms)\n", name, static_cast<long long>(ms));
    else
        std::printf("FAIL %s: %s\n", name, why.c_str());
    std::fflush(stdout);
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> only, skip;
    bool list = false, good_after = true;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--socket") env().socket = value();
        else if (a == "--pid") env().daemon_pid = pid_t(std::atoi(value().c_str()));
        else if (a == "--log") env().log_path = value();
        else if (a == "--case") only.push_back(value());
        else if (a == "--skip") skip.push_back(value());
        else if (a == "--list") list = true;
        else if (a == "--no-good-after") good_after = false;
        else return usage();
    }

    std::vector<Case> cases = {{"good_client", good_client}};
    for (auto group : {message_cases(), ring_cases(), session_cases()}) cases.insert(cases.end(), group.begin(), group.end());
    if (list) {
        for (const Case& c : cases) std::printf("%s\n", c.name);
        return 0;
    }
    if (env().socket.empty()) return usage();
    for (const auto* names : {&only, &skip})
        for (const std::string& name : *names) {
            bool known = false;
            for (const Case& c : cases) known |= name == c.name;
            if (!known) {
                std::fprintf(stderr, "no case named %s (--list)\n", name.c_str());
                return 2;
            }
        }
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGALRM, on_watchdog);
    std::setvbuf(stdout, nullptr, _IOLBF, 0);

    // The daemon's fds when idle, after one good session (whatever it opens
    // once, on first use, is then counted).
    if (!run_step("good_client (baseline)", good_client)) return 1;
    int baseline = daemon_fd_count();
    {
        int prev = -2;
        for (int i = 0; i < 50 && baseline != prev; i++) {  // stable for 100 ms
            prev = baseline;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            baseline = daemon_fd_count();
        }
    }
    if (baseline >= 0) std::printf("     daemon fds when idle: %d\n", baseline);

    unsigned failed = 0, run = 0;
    for (const Case& c : cases) {
        if (!only.empty() && std::find(only.begin(), only.end(), c.name) == only.end()) continue;
        if (std::find(skip.begin(), skip.end(), c.name) != skip.end()) {
            std::printf("skip %s\n", c.name);
            continue;
        }
        run++;
        if (!run_step(c.name, c.run)) failed++;
        if (!daemon_alive()) {
            std::printf("FAIL %s: the daemon died\n", c.name);
            return 1;
        }
        if (good_after && std::strcmp(c.name, "good_client") != 0) {
            const std::string name = std::string("  good client after ") + c.name;
            if (!run_step(name.c_str(), good_client)) failed++;
        }
        if (baseline >= 0) {
            const int n = settled_fd_count(baseline, std::chrono::milliseconds(3000));
            if (n > baseline) {
                std::printf("FAIL %s: the daemon holds %d fds, %d when idle before (fds kept from the case?)\n",
                            c.name, n, baseline);
                failed++;
                baseline = n;  // report each leak once
            }
        }
    }
    std::printf("%u case(s), %u failure(s)\n", run, failed);
    return failed ? 1 : 0;
}
