// Monotonic time in nanoseconds, the one clock of every loop and timer.
//
// Thread contract: any thread.
#pragma once

#include <cstdint>
#include <ctime>

namespace ioplane {

inline int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace ioplane
