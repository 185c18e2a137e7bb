// One queue's workload: keeps `iodepth` requests outstanding on its queue
// within its slice of the device, and counts what completes inside the
// measured window. With --verify it also writes every block of the slice
// first (when the workload reads), checks every read against the last
// write to that block, and reads every written block back at the end.
//
// Thread contract: a Job runs on its queue's thread; its stats are read by
// the main thread after that thread is joined.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.h"  // tools/common
#include "options.h"
#include "queue_runner.h"

namespace ioplane::vublk {

using tools::LatencyHistogram;

struct JobConfig {
    Rw rw = Rw::kRandRead;
    unsigned rwmixread = 50;
    uint32_t bs = 4096;
    uint16_t iodepth = 1;
    uint16_t segments = 1;
    uint64_t slice_offset = 0;  // bytes, bs-aligned
    uint64_t slice_blocks = 0;  // of bs bytes
    bool verify = false;
    uint32_t seed = 1;
};

// The measured window, the same for every job.
struct Window {
    std::chrono::steady_clock::time_point start;  // end of the ramp
    std::chrono::steady_clock::time_point end;
};

struct JobStats {
    uint64_t ios = 0, reads = 0, writes = 0, bytes = 0;  // OK completions in the window
    uint64_t errors = 0;            // non-OK status, any phase
    uint64_t used_len_mismatches = 0;  // used element len != writable bytes of the chain
    LatencyHistogram latency;       // ns, OK completions in the window
    uint64_t verified_blocks = 0;   // reads checked against the pattern
    uint64_t verify_mismatches = 0;
    uint64_t window_publishes = 0, window_kicks = 0, window_sleeps = 0;  // notifications inside the window
    std::string first_failure;      // for the message: the first error or mismatch
};

class Job {
public:
    // Every phase stops starting requests once `stop` is set (and waits for
    // those outstanding).
    Job(QueueRunner& runner, JobConfig c, uint16_t queue_index, const std::atomic<bool>& stop);

    // --verify with a reading workload: writes every block of the slice.
    std::expected<void, std::string> prefill();
    // The workload until `window.end`; counts what completes inside the window.
    std::expected<void, std::string> run(const Window& window);
    // --verify: reads back every block written during the run and checks it.
    std::expected<void, std::string> read_back();

    const JobStats& stats() const { return stats_; }

private:
    struct Io {
        BlkOp op;
        uint64_t block;
    };
    struct InFlight {
        BlkOp op;
        uint64_t block;
        uint32_t generation;  // a verified write's pattern
        std::chrono::steady_clock::time_point submitted;
    };
    // Keeps requests from `next` outstanding until it returns nullopt and
    // everything completed. `window` set: count completions inside it.
    std::expected<void, std::string> drive(const std::function<std::optional<Io>()>& next, const Window* window);
    void complete(const Completion& c, std::chrono::steady_clock::time_point now, const Window* window);
    void note_failure(const std::string& what);
    uint64_t random();
    std::optional<uint64_t> pick_block(uint64_t& cursor);

    QueueRunner& runner_;
    JobConfig c_;
    uint16_t queue_;
    const std::atomic<bool>& stop_;
    JobStats stats_;
    std::vector<InFlight> inflight_;  // per slot
    std::vector<uint16_t> free_slots_;
    uint64_t rng_;
    // --verify: the generation of each block's last successful write (0:
    // unknown), and which blocks have a request outstanding.
    std::vector<uint32_t> generation_;
    std::vector<bool> busy_;
    uint32_t next_generation_ = 1;
};

}  // namespace ioplane::vublk
