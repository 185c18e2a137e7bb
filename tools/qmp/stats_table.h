// The arithmetic and layout of `ioplane-qmp top`: cumulative counters from
// two x-query-export-stats replies turned into per-interval rates, latency
// figures and a text table. Kept free of I/O so that tests can feed it
// hand-made samples.
//
// The reply: a list of {"id", "type", "node-name", "connections", "ops":
// {"read": OP, "write": OP, "flush": OP, ...}}, OP being {"requests",
// "bytes", "errors", "total-time-ns", "latency-histogram": {"boundaries":
// [ns...], "bins": [n...]}} with QEMU's histogram convention: bins[0] counts
// latencies below boundaries[0], bins[i] those in [boundaries[i-1],
// boundaries[i]), the last those at or above the last boundary.
#pragma once

#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ioplane::qmp_tool {

// One operation type's counters: cumulative in a sample, or the difference
// between two samples. No histogram when `boundaries` and `bins` are empty.
struct OpStats {
    uint64_t requests = 0;
    uint64_t bytes = 0;
    uint64_t errors = 0;
    uint64_t total_time_ns = 0;
    std::vector<uint64_t> boundaries;  // ns, strictly ascending
    std::vector<uint64_t> bins;        // boundaries.size() + 1 counts
};

struct ExportStats {
    std::string id;
    std::string node_name;
    uint64_t connections = 0;
    std::map<std::string, OpStats> ops;  // by QMP name: "read", "write", "flush", ...
};

// A latency percentile known only up to its histogram bucket.
struct LatencyBound {
    uint64_t ns = 0;
    bool open = false;  // the bucket beyond the last boundary: the percentile is at least `ns`
};

struct Rates {
    double read_iops = 0, write_iops = 0;
    double read_mb_per_s = 0, write_mb_per_s = 0;  // MB = 10^6 bytes
    double other_ops_per_s = 0;                    // every operation but read and write
    std::optional<double> mean_latency_us;         // over all operations; none if none completed
    std::optional<LatencyBound> p99;               // none without histogram counts
    uint64_t errors = 0;
};

struct ExportRow {
    std::string id;
    std::string node_name;
    uint64_t connections = 0;
    std::optional<Rates> rates;  // none for an export new since the last sample (or re-created)
};

// Missing or mistyped counters read as 0 and a malformed histogram as none:
// a monitoring view should show what it can. Only a reply that is not a list
// of objects is an error.
// Thread contract: any thread; pure.
std::expected<std::vector<ExportStats>, std::string> parse_export_stats(const nlohmann::json& reply);

// `current - previous`, none if a counter went backwards (the export was
// re-created under the same id). The histogram difference is dropped if the
// boundaries changed in between.
// Thread contract: any thread; pure.
std::optional<OpStats> op_delta(const OpStats& current, const OpStats& previous);

// The upper bound of the bucket where the cumulative count reaches `percent`
// of all counts of the given histograms. Histograms with different
// boundaries merge soundly: the true percentile is below the bound returned.
// Thread contract: any thread; pure.
std::optional<LatencyBound> percentile_bound(const std::vector<OpStats>& ops, unsigned percent);

// One row per export of `current`, in its order; exports gone from it are dropped.
// Thread contract: any thread; pure.
std::vector<ExportRow> compute_rows(const std::vector<ExportStats>& previous,
                                    const std::vector<ExportStats>& current, double seconds);

// Aligned columns with a header line, each line ending in '\n'; "-" where a value is unknown.
// Thread contract: any thread; pure.
std::string render_table(const std::vector<ExportRow>& rows);

}  // namespace ioplane::qmp_tool
