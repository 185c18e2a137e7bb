#include "report.h"

namespace ioplane::vublk {

namespace {

// One set of numbers over some completions (a queue, or all of them).
struct Summary {
    uint64_t ios = 0, reads = 0, writes = 0, bytes = 0, errors = 0, used_len_mismatches = 0;
    uint64_t publishes = 0, kicks = 0, sleeps = 0;
    uint64_t verified = 0, mismatches = 0;
    LatencyHistogram latency;

    void add(const JobStats& j) {
        ios += j.ios, reads += j.reads, writes += j.writes, bytes += j.bytes, errors += j.errors;
        used_len_mismatches += j.used_len_mismatches;
        publishes += j.window_publishes, kicks += j.window_kicks, sleeps += j.window_sleeps;
        verified += j.verified_blocks, mismatches += j.verify_mismatches;
        latency.merge(j.latency);
    }
};

std::string hex(uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "\"0x%llx\"", static_cast<unsigned long long>(v));
    return b;
}

std::string num(double v, const char* fmt = "%.3f") {
    char b[48];
    std::snprintf(b, sizeof b, fmt, v);
    return b;
}

double per(double a, double b) { return b > 0 ? a / b : 0; }

const char* outcome_name(CheckResult::Outcome o) {
    switch (o) {
    case CheckResult::kOk: return "ok";
    case CheckResult::kSkipped: return "skipped";
    case CheckResult::kFailed: return "FAILED";
    }
    return "?";
}

// The JSON members for one summary (no braces).
std::string json_numbers(const Summary& s, double window_s) {
    auto us = [](double ns) { return num(ns / 1000.0, "%.2f"); };
    return "\"ios\":" + std::to_string(s.ios) + ",\"reads\":" + std::to_string(s.reads) +
           ",\"writes\":" + std::to_string(s.writes) + ",\"iops\":" + num(per(double(s.ios), window_s), "%.1f") +
           ",\"mib_per_s\":" + num(per(double(s.bytes), window_s) / (1 << 20), "%.2f") +
           ",\"lat_mean_us\":" + us(s.latency.mean()) + ",\"lat_p50_us\":" + us(double(s.latency.percentile(0.5))) +
           ",\"lat_p99_us\":" + us(double(s.latency.percentile(0.99))) +
           ",\"lat_max_us\":" + us(double(s.latency.max())) + ",\"errors\":" + std::to_string(s.errors) +
           ",\"used_len_mismatches\":" + std::to_string(s.used_len_mismatches) +
           ",\"kicks_per_io\":" + num(per(double(s.kicks), double(s.ios)), "%.4f") +
           ",\"sleeps_per_io\":" + num(per(double(s.sleeps), double(s.ios)), "%.4f") +
           ",\"batches_per_io\":" + num(per(double(s.publishes), double(s.ios)), "%.4f");
}

std::string human_numbers(const Summary& s, double window_s) {
    char b[256];
    std::snprintf(b, sizeof b,
                  "%.0f IOPS, %.1f MiB/s, latency mean %.1f us, p50 %.1f us, p99 %.1f us, max %.1f us; "
                  "errors %llu",
                  per(double(s.ios), window_s), per(double(s.bytes), window_s) / (1 << 20), s.latency.mean() / 1000,
                  double(s.latency.percentile(0.5)) / 1000, double(s.latency.percentile(0.99)) / 1000,
                  double(s.latency.max()) / 1000, static_cast<unsigned long long>(s.errors));
    return b;
}

}  // namespace

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            out += b;
        } else {
            out += char(c);
        }
    }
    return out + "\"";
}

