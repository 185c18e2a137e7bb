// Rates, percentiles and the table of `ioplane-qmp top`.
#include "stats_table.h"

#include <gtest/gtest.h>

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

OpStats op(uint64_t requests, uint64_t bytes, uint64_t time_ns, std::vector<uint64_t> bins = {},
           std::vector<uint64_t> boundaries = {1000, 10000, 100000}) {
    OpStats s{requests, bytes, 0, time_ns, {}, std::move(bins)};
    if (!s.bins.empty()) s.boundaries = std::move(boundaries);
    return s;
}

TEST(ParseExportStats, ReadsTheReply) {
    auto reply = json::parse(R"([{"id": "e0", "type": "nbd", "node-name": "disk", "connections": 2,
        "ops": {"read": {"requests": 10, "bytes": 40960, "errors": 1, "total-time-ns": 5000,
                         "latency-histogram": {"boundaries": [1000, 10000], "bins": [4, 5, 1]}},
                "flush": {"requests": 3, "bytes": 0, "errors": 0, "total-time-ns": 30,
                          "latency-histogram": {"boundaries": [1000, 10000], "bins": [1, 2]}},
                "discard": {"requests": -1, "latency-histogram": {"boundaries": [5, 5], "bins": [0, 0, 0]}}}}])");
    auto stats = parse_export_stats(reply).value();
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(stats[0].id, "e0");
    EXPECT_EQ(stats[0].node_name, "disk");
    EXPECT_EQ(stats[0].connections, 2u);
    const OpStats& read = stats[0].ops.at("read");
    EXPECT_EQ(read.requests, 10u);
    EXPECT_EQ(read.bytes, 40960u);
    EXPECT_EQ(read.errors, 1u);
    EXPECT_EQ(read.total_time_ns, 5000u);
    EXPECT_EQ(read.bins, (std::vector<uint64_t>{4, 5, 1}));
    EXPECT_TRUE(stats[0].ops.at("flush").bins.empty()) << "one bin short: histogram dropped";
    EXPECT_EQ(stats[0].ops.at("discard").requests, 0u) << "negative count reads as 0";
    EXPECT_TRUE(stats[0].ops.at("discard").boundaries.empty()) << "boundaries not ascending";
    EXPECT_FALSE(parse_export_stats(json::object()).has_value());
    EXPECT_FALSE(parse_export_stats(json::parse("[1]")).has_value());
}

TEST(OpDelta, SubtractsAndDetectsResets) {
    auto d = op_delta(op(30, 300, 3000, {10, 10, 10, 0}), op(10, 100, 1000, {5, 5, 0, 0})).value();
    EXPECT_EQ(d.requests, 20u);
    EXPECT_EQ(d.bytes, 200u);
    EXPECT_EQ(d.total_time_ns, 2000u);
    EXPECT_EQ(d.bins, (std::vector<uint64_t>{5, 5, 10, 0}));
    EXPECT_FALSE(op_delta(op(5, 0, 0), op(6, 0, 0)).has_value());
    EXPECT_FALSE(op_delta(op(5, 0, 0, {1, 0, 0, 0}), op(5, 0, 0, {2, 0, 0, 0})).has_value());
    auto rebucketed = op_delta(op(5, 0, 0, {5, 0, 0, 0}), op(1, 0, 0, {1, 0, 0}, {1000, 2000})).value();
    EXPECT_EQ(rebucketed.requests, 4u);
    EXPECT_TRUE(rebucketed.bins.empty());
}

TEST(PercentileBound, UpperBoundOfTheCrossingBucket) {
    // 100 samples: 90 < 1us, 9 in [1us, 10us), 1 in [10us, 100us).
    EXPECT_EQ(percentile_bound({op(0, 0, 0, {90, 9, 1, 0})}, 99)->ns, 10000u);
    EXPECT_EQ(percentile_bound({op(0, 0, 0, {90, 8, 2, 0})}, 99)->ns, 100000u);
    EXPECT_EQ(percentile_bound({op(0, 0, 0, {99, 0, 0, 1})}, 99)->ns, 1000u);
    auto open = percentile_bound({op(0, 0, 0, {50, 0, 0, 50})}, 99).value();
    EXPECT_TRUE(open.open);
    EXPECT_EQ(open.ns, 100000u);
    EXPECT_FALSE(percentile_bound({op(0, 0, 0, {0, 0, 0, 0}), op(5, 0, 0)}, 99).has_value());
}

