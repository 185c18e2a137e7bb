// The measured run: one thread per queue, each running a Job on its own
// queue; this thread holds the window (ramp, then runtime), samples CPU
// times at its edges, and stops the jobs early on a signal or a failure.
//
// Thread contract: called from the main thread after Frontend::start();
// the queues are driven by the threads it starts and joins.
#pragma once

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "frontend.h"
#include "job.h"
#include "options.h"
#include "plan.h"

namespace ioplane::vublk {

struct WorkloadResult {
    std::vector<JobStats> jobs;
    double window_s = 0;
    double tool_cpu_s = 0;
    std::optional<double> server_cpu_s;
    std::string failure;  // a protocol or set-up failure (I/O errors are in the stats)
    bool interrupted = false;
};

// `interrupt` is set by a signal handler.
WorkloadResult run_workload(Frontend& f, const Options& o, const Plan& p, uint32_t seed,
                            const volatile std::sig_atomic_t& interrupt);

}  // namespace ioplane::vublk
