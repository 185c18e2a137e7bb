// ioplane-vublk: a vhost-user-blk front end for testing and benchmarking
// back ends (see README.md).
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "checks.h"
#include "device_limits.h"
#include "frontend.h"
#include "options.h"
#include "plan.h"
#include "report.h"
#include "transfer.h"
#include "workload.h"

namespace ioplane::vublk {
namespace {

enum ExitStatus : int { kSuccess = 0, kFailed = 1, kUsageError = 2, kInterrupted = 130 };

volatile std::sig_atomic_t g_interrupt = 0;
void on_signal(int) { g_interrupt = 1; }

void install_signals() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
}

void complain(const std::string& m) { std::fprintf(stderr, "ioplane-vublk: %s\n", m.c_str()); }

// The failure a finished workload amounts to, if any: a protocol failure
// first, then I/O errors, then verify mismatches.
std::string workload_failure(const WorkloadResult& w) {
    if (!w.failure.empty()) return w.failure;
    uint64_t errors = 0, mismatches = 0;
    std::string first;
    for (const JobStats& j : w.jobs) {
        errors += j.errors;
        mismatches += j.verify_mismatches;
        if (first.empty()) first = j.first_failure;
    }
    if (errors) return std::to_string(errors) + " request(s) failed; the first: " + first;
    if (mismatches) return std::to_string(mismatches) + " verify mismatch(es); the first: " + first;
    return {};
}

// A runner with one slot for checks and transfers, on queue 0.
std::expected<QueueRunner, std::string> aux_runner(Frontend& f, const Options& o, const Plan& p) {
    auto slot = BlkSlot::allocate(f.memory(), p.aux_slot_bytes);
    if (!slot) return std::unexpected(slot.error());
    std::vector<BlkSlot> slots;
    slots.push_back(std::move(*slot));
    return QueueRunner(f.queue(0), std::move(slots), o.wait, p.indirect, f.channel().fd(),
                       std::chrono::milliseconds(int64_t(o.timeout_s * 1000)));
}

int run(const Options& o) {
    FrontendOptions fo;
    fo.socket = o.socket;
    fo.queues = o.queues;
    fo.mem_regions = o.mem_regions;
    fo.indirect = o.indirect;
    fo.event_idx = o.event_idx;
    fo.reply_ack = o.reply_ack;
    fo.inflight = o.inflight;
    fo.timeout = std::chrono::milliseconds(int64_t(o.timeout_s * 1000));
    auto f = Frontend::connect(fo);
    if (!f) {
        complain(f.error());
        return kFailed;
    }
    Frontend& fe = **f;
    if (auto r = fe.negotiate(); !r) {
        complain("negotiation: " + r.error());
        return kFailed;
    }
    auto limits = DeviceLimits::from(fe.negotiation());
    if (!limits) {
        complain(limits.error());
        return kFailed;
    }
    auto plan = make_plan(o, *limits, fe.negotiation().has(kFIndirectDesc));
    if (!plan) {
        complain(plan.error());
        return kUsageError;
    }
    if (auto r = fe.start(plan->queue_size, plan->mem_size); !r) {
        complain("start: " + r.error());
        return kFailed;
    }

    RunReport rep;
    rep.options = &o;
    rep.negotiation = &fe.negotiation();
    rep.queue_size = plan->queue_size;
    rep.indirect = plan->indirect;
    rep.segments = plan->segments;
    rep.capacity_bytes = limits->capacity_bytes;
    rep.range_offset = plan->range_offset;
    rep.range_bytes = plan->range_bytes;
    rep.seed = o.seed.value_or(uint32_t(std::chrono::system_clock::now().time_since_epoch().count()));
    bool broken = false;  // a protocol failure: the queues cannot be stopped cleanly

    if (plan->aux_slot_bytes) {
        auto runner = aux_runner(fe, o, *plan);
        if (!runner) {
            rep.failure = runner.error();
        } else {
            if (o.checks) {
                rep.checks = run_checks(*runner, *limits, o.checks, o.offset, rep.seed);
                for (const auto& c : rep.checks)
                    if (c.outcome == CheckResult::kFailed && rep.failure.empty())
                        rep.failure = "check " + c.name + ": " + c.detail;
                broken = runner->outstanding() != 0;
            }
            if (rep.failure.empty() && !o.write_from.empty()) {
                auto t = write_from_file(*runner, *limits, o.write_from, o.offset);
                if (t) rep.transferred = *t;
                else rep.failure = "--write-from: " + t.error();
            }
            if (rep.failure.empty() && !o.read_to.empty()) {
                auto t = read_to_file(*runner, *limits, o.read_to, o.offset, *o.length);
                if (t) rep.transferred = *t;
                else rep.failure = "--read-to: " + t.error();
            }
            broken = broken || runner->outstanding() != 0;
        }
    }

    if (rep.failure.empty() && *o.runtime_s > 0 && !g_interrupt) {
        WorkloadResult w = run_workload(fe, o, *plan, rep.seed, g_interrupt);
        rep.workload = !w.jobs.empty();
        rep.jobs = std::move(w.jobs);
        rep.window_s = w.window_s;
        rep.tool_cpu_s = w.tool_cpu_s;
        rep.server_cpu_s = w.server_cpu_s;
        rep.interrupted = w.interrupted;
        // I/O errors and mismatches leave the protocol working: stop cleanly then.
        broken = !w.failure.empty();
        rep.failure = workload_failure(w);
    }

    // A queue in an unknown state (a request never completed, a bad used
    // entry) is not stopped: GET_VRING_BASE would wait on the back end.
    if (!broken) {
        if (auto r = fe.stop(); !r && rep.failure.empty()) rep.failure = "stop: " + r.error();
    }

    if (o.json) print_json(stdout, rep);
    if (!o.json || !o.quiet) print_human(o.json ? stderr : stdout, rep);
    std::fflush(stdout);
    if (rep.interrupted || g_interrupt) return kInterrupted;
    return rep.failure.empty() ? kSuccess : kFailed;
}

}  // namespace
}  // namespace ioplane::vublk

int main(int argc, char** argv) {
    using namespace ioplane::vublk;
    std::vector<std::string> args(argv + 1, argv + argc);
    auto o = parse_options(args);
    if (!o) {
        complain(o.error());
        return kUsageError;
    }
    if (o->help) {
        std::fputs(kUsage, stdout);
        return kSuccess;
    }
    install_signals();
    return run(*o);
}
