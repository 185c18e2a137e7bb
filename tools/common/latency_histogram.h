// Latencies (ns) in a log-linear histogram for the load tools (9pload,
// vublk): 64 buckets per power of two (under 1.6% error), fixed size whatever
// the run's length, O(1) to add, and mergeable, so that a total's
// percentiles come from per-thread histograms.
//
// Thread contract: plain value; one thread at a time.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

namespace ioplane::tools {

class LatencyHistogram {
public:
    void add(uint64_t ns) {
        buckets_[index(ns)]++;
        count_++;
        sum_ += ns;
        max_ = std::max(max_, ns);
    }
    void merge(const LatencyHistogram& o) {
        for (size_t i = 0; i < kBuckets; i++) buckets_[i] += o.buckets_[i];
        count_ += o.count_;
        sum_ += o.sum_;
        max_ = std::max(max_, o.max_);
    }
    uint64_t count() const { return count_; }
    double mean() const { return count_ ? double(sum_) / double(count_) : 0.0; }
    uint64_t max() const { return max_; }
    // The value below which a fraction q (0..1) of the samples lie: the
    // middle of the bucket holding that sample, at most max().
    uint64_t percentile(double q) const {
        if (count_ == 0) return 0;
        const uint64_t rank = std::clamp<uint64_t>(uint64_t(q * double(count_) + 0.5), 1, count_);
        uint64_t seen = 0;
        for (size_t i = 0; i < kBuckets; i++) {
            seen += buckets_[i];
            if (seen >= rank) return std::min(middle(i), max_);
        }
        return max_;
    }

    // Bucket arithmetic, public for the tests. Values under 128 have a
    // bucket each; above, the top kSubBits+1 bits select the bucket.
    static constexpr unsigned kSubBits = 6;
    static size_t index(uint64_t v) {
        if (v < (2u << kSubBits)) return size_t(v);
        const unsigned shift = unsigned(std::bit_width(v)) - 1 - kSubBits;  // v >> shift in [64, 128)
        return size_t((shift + 1) << kSubBits) + size_t((v >> shift) - (1u << kSubBits));
    }
    static uint64_t middle(size_t i) {
        if (i < (2u << kSubBits)) return i;
        const unsigned shift = unsigned(i >> kSubBits) - 1;
        const uint64_t low = (uint64_t(i & ((1u << kSubBits) - 1)) + (1u << kSubBits)) << shift;
        return low + (uint64_t(1) << shift) / 2;
    }

private:
    static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;
    std::array<uint64_t, kBuckets> buckets_{};
    uint64_t count_ = 0;
    uint64_t sum_ = 0;
    uint64_t max_ = 0;
};

}  // namespace ioplane::tools