void print_human(std::FILE* f, const RunReport& r) {
    const Options& o = *r.options;
    const Negotiation& n = *r.negotiation;
    std::fprintf(f, "back end %s offers: %s; protocol features: %s\n", o.socket.c_str(),
                 feature_names(n.offered_features).c_str(), protocol_feature_names(n.offered_protocol_features).c_str());
    std::fprintf(f, "negotiated: %s; protocol features: %s\n", feature_names(n.features).c_str(),
                 protocol_feature_names(n.protocol_features).c_str());
    std::fprintf(f, "device: %llu bytes; %u queue(s) of %u entries, indirect %s, event-idx %s, %u data descriptor(s) "
                    "per request, %u memory region(s)\n",
                 static_cast<unsigned long long>(r.capacity_bytes), o.queues, r.queue_size, r.indirect ? "on" : "off",
                 n.has(kFEventIdx) ? "on" : "off", r.segments, o.mem_regions);
    if (n.config) {
        const BlkConfig& c = *n.config;
        std::fprintf(f, "config: capacity %llu sectors, size_max %u, seg_max %u, blk_size %u, num_queues %u, "
                        "discard max %u sectors / %u segs / align %u, write-zeroes max %u sectors / %u segs, may_unmap %u\n",
                     static_cast<unsigned long long>(c.capacity), c.size_max, c.seg_max, c.blk_size, c.num_queues,
                     c.max_discard_sectors, c.max_discard_seg, c.discard_sector_alignment, c.max_write_zeroes_sectors,
                     c.max_write_zeroes_seg, c.write_zeroes_may_unmap);
    }
    for (const CheckResult& c : r.checks)
        std::fprintf(f, "check %s: %s%s%s\n", c.name.c_str(), outcome_name(c.outcome), c.detail.empty() ? "" : ": ",
                     c.detail.c_str());
    if (r.transferred) std::fprintf(f, "transferred %llu bytes\n", static_cast<unsigned long long>(*r.transferred));
    if (r.workload) {
        std::fprintf(f, "%s bs %u iodepth %u, %zu queue(s), wait %s: %.2f s measured (ramp %.2f s), range %llu+%llu\n",
                     rw_name(o.rw), o.bs, o.iodepth, r.jobs.size(), o.wait == WaitMode::kPoll ? "poll" : "event",
                     r.window_s, o.ramp_s, static_cast<unsigned long long>(r.range_offset),
                     static_cast<unsigned long long>(r.range_bytes));
        Summary total;
        for (size_t i = 0; i < r.jobs.size(); i++) {
            Summary s;
            s.add(r.jobs[i]);
            total.add(r.jobs[i]);
            std::fprintf(f, "  queue %zu: %s\n", i, human_numbers(s, r.window_s).c_str());
        }
        std::fprintf(f, "  total:   %s\n", human_numbers(total, r.window_s).c_str());
        std::fprintf(f, "  per I/O: %.3f kicks, %.3f batches, %.3f call-eventfd sleeps; tool CPU %.2f us",
                     per(double(total.kicks), double(total.ios)), per(double(total.publishes), double(total.ios)),
                     per(double(total.sleeps), double(total.ios)), per(r.tool_cpu_s * 1e6, double(total.ios)));
        if (r.server_cpu_s) std::fprintf(f, ", server CPU %.2f us", per(*r.server_cpu_s * 1e6, double(total.ios)));
        std::fprintf(f, "\n");
        if (o.verify)
            std::fprintf(f, "  verify: %llu block reads checked, %llu mismatches\n",
                         static_cast<unsigned long long>(total.verified),
                         static_cast<unsigned long long>(total.mismatches));
        if (total.used_len_mismatches)
            std::fprintf(f, "  note: %llu used elements had a len other than the chain's writable bytes\n",
                         static_cast<unsigned long long>(total.used_len_mismatches));
    }
    if (r.interrupted) std::fprintf(f, "interrupted\n");
    if (!r.failure.empty()) std::fprintf(f, "FAILED: %s\n", r.failure.c_str());
}

