#include "workload.h"

#include <atomic>
#include <latch>
#include <thread>

#include "cpu_time.h"

namespace ioplane::vublk {

namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds to_ms(double s) { return std::chrono::milliseconds(int64_t(s * 1000)); }

}  // namespace

WorkloadResult run_workload(Frontend& f, const Options& o, const Plan& p, uint32_t seed,
                            const volatile std::sig_atomic_t& interrupt) {
    WorkloadResult res;
    const size_t n = o.queues;

    // Slots come from the guest memory allocator, which is single-threaded:
    // all of them are made here before the threads start.
    std::vector<std::vector<BlkSlot>> slots(n);
    for (size_t q = 0; q < n; q++) {
        for (unsigned i = 0; i < o.iodepth; i++) {
            auto s = BlkSlot::allocate(f.memory(), o.bs);
            if (!s) {
                res.failure = s.error();
                return res;
            }
            slots[q].push_back(std::move(*s));
        }
    }

    std::atomic<bool> stop{false};
    std::latch prefilled{std::ptrdiff_t(n)}, go{1};
    Window window;  // written before go.count_down(), read after go.wait()
    std::vector<std::string> errors(n);
    res.jobs.resize(n);
    std::vector<std::thread> threads;
    for (size_t q = 0; q < n; q++) {
        threads.emplace_back([&, q] {
            QueueRunner runner(f.queue(q), std::move(slots[q]), o.wait, p.indirect, f.channel().fd(),
                               to_ms(o.timeout_s));
            JobConfig c;
            c.rw = o.rw;
            c.rwmixread = o.rwmixread;
            c.bs = o.bs;
            c.iodepth = o.iodepth;
            c.segments = p.segments;
            c.slice_offset = p.range_offset + q * p.slice_blocks * o.bs;
            c.slice_blocks = p.slice_blocks;
            c.verify = o.verify;
            c.seed = seed;
            Job job(runner, c, uint16_t(q), stop);
            std::expected<void, std::string> r;
            if (o.verify && rw_reads(o.rw)) r = job.prefill();
            if (!r) stop = true;
            prefilled.count_down();
            go.wait();
            if (r && !stop) r = job.run(window);
            if (r && o.verify && !stop) r = job.read_back();
            if (!r) {
                errors[q] = r.error();
                stop = true;
            }
            res.jobs[q] = job.stats();
        });
    }

    // Sleeps until `t`, or until a signal or a job's failure stops the run.
    auto sleep_until = [&](Clock::time_point t) {
        for (;;) {
            if (interrupt) {
                res.interrupted = true;
                stop = true;
            }
            if (stop) return false;
            const auto now = Clock::now();
            if (now >= t) return true;
            std::this_thread::sleep_for(std::min<Clock::duration>(t - now, std::chrono::milliseconds(20)));
        }
    };
    while (!prefilled.try_wait()) sleep_until(Clock::now() + std::chrono::milliseconds(20));
    const auto start = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.ramp_s));
    window = Window{start, start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*o.runtime_s))};
    go.count_down();

    auto end = window.end;
    if (sleep_until(window.start)) {
        const double cpu0 = own_cpu_seconds();
        const auto server0 = o.server_pid ? process_cpu_seconds(*o.server_pid) : std::nullopt;
        sleep_until(window.end);
        end = std::min(Clock::now(), window.end);
        res.tool_cpu_s = own_cpu_seconds() - cpu0;
        const auto server1 = o.server_pid ? process_cpu_seconds(*o.server_pid) : std::nullopt;
        if (server0 && server1) res.server_cpu_s = *server1 - *server0;
        res.window_s = std::chrono::duration<double>(end - window.start).count();
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
        if (!e.empty() && res.failure.empty()) res.failure = e;
    return res;
}

}  // namespace ioplane::vublk
