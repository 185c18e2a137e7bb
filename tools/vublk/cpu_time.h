// CPU time (user + system, all threads) of this process and of another
// one (the back end, --server-pid), sampled at the edges of the measured
// window.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <optional>

namespace ioplane::vublk {

double own_cpu_seconds();
// From /proc/PID/stat (utime + stime, clock-tick resolution); nullopt when
// the process is gone or unreadable.
std::optional<double> process_cpu_seconds(int pid);

}  // namespace ioplane::vublk