TEST(PercentileBound, MergesHistograms) {
    // Same boundaries: plain sum, 200 samples, 198th in the second bucket.
    EXPECT_EQ(percentile_bound({op(0, 0, 0, {100, 0, 0, 0}), op(0, 0, 0, {90, 10, 0, 0})}, 99)->ns, 10000u);
    // Different boundaries: [<500: 50] [<1000: 49] + [<2000: 1] -> 99 of 100 below 1000ns.
    EXPECT_EQ(percentile_bound({op(0, 0, 0, {50, 0}, {500}), op(0, 0, 0, {49, 1, 0}, {1000, 2000})}, 99)->ns, 1000u);
}

ExportStats export_stats(std::string id, std::map<std::string, OpStats> ops) {
    return ExportStats{id, "node-" + id, 1, std::move(ops)};
}

TEST(ComputeRows, RatesOverTheInterval) {
    std::vector<ExportStats> before{export_stats("e0", {{"read", op(100, 1000000, 0, {0, 0, 0, 0})},
                                                        {"write", op(0, 0, 0)},
                                                        {"flush", op(10, 0, 0)}}),
                                    export_stats("gone", {})};
    std::vector<ExportStats> after{export_stats("e0", {{"read", op(300, 5000000, 2000000, {150, 48, 2, 0})},
                                                       {"write", op(50, 4000000, 1000000)},
                                                       {"flush", op(20, 0, 0)},
                                                       {"discard", op(10, 0, 0)}}),
                                   export_stats("new", {{"read", op(1, 1, 1)}})};
    auto rows = compute_rows(before, after, 2.0);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[1].id, "new");
    EXPECT_FALSE(rows[1].rates.has_value());
    const Rates& r = rows[0].rates.value();
    EXPECT_DOUBLE_EQ(r.read_iops, 100);
    EXPECT_DOUBLE_EQ(r.write_iops, 25);
    EXPECT_DOUBLE_EQ(r.read_mb_per_s, 2);
    EXPECT_DOUBLE_EQ(r.write_mb_per_s, 2);
    EXPECT_DOUBLE_EQ(r.other_ops_per_s, 10);  // 10 flushes + 10 discards (new op type: counted from zero)
    EXPECT_DOUBLE_EQ(r.mean_latency_us.value(), 3000000.0 / 270 / 1000);
    EXPECT_EQ(r.p99->ns, 10000u);  // 198 of 200 reads under 10us: exactly 99%, which counts as crossing
    EXPECT_EQ(r.errors, 0u);
}

TEST(ComputeRows, ResetCountersAndIdleExports) {
    auto rows = compute_rows({export_stats("e0", {{"read", op(100, 0, 0)}}), export_stats("idle", {})},
                             {export_stats("e0", {{"read", op(5, 0, 0)}}), export_stats("idle", {})}, 1.0);
    EXPECT_FALSE(rows[0].rates.has_value());
    ASSERT_TRUE(rows[1].rates.has_value());
    EXPECT_FALSE(rows[1].rates->mean_latency_us.has_value());
    EXPECT_FALSE(rows[1].rates->p99.has_value());
}

TEST(RenderTable, AlignsColumnsAndMarksUnknowns) {
    Rates r{1234.5, 0, 5.05, 0, 2, 87.25, LatencyBound{128000, false}, 3};
    Rates open{0, 0, 0, 0, 0, std::nullopt, LatencyBound{1000000, true}, 0};
    std::vector<ExportRow> rows{{"e0", "disk", 2, r}, {"export-long", "n", 0, std::nullopt}, {"e2", "d", 1, open}};
    EXPECT_EQ(render_table(rows),
              "ID           NODE  CONN  RD-IOPS  WR-IOPS  RD-MB/s  WR-MB/s  OTHER/s  LAT-us   P99-us  ERRORS\n"
              "e0           disk     2   1234.5      0.0     5.05     0.00      2.0    87.2    128.0       3\n"
              "export-long  n        0        -        -        -        -        -       -        -       -\n"
              "e2           d        1      0.0      0.0     0.00     0.00      0.0       -  >1000.0       0\n");
    EXPECT_EQ(render_table({}), "ID  NODE  CONN  RD-IOPS  WR-IOPS  RD-MB/s  WR-MB/s  OTHER/s  LAT-us  P99-us  ERRORS\n");
}

}  // namespace
}  // namespace ioplane::qmp_tool
