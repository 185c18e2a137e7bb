// ioplane-vublk's command line, checked before anything connects.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "queue_runner.h"

namespace ioplane::vublk {

enum class Rw { kRead, kWrite, kRandRead, kRandWrite, kRandRw };
const char* rw_name(Rw rw);
inline bool rw_reads(Rw rw) { return rw == Rw::kRead || rw == Rw::kRandRead || rw == Rw::kRandRw; }
inline bool rw_writes(Rw rw) { return rw == Rw::kWrite || rw == Rw::kRandWrite || rw == Rw::kRandRw; }
inline bool rw_random(Rw rw) { return rw == Rw::kRandRead || rw == Rw::kRandWrite || rw == Rw::kRandRw; }

// Functional checks (--check), run on queue 0 before the workload.
enum Check : unsigned {
    kCheckRw = 1,
    kCheckFlush = 2,
    kCheckGetId = 4,
    kCheckWriteZeroes = 8,
    kCheckDiscard = 16,
    kCheckAll = 31,
};

struct Options {
    std::string socket;
    Rw rw = Rw::kRandRead;
    unsigned rwmixread = 50;  // randrw: percentage of reads
    uint32_t bs = 4096;
    uint16_t iodepth = 1;     // per queue
    uint16_t queues = 1;
    // Measured seconds; unset: 5, or 0 (no workload) when --check,
    // --write-from or --read-to is given.
    std::optional<double> runtime_s;
    double ramp_s = 0;
    WaitMode wait = WaitMode::kEvent;
    uint64_t offset = 0;      // the addressed range starts here
    std::optional<uint64_t> size;  // and is this long (default: to the end)
    bool verify = false;
    unsigned checks = 0;
    std::string write_from;   // transfer a host file to the device at --offset
    std::string read_to;      // or --length bytes at --offset into a host file
    std::optional<uint64_t> length;
    uint16_t queue_size = 0;  // 0: chosen from iodepth
    uint16_t segments = 1;    // data descriptors per read/write
    bool indirect = true;
    bool event_idx = true;
    bool reply_ack = true;
    bool inflight = false;  // --inflight: share the in-flight area (INFLIGHT_SHMFD), as QEMU does
    unsigned mem_regions = 1;
    std::optional<uint64_t> mem_size;
    double timeout_s = 30;
    std::optional<int> server_pid;
    std::optional<uint32_t> seed;
    bool json = false;
    bool quiet = false;
    bool help = false;
};

extern const char kUsage[];

// The words after the program name. Errors are one-line messages.
std::expected<Options, std::string> parse_options(std::span<const std::string> args);

// "4096", "4k", "64M", "1G" (binary units).
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace ioplane::vublk