void print_json(std::FILE* f, const RunReport& r) {
    const Options& o = *r.options;
    const Negotiation& n = *r.negotiation;
    std::string j = "{\"tool\":\"ioplane-vublk\",\"socket\":" + json_string(o.socket);
    j += ",\"offered_features\":" + hex(n.offered_features) + ",\"features\":" + hex(n.features);
    j += ",\"offered_protocol_features\":" + hex(n.offered_protocol_features) +
         ",\"protocol_features\":" + hex(n.protocol_features);
    j += ",\"capacity\":" + std::to_string(r.capacity_bytes);
    if (n.config) {
        const BlkConfig& c = *n.config;
        j += ",\"config\":{\"size_max\":" + std::to_string(c.size_max) + ",\"seg_max\":" + std::to_string(c.seg_max) +
             ",\"blk_size\":" + std::to_string(c.blk_size) + ",\"num_queues\":" + std::to_string(c.num_queues) +
             ",\"max_discard_sectors\":" + std::to_string(c.max_discard_sectors) +
             ",\"max_discard_seg\":" + std::to_string(c.max_discard_seg) +
             ",\"discard_sector_alignment\":" + std::to_string(c.discard_sector_alignment) +
             ",\"max_write_zeroes_sectors\":" + std::to_string(c.max_write_zeroes_sectors) +
             ",\"max_write_zeroes_seg\":" + std::to_string(c.max_write_zeroes_seg) +
             ",\"write_zeroes_may_unmap\":" + std::to_string(c.write_zeroes_may_unmap) + "}";
    }
    j += ",\"queues\":" + std::to_string(o.queues) + ",\"queue_size\":" + std::to_string(r.queue_size);
    j += std::string(",\"indirect\":") + (r.indirect ? "true" : "false");
    j += std::string(",\"event_idx\":") + (n.has(kFEventIdx) ? "true" : "false");
    j += std::string(",\"reply_ack\":") + (n.has_protocol(kPfReplyAck) ? "true" : "false");
    j += ",\"segments\":" + std::to_string(r.segments) + ",\"mem_regions\":" + std::to_string(o.mem_regions);
    j += ",\"seed\":" + std::to_string(r.seed);
    j += ",\"checks\":[";
    for (size_t i = 0; i < r.checks.size(); i++)
        j += std::string(i ? "," : "") + "{\"name\":" + json_string(r.checks[i].name) + ",\"outcome\":\"" +
             (r.checks[i].outcome == CheckResult::kFailed ? "failed" : outcome_name(r.checks[i].outcome)) +
             "\",\"detail\":" + json_string(r.checks[i].detail) + "}";
    j += "]";
    j += ",\"transferred\":" + (r.transferred ? std::to_string(*r.transferred) : std::string("null"));
    if (r.workload) {
        Summary total;
        for (const JobStats& s : r.jobs) total.add(s);
        j += ",\"rw\":\"" + std::string(rw_name(o.rw)) + "\",\"bs\":" + std::to_string(o.bs) +
             ",\"iodepth\":" + std::to_string(o.iodepth);
        j += std::string(",\"wait\":\"") + (o.wait == WaitMode::kPoll ? "poll" : "event") + "\"";
        j += ",\"range_offset\":" + std::to_string(r.range_offset) + ",\"range_bytes\":" + std::to_string(r.range_bytes);
        j += ",\"ramp_s\":" + num(o.ramp_s) + ",\"runtime_s\":" + num(r.window_s);
        j += "," + json_numbers(total, r.window_s);
        j += ",\"tool_cpu_s\":" + num(r.tool_cpu_s, "%.4f") +
             ",\"tool_cpu_us_per_io\":" + num(per(r.tool_cpu_s * 1e6, double(total.ios)), "%.3f");
        j += ",\"server_pid\":" + (o.server_pid ? std::to_string(*o.server_pid) : std::string("null"));
        j += ",\"server_cpu_s\":" + (r.server_cpu_s ? num(*r.server_cpu_s, "%.4f") : std::string("null"));
        j += ",\"server_cpu_us_per_io\":" +
             (r.server_cpu_s ? num(per(*r.server_cpu_s * 1e6, double(total.ios)), "%.3f") : std::string("null"));
        j += ",\"verify\":" + (o.verify ? "{\"blocks_checked\":" + std::to_string(total.verified) +
                                              ",\"mismatches\":" + std::to_string(total.mismatches) + "}"
                                        : std::string("null"));
        j += ",\"per_queue\":[";
        for (size_t i = 0; i < r.jobs.size(); i++) {
            Summary s;
            s.add(r.jobs[i]);
            j += std::string(i ? "," : "") + "{\"queue\":" + std::to_string(i) + "," + json_numbers(s, r.window_s) + "}";
        }
        j += "]";
    }
    j += std::string(",\"interrupted\":") + (r.interrupted ? "true" : "false");
    j += ",\"failure\":" + (r.failure.empty() ? std::string("null") : json_string(r.failure));
    j += "}";
    std::fprintf(f, "%s\n", j.c_str());
}

}  // namespace ioplane::vublk
