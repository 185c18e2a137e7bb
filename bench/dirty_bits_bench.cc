// DirtyBits on large devices: what the operations that jobs, exports and
// the request path use cost, against a plain word scan (what a bitmap
// without summaries would do) as the reference. One thread, CPU time.
//
//   dirty_bits_bench            prints one line per case: ns per operation
//
// Cases (1 TiB at 64 KiB = 16M chunks unless said):
//   set1        marking one random chunk (a 4 KiB write)
//   set1-again  marking a chunk already dirty (a rewrite)
//   next-dirty  next_dirty from a random offset: empty, 16 dirty chunks,
//               and the same with a plain word scan
//   next-clean  next_clean from a random offset, all dirty but 16 chunks,
//               and the plain scan
//   walk        every dirty extent of a bitmap with 10000 scattered ones
//   merge       OR of two bitmaps: same granularity, 4 KiB into 64 KiB
//   serialize   the whole bit array (2 MiB)
//   clear       reset of the whole bitmap
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <functional>
#include <random>
#include <vector>

#include "ioplane/block/dirty_bits.h"

using ioplane::block::DirtyBits;

namespace {

constexpr uint64_t KiB = 1024, TiB = uint64_t{1} << 40;
constexpr uint64_t kGran = 64 * KiB;

int64_t cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ns per call of `fn` over `n` calls; the median of 5 rounds.
double time_per_op(int n, const std::function<void(int)>& fn) {
    std::vector<double> rounds;
    for (int r = 0; r < 5; r++) {
        const int64_t start = cpu_ns();
        for (int i = 0; i < n; i++) fn(i);
        rounds.push_back(double(cpu_ns() - start) / n);
    }
    std::sort(rounds.begin(), rounds.end());
    return rounds[2];
}

// The reference: the first set (or clear) bit at or after chunk `i` by
// scanning the words of a plain bit array.
uint64_t scan(const std::vector<uint64_t>& words, uint64_t i, bool want_set) {
    for (uint64_t w = i / 64; w < words.size(); w++) {
        uint64_t v = want_set ? words[w] : ~words[w];
        if (w == i / 64) v &= ~uint64_t{0} << (i % 64);
        if (v) return w * 64 + uint64_t(std::countr_zero(v));
    }
    return UINT64_MAX;
}

volatile uint64_t sink;

void report(const char* name, double ns) { std::printf("%-28s %12.1f ns\n", name, ns); }

}  // namespace

int main() {
    std::mt19937_64 rng(1);
    const uint64_t chunks = TiB / kGran;
    std::vector<uint64_t> offsets(1 << 16);
    for (auto& o : offsets) o = rng() % TiB;
    auto offset = [&](int i) { return offsets[size_t(i) % offsets.size()]; };

    DirtyBits empty(TiB, kGran);
    report("next-dirty empty", time_per_op(100000, [&](int i) { sink = empty.next_dirty(offset(i)).value_or(0); }));
    std::vector<uint64_t> plain(chunks / 64, 0);
    report("next-dirty empty, scan", time_per_op(20, [&](int i) { sink = scan(plain, offset(i) / kGran, true); }));

    DirtyBits sparse(TiB, kGran);
    for (int k = 0; k < 16; k++) {
        const uint64_t at = rng() % TiB;
        sparse.set(at, 1);
        plain[at / kGran / 64] |= uint64_t{1} << (at / kGran % 64);
    }
    report("next-dirty 16 bits", time_per_op(100000, [&](int i) { sink = sparse.next_dirty(offset(i)).value_or(0); }));
    report("next-dirty 16 bits, scan", time_per_op(20, [&](int i) { sink = scan(plain, offset(i) / kGran, true); }));

    DirtyBits full(TiB, kGran);
    full.set_all();
    std::vector<uint64_t> plain_full(chunks / 64, ~uint64_t{0});
    for (int k = 0; k < 16; k++) {
        const uint64_t at = rng() % TiB;
        full.reset(at / kGran * kGran, kGran);
        plain_full[at / kGran / 64] &= ~(uint64_t{1} << (at / kGran % 64));
    }
    report("next-clean 16 holes", time_per_op(100000, [&](int i) { sink = full.next_clean(offset(i)).value_or(0); }));
    report("next-clean 16 holes, scan",
           time_per_op(20, [&](int i) { sink = scan(plain_full, offset(i) / kGran, false); }));

    DirtyBits marks(TiB, kGran);
    report("set1", time_per_op(1000000, [&](int i) { marks.set(offset(i), 4096); }));
    report("set1-again", time_per_op(1000000, [&](int i) { marks.set(offset(i), 4096); }));
    report("test", time_per_op(1000000, [&](int i) { sink = marks.test(offset(i)); }));

    DirtyBits scattered(TiB, kGran);
    for (int k = 0; k < 10000; k++) scattered.set(rng() % TiB, 1);
    report("walk 10000 extents", time_per_op(20, [&](int) {
               uint64_t pos = 0, n = 0;
               while (auto e = scattered.next_dirty_extent(pos)) {
                   pos = e->offset + e->bytes;
                   n++;
               }
               sink = n;
           }));

    DirtyBits target(TiB, kGran);
    report("merge 64K into 64K", time_per_op(20, [&](int) { target.merge(scattered); }));
    DirtyBits fine(TiB, 4 * KiB);  // 256M chunks: 32 MiB
    for (int k = 0; k < 10000; k++) fine.set(rng() % TiB, 1);
    report("merge 4K (10000) into 64K", time_per_op(20, [&](int) { target.merge(fine); }));

    std::vector<uint8_t> out(scattered.serialized_size());
    report("serialize 2 MiB", time_per_op(20, [&](int) { scattered.serialize(0, out); }));
    report("deserialize 2 MiB", time_per_op(20, [&](int) { sink = bool(target.deserialize(0, out)); }));
    report("clear", time_per_op(20, [&](int) { target.clear(); }));
    report("set_all", time_per_op(20, [&](int) { target.set_all(); }));
    std::printf("memory for 1 TiB at 64 KiB: %llu bytes (bits %llu)\n",
                (unsigned long long)DirtyBits::memory_needed(TiB, kGran), (unsigned long long)(chunks / 8));
    return 0;
}
