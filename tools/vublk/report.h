// What a run prints: a human summary and one JSON object line.
//
// Thread contract: pure functions of a finished run; main thread.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "checks.h"
#include "frontend.h"
#include "job.h"
#include "options.h"

namespace ioplane::vublk {

struct RunReport {
    const Options* options = nullptr;
    const Negotiation* negotiation = nullptr;
    uint16_t queue_size = 0;
    bool indirect = false;  // requests use indirect tables
    uint16_t segments = 1;  // data descriptors per request
    uint64_t capacity_bytes = 0;
    uint64_t range_offset = 0, range_bytes = 0;
    uint32_t seed = 0;
    bool workload = false;  // a measured run happened
    double window_s = 0;
    std::vector<JobStats> jobs;
    double tool_cpu_s = 0;
    std::optional<double> server_cpu_s;
    std::vector<CheckResult> checks;
    std::optional<uint64_t> transferred;  // --write-from / --read-to bytes
    std::string failure;  // empty: success
    bool interrupted = false;
};

void print_human(std::FILE* f, const RunReport& r);
void print_json(std::FILE* f, const RunReport& r);

// A string as a JSON string literal.
std::string json_string(const std::string& s);

}  // namespace ioplane::vublk
