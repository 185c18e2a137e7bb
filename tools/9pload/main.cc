// ioplane-9pload: a 9P2000.L load generator (see README.md).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "options.h"
#include "session.h"
#include "workloads.h"

namespace ioplane::load9p {
namespace {

enum ExitStatus : int { kSuccess = 0, kFailed = 1, kUsageError = 2, kInterrupted = 130 };

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

void install_signals() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;  // no SA_RESTART: a blocked recv returns EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
}

void complain(const std::string& message) { std::fprintf(stderr, "ioplane-9pload: %s\n", message.c_str()); }

// Removes what the run made: the slots' and set-up fids, the work
// directory's contents, the directory. False (and a message) if it could not.
bool clean_up(Session& s, std::vector<Slot>& slots, const std::string& dir, bool keep) {
    if (s.broken()) {
        complain("the session is broken: the work directory '" + dir + "' is left on the server");
        return false;
    }
    release_slots(s, slots);
    s.clunk_all_but({kRootFid, kWorkFid});  // the workload's fids
    bool ok = true;
    if (!keep) {
        // --unlink unlinkat is for the measured run: clearing up may fall back.
        s.set_unlink_mode(s.unlink_by_remove() ? UnlinkMode::kRemove : UnlinkMode::kAuto);
        auto r = s.remove_tree(kWorkFid);
        (void)s.clunk(kWorkFid);
        if (r) r = s.unlinkat(kRootFid, dir, AT_REMOVEDIR);
        if (!r) {
            complain("cleanup: " + r.error().describe() + ": the work directory '" + dir + "' may be left");
            ok = false;
        }
    } else {
        (void)s.clunk(kWorkFid);
    }
    (void)s.clunk(kRootFid);
    return ok;
}

std::string number_or_null(std::optional<double> v, const char* format) {
    if (!v) return "null";
    char buf[64];
    std::snprintf(buf, sizeof buf, format, *v);
    return buf;
}

void report(const Options& o, const Session& s, const Workload& w, const RunStats& st) {
    const double secs = st.window_s > 0 ? st.window_s : 1e-9;
    const double ops_s = double(st.ops) / secs;
    const double per_op = st.ops ? 1.0 / double(st.ops) : 0.0;
    const double mib_s = ops_s * double(w.bytes_per_op()) / (1 << 20);
    auto us = [](double ns) { return ns / 1000.0; };
    std::optional<double> server_us_op;
    if (st.server_cpu_s && st.ops) server_us_op = *st.server_cpu_s * 1e6 * per_op;
    std::printf(
        "{\"tool\":\"ioplane-9pload\",\"workload\":\"%s\",\"concurrency\":%u,\"msize\":%u,\"bytes_per_op\":%llu,"
        "\"duration_s\":%.3f,\"ops\":%llu,\"ops_per_s\":%.1f,\"mib_per_s\":%.1f,\"msgs_per_op\":%.3f,"
        "\"lat_mean_us\":%.2f,\"lat_p50_us\":%.2f,\"lat_p99_us\":%.2f,\"lat_max_us\":%.2f,"
        "\"client_cpu_s\":%.3f,\"client_cpu_us_per_op\":%.3f,\"server_cpu_s\":%s,\"server_cpu_us_per_op\":%s,"
        "\"unlink\":%s,\"interrupted\":%s}\n",
        o.workload.c_str(), o.concurrency, s.msize(), (unsigned long long)w.bytes_per_op(), st.window_s,
        (unsigned long long)st.ops, ops_s, mib_s, double(st.messages) * per_op, us(st.latency.mean()),
        us(double(st.latency.percentile(0.50))), us(double(st.latency.percentile(0.99))),
        us(double(st.latency.max())), st.client_cpu_s, st.client_cpu_s * 1e6 * per_op,
        number_or_null(st.server_cpu_s, "%.3f").c_str(), number_or_null(server_us_op, "%.3f").c_str(),
        o.kind != WorkloadKind::kCreateUnlink ? "null" : s.unlink_by_remove() ? "\"remove\"" : "\"unlinkat\"",
        st.interrupted ? "true" : "false");
    std::fflush(stdout);
    if (o.quiet) return;
    std::string line = o.workload + " concurrency " + std::to_string(o.concurrency) + ", msize " +
                       std::to_string(s.msize()) + ": ";
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.0f ops/s", ops_s);
    line += buf;
    if (w.bytes_per_op()) {
        std::snprintf(buf, sizeof buf, " (%.1f MiB/s)", mib_s);
        line += buf;
    }
    std::snprintf(buf, sizeof buf, ", latency mean %.1f us, p50 %.1f us, p99 %.1f us; client CPU %.2f us/op",
                  us(st.latency.mean()), us(double(st.latency.percentile(0.50))),
                  us(double(st.latency.percentile(0.99))), st.client_cpu_s * 1e6 * per_op);
    line += buf;
    if (server_us_op) {
        std::snprintf(buf, sizeof buf, ", server CPU %.2f us/op", *server_us_op);
        line += buf;
    }
    std::fprintf(stderr, "%s%s\n", line.c_str(), st.interrupted ? " (interrupted)" : "");
}

int run_tool(const Options& o) {
    install_signals();
    auto conn = o.tcp.empty() ? Connection::connect_unix(o.unix_path) : Connection::connect_tcp(o.tcp);
    if (!conn) {
        complain(conn.error().describe());
        return kFailed;
    }
    conn->set_timeout(std::chrono::milliseconds(int64_t(o.timeout_s * 1000)));
    auto session = Session::start(std::move(*conn), o.msize, o.uname, o.aname, o.n_uname);
    if (!session) {
        complain(session.error().describe());
        return kFailed;
    }
    Session& s = *session;
    s.set_unlink_mode(o.unlink);

    std::string dir = o.dir;
    if (dir.empty()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "9pload.%d.%08x", int(::getpid()), unsigned(std::random_device{}()));
        dir = buf;
    }
    if (auto m = s.mkdir(kRootFid, dir, 0755); !m) {
        complain("making the work directory: " + m.error().describe());
        return kFailed;
    }
    const std::string_view dir_name = dir;
    if (auto w = s.walk(kRootFid, kWorkFid, std::span(&dir_name, 1)); !w) {
        complain(w.error().describe());
        return kFailed;
    }
    std::vector<Slot> slots(o.concurrency);
    for (uint32_t i = 0; i < o.concurrency; i++) {
        slots[i].tag = uint16_t(i);
        slots[i].fid = kFirstSlotFid + i;
    }
    auto workload = make_workload(o, s);
    if (auto p = workload->prepare(); !p) {
        complain("setting up " + o.workload + ": " + p.error().describe());
        clean_up(s, slots, dir, o.keep);
        return kFailed;
    }
    if (g_stop) {
        clean_up(s, slots, dir, o.keep);
        return kInterrupted;
    }
    auto stats = run(s, *workload, slots, o, g_stop);
    if (!stats) {
        complain(o.workload + " stopped: " + stats.error().describe());
        clean_up(s, slots, dir, o.keep);
        return kFailed;
    }
    report(o, s, *workload, *stats);
    const bool clean = clean_up(s, slots, dir, o.keep);
    if (stats->interrupted) return kInterrupted;
    return clean ? kSuccess : kFailed;
}

}  // namespace
}  // namespace ioplane::load9p

int main(int argc, char** argv) {
    using namespace ioplane::load9p;
    std::vector<std::string> args(argv + 1, argv + argc);
    auto options = parse_options(args);
    if (!options) {
        std::fprintf(stderr, "ioplane-9pload: %s (see --help)\n", options.error().c_str());
        return kUsageError;
    }
    if (options->help) {
        std::fputs(kUsage, stdout);
        return kSuccess;
    }
    return run_tool(*options);
}
