// ExportStats: per-export request counters for the monitor (requests, bytes,
// errors, time, and a latency histogram per kind of operation), cheap enough
// to update on every request.
//
// One writer at a time: the requests of an export all run in its node's
// AioContext, and when the node moves, the drained section orders the old
// thread's last update before the new thread's first. So an update is a
// relaxed load and store (no locked instruction); readers in other threads
// (QMP queries, in the main thread) use relaxed loads and may see counters
// of one request from slightly different moments.
//
// Thread contract: record() in the export's context; snapshot() any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace ioplane {

enum class ExportOp { read, write, flush, discard, write_zeroes, block_status, count };

class ExportStats {
public:
    // Histogram bins: < 1 µs, then one per power of two of nanoseconds up to
    // 2^30 ns (about 1 s), then everything slower.
    static constexpr int kFirstBoundaryLog2 = 10, kLastBoundaryLog2 = 30;
    static constexpr int kBins = kLastBoundaryLog2 - kFirstBoundaryLog2 + 2;

    // Export's context.
    void record(ExportOp op, uint64_t bytes, bool ok, int64_t latency_ns);

    // Any thread. x-query-export-stats' "ops" member: per operation
    // {requests, bytes, errors, total-time-ns, latency-histogram: {boundaries, bins}},
    // the histogram in QEMU's BlockLatencyHistogramInfo shape.
    nlohmann::json snapshot() const;

    // Any thread: the bin of a latency (for tests).
    static int bin_of(int64_t latency_ns);

private:
    struct Counters {
        std::atomic<uint64_t> requests{0}, bytes{0}, errors{0}, total_ns{0};
        std::array<std::atomic<uint64_t>, kBins> bins{};
    };
    std::array<Counters, size_t(ExportOp::count)> ops_;
};

}  // namespace ioplane
