#include "export_stats.h"

#include <bit>

namespace ioplane {
namespace {

void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

constexpr const char* kOpNames[] = {"read", "write", "flush", "discard", "write-zeroes", "block-status"};
static_assert(std::size(kOpNames) == size_t(ExportOp::count));

}  // namespace

int ExportStats::bin_of(int64_t latency_ns) {
    if (latency_ns < (int64_t(1) << kFirstBoundaryLog2)) return 0;
    const int log2 = std::bit_width(uint64_t(latency_ns)) - 1;
    return std::min(log2, kLastBoundaryLog2) - kFirstBoundaryLog2 + 1;
}

void ExportStats::record(ExportOp op, uint64_t bytes, bool ok, int64_t latency_ns) {
    Counters& c = ops_[size_t(op)];
    add(c.requests, 1);
    add(c.bytes, bytes);
    if (!ok) add(c.errors, 1);
    latency_ns = std::max<int64_t>(latency_ns, 0);
    add(c.total_ns, uint64_t(latency_ns));
    add(c.bins[size_t(bin_of(latency_ns))], 1);
}

nlohmann::json ExportStats::snapshot() const {
    nlohmann::json boundaries = nlohmann::json::array();
    for (int i = kFirstBoundaryLog2; i <= kLastBoundaryLog2; i++) boundaries.push_back(uint64_t(1) << i);
    nlohmann::json ops = nlohmann::json::object();
    for (size_t i = 0; i < ops_.size(); i++) {
        const Counters& c = ops_[i];
        nlohmann::json bins = nlohmann::json::array();
        for (auto& b : c.bins) bins.push_back(b.load(std::memory_order_relaxed));
        ops[kOpNames[i]] = {{"requests", c.requests.load(std::memory_order_relaxed)},
                            {"bytes", c.bytes.load(std::memory_order_relaxed)},
                            {"errors", c.errors.load(std::memory_order_relaxed)},
                            {"total-time-ns", c.total_ns.load(std::memory_order_relaxed)},
                            {"latency-histogram", {{"boundaries", boundaries}, {"bins", std::move(bins)}}}};
    }
    return ops;
}

}  // namespace ioplane
