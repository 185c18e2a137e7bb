#include "stats_table.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

uint64_t u64(const json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

std::string string_member(const json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Empty unless `object[key]` is a list of unsigned integers.
std::vector<uint64_t> u64_list(const json& object, const char* key) {
    std::vector<uint64_t> out;
    auto it = object.find(key);
    if (it == object.end() || !it->is_array()) return out;
    for (const json& v : *it) {
        if (!v.is_number_unsigned()) return {};
        out.push_back(v.get<uint64_t>());
    }
    return out;
}

OpStats parse_op(const json& op) {
    OpStats s{u64(op, "requests"), u64(op, "bytes"), u64(op, "errors"), u64(op, "total-time-ns"), {}, {}};
    auto h = op.find("latency-histogram");
    if (h != op.end() && h->is_object()) {
        s.boundaries = u64_list(*h, "boundaries");
        s.bins = u64_list(*h, "bins");
        bool ascending = std::adjacent_find(s.boundaries.begin(), s.boundaries.end(), std::greater_equal<>()) ==
                         s.boundaries.end();
        if (!ascending || s.bins.size() != s.boundaries.size() + 1) s.boundaries.clear(), s.bins.clear();
    }
    return s;
}

std::optional<Rates> rates_between(const ExportStats& current, const ExportStats& previous, double seconds) {
    Rates r;
    std::vector<OpStats> deltas;
    uint64_t requests = 0, time_ns = 0;
    for (const auto& [name, op] : current.ops) {
        auto before = previous.ops.find(name);
        // An operation type the server did not list before has counted from zero.
        auto d = before == previous.ops.end() ? std::optional(op) : op_delta(op, before->second);
        if (!d) return std::nullopt;
        double per_s = double(d->requests) / seconds;
        if (name == "read") r.read_iops = per_s, r.read_mb_per_s = double(d->bytes) / 1e6 / seconds;
        else if (name == "write") r.write_iops = per_s, r.write_mb_per_s = double(d->bytes) / 1e6 / seconds;
        else r.other_ops_per_s += per_s;
        requests += d->requests;
        time_ns += d->total_time_ns;
        r.errors += d->errors;
        deltas.push_back(std::move(*d));
    }
    if (requests > 0) r.mean_latency_us = double(time_ns) / double(requests) / 1000;
    r.p99 = percentile_bound(deltas, 99);
    return r;
}

std::string fixed(double v, int decimals) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, v);
    return buffer;
}
}  // namespace

std::expected<std::vector<ExportStats>, std::string> parse_export_stats(const json& reply) {
    if (!reply.is_array()) return std::unexpected("x-query-export-stats did not return a list");
    std::vector<ExportStats> exports;
    for (const json& e : reply) {
        if (!e.is_object()) return std::unexpected("x-query-export-stats returned a list element that is not an object");
        ExportStats s{string_member(e, "id"), string_member(e, "node-name"), u64(e, "connections"), {}};
        if (auto ops = e.find("ops"); ops != e.end() && ops->is_object()) {
            for (const auto& [name, op] : ops->items())
                if (op.is_object()) s.ops[name] = parse_op(op);
        }
        exports.push_back(std::move(s));
    }
    return exports;
}

std::optional<OpStats> op_delta(const OpStats& current, const OpStats& previous) {
    if (current.requests < previous.requests || current.bytes < previous.bytes ||
        current.errors < previous.errors || current.total_time_ns < previous.total_time_ns)
        return std::nullopt;
    OpStats d{current.requests - previous.requests, current.bytes - previous.bytes,
              current.errors - previous.errors, current.total_time_ns - previous.total_time_ns, {}, {}};
    if (current.boundaries == previous.boundaries && current.bins.size() == previous.bins.size()) {
        for (size_t i = 0; i < current.bins.size(); ++i) {
            if (current.bins[i] < previous.bins[i]) return std::nullopt;
            d.bins.push_back(current.bins[i] - previous.bins[i]);
        }
        d.boundaries = current.boundaries;
    }
    return d;
}

std::optional<LatencyBound> percentile_bound(const std::vector<OpStats>& ops, unsigned percent) {
    std::vector<std::pair<uint64_t, uint64_t>> bounded;  // (upper bound, count)
    unsigned __int128 total = 0;
    uint64_t open_from = UINT64_MAX;
    for (const OpStats& op : ops) {
        if (op.bins.size() != op.boundaries.size() + 1) continue;
        for (size_t i = 0; i < op.boundaries.size(); ++i) bounded.emplace_back(op.boundaries[i], op.bins[i]);
        total += std::accumulate(op.bins.begin(), op.bins.end(), (unsigned __int128)0);
        // The lowest start among open buckets with counts: fewer than `percent`
        // of all latencies lie below it, whatever the other histograms' bounds.
        if (op.bins.back() > 0) open_from = std::min(open_from, op.boundaries.empty() ? 0 : op.boundaries.back());
    }
    if (total == 0) return std::nullopt;
    // Counts sorted by upper bound never exceed the number of latencies below
    // that bound, so the first bound where they reach `percent` is safe.
    std::sort(bounded.begin(), bounded.end());
    unsigned __int128 cumulative = 0;
    for (auto [upper, count] : bounded) {
        cumulative += count;
        if (cumulative * 100 >= total * percent) return LatencyBound{upper, false};
    }
    return LatencyBound{open_from, true};
}

std::vector<ExportRow> compute_rows(const std::vector<ExportStats>& previous,
                                    const std::vector<ExportStats>& current, double seconds) {
    std::vector<ExportRow> rows;
    for (const ExportStats& e : current) {
        ExportRow row{e.id, e.node_name, e.connections, std::nullopt};
        auto before = std::find_if(previous.begin(), previous.end(), [&](auto& p) { return p.id == e.id; });
        if (before != previous.end() && seconds > 0) row.rates = rates_between(e, *before, seconds);
        rows.push_back(std::move(row));
    }
    return rows;
}

std::string render_table(const std::vector<ExportRow>& rows) {
    std::vector<std::vector<std::string>> cells{
        {"ID", "NODE", "CONN", "RD-IOPS", "WR-IOPS", "RD-MB/s", "WR-MB/s", "OTHER/s", "LAT-us", "P99-us", "ERRORS"}};
    for (const ExportRow& row : rows) {
        std::vector<std::string> line{row.id, row.node_name, std::to_string(row.connections)};
        if (const auto& r = row.rates) {
            auto p99 = [&] { return (r->p99->open ? ">" : "") + fixed(double(r->p99->ns) / 1000, 1); };
            line.insert(line.end(), {fixed(r->read_iops, 1), fixed(r->write_iops, 1), fixed(r->read_mb_per_s, 2),
                                     fixed(r->write_mb_per_s, 2), fixed(r->other_ops_per_s, 1),
                                     r->mean_latency_us ? fixed(*r->mean_latency_us, 1) : "-",
                                     r->p99 ? p99() : "-", std::to_string(r->errors)});
        } else {
            line.resize(cells[0].size(), "-");
        }
        cells.push_back(std::move(line));
    }
    std::vector<size_t> width(cells[0].size(), 0);
    for (const auto& line : cells)
        for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
    std::string out;
    for (const auto& line : cells) {
        for (size_t i = 0; i < line.size(); ++i) {
            std::string pad(width[i] - line[i].size(), ' ');
            out += i == 0 ? "" : "  ";
            out += i < 2 ? line[i] + pad : pad + line[i];  // names left, numbers right
        }
        out += '\n';
    }
    return out;
}

}  // namespace ioplane::qmp_tool
