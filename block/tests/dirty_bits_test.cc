// DirtyBits: byte ranges onto chunks (unaligned ranges, the partial last
// chunk), searches, merges across granularities, resizes and qcow2's
// serialised form; and random operations checked against a plain
// vector<bool> model.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "ioplane/block/dirty_bits.h"

namespace ioplane::block {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, TiB = MiB * MiB;

// One bool per chunk, and the answers DirtyBits should give, computed the
// slow way.
struct Model {
    uint64_t length, gran;
    std::vector<bool> bits;
    Model(uint64_t length, uint64_t gran) : length(length), gran(gran), bits((length + gran - 1) / gran) {}

    void set(uint64_t offset, uint64_t bytes) {
        if (bytes == 0 || offset >= length) return;
        const uint64_t end = std::min(length, offset + bytes);
        for (uint64_t c = offset / gran; c * gran < end; c++) bits[c] = true;
    }
    void reset(uint64_t offset, uint64_t bytes) {
        if (bytes == 0 || offset >= length) return;
        const uint64_t end = std::min(length, offset + bytes);
        for (uint64_t c = offset / gran; c * gran < end; c++)
            if (c * gran >= offset && (std::min((c + 1) * gran, length) <= end)) bits[c] = false;
    }
    void resize(uint64_t len) {
        length = len;
        bits.resize((len + gran - 1) / gran);
    }
    uint64_t count() const { return uint64_t(std::count(bits.begin(), bits.end(), true)); }
    std::optional<uint64_t> next(bool dirty, uint64_t offset, uint64_t limit) const {
        if (offset >= length || limit == 0) return std::nullopt;
        const uint64_t end = limit > length - offset ? length : offset + limit;
        for (uint64_t c = offset / gran; c * gran < end; c++)
            if (bits[c] == dirty) return std::max(offset, c * gran);
        return std::nullopt;
    }
};

std::vector<DirtyExtent> all_extents(const DirtyBits& d) {
    std::vector<DirtyExtent> out;
    uint64_t pos = 0;
    while (auto e = d.next_dirty_extent(pos)) {
        out.push_back(*e);
        pos = e->offset + e->bytes;
    }
    return out;
}

void expect_same(const DirtyBits& d, const Model& m, std::mt19937_64& rng) {
    ASSERT_EQ(d.length(), m.length);
    ASSERT_EQ(d.chunks(), m.bits.size());
    ASSERT_EQ(d.dirty_chunks(), m.count());
    ASSERT_EQ(d.dirty_bytes(), m.count() * m.gran);
    for (uint64_t c = 0; c < m.bits.size(); c++) ASSERT_EQ(d.test(c * m.gran), m.bits[c]) << "chunk " << c;
    if (m.length == 0) return;
    for (int i = 0; i < 50; i++) {
        const uint64_t offset = rng() % (m.length + m.gran);
        const uint64_t limit = i % 5 == 0 ? UINT64_MAX : rng() % (m.length + 1);
        ASSERT_EQ(d.next_dirty(offset, limit), m.next(true, offset, limit)) << offset << " +" << limit;
        ASSERT_EQ(d.next_clean(offset, limit), m.next(false, offset, limit)) << offset << " +" << limit;
    }
    // Walking the extents finds exactly the dirty chunks.
    std::vector<bool> seen(m.bits.size());
    for (const DirtyExtent& e : all_extents(d)) {
        ASSERT_GT(e.bytes, 0u);
        for (uint64_t b = e.offset; b < e.offset + e.bytes; b += m.gran) seen[b / m.gran] = true;
        ASSERT_FALSE(d.test(e.offset + e.bytes)) << "an extent stops at a clean chunk or the end";
    }
    ASSERT_EQ(seen, m.bits);
}

TEST(DirtyBits, RangesTouchEveryChunkTheyTouchAndCountWholeChunks) {
    // 1 MiB + 1000 bytes at 64 KiB: 17 chunks, the last one 1000 bytes.
    DirtyBits d(MiB + 1000, 64 * KiB);
    EXPECT_EQ(d.chunks(), 17u);
    EXPECT_TRUE(d.empty());
    EXPECT_EQ(d.next_dirty(0), std::nullopt);
    EXPECT_EQ(d.next_clean(0), 0u);
    d.set(100, 1);
    EXPECT_TRUE(d.test(0));
    EXPECT_TRUE(d.test(64 * KiB - 1));
    EXPECT_FALSE(d.test(64 * KiB));
    EXPECT_EQ(d.dirty_bytes(), 64 * KiB);
    d.set(64 * KiB - 1, 2);  // straddles chunks 0 and 1
    EXPECT_TRUE(d.test(64 * KiB));
    EXPECT_EQ(d.dirty_chunks(), 2u);
    d.set(MiB + 999, 1);  // the partial last chunk counts whole, as QEMU counts it
    EXPECT_TRUE(d.test(MiB));
    EXPECT_EQ(d.dirty_bytes(), 3 * 64 * KiB);
    d.set(MiB + 1000, 10);  // past the end: nothing
    d.set(UINT64_MAX - 5, 10);
    EXPECT_EQ(d.dirty_chunks(), 3u);
    EXPECT_FALSE(d.test(MiB + 1000));
    d.set(10, UINT64_MAX);  // clipped, no overflow
    EXPECT_EQ(d.dirty_chunks(), 17u);
}

TEST(DirtyBits, ResetClearsOnlyWholeChunks) {
    DirtyBits d(MiB + 1000, 64 * KiB);
    d.set_all();
    EXPECT_EQ(d.dirty_chunks(), 17u);
    EXPECT_EQ(d.next_clean(0), std::nullopt);
    d.reset(100, 64 * KiB);  // neither chunk 0 nor 1 whole
    EXPECT_EQ(d.dirty_chunks(), 17u);
    d.reset(64 * KiB, 64 * KiB);
    EXPECT_FALSE(d.test(64 * KiB));
    EXPECT_EQ(d.next_clean(0), 64 * KiB);
    EXPECT_EQ(d.next_clean(70000), 70000u);
    d.reset(MiB, 1000);  // reaches the end: the partial chunk is whole
    EXPECT_FALSE(d.test(MiB));
    d.reset(MiB - 64 * KiB, UINT64_MAX);
    EXPECT_FALSE(d.test(MiB - 1));
    EXPECT_EQ(d.dirty_chunks(), 14u);
    d.clear();
    EXPECT_TRUE(d.empty());
    EXPECT_EQ(d.next_dirty(0), std::nullopt);
}

TEST(DirtyBits, SearchesHonourTheirWindow) {
    DirtyBits d(10 * MiB, 4 * KiB);
    d.set(MiB, 8 * KiB);
    d.set(5 * MiB, 4 * KiB);
    EXPECT_EQ(d.next_dirty(0), MiB);
    EXPECT_EQ(d.next_dirty(0, MiB), std::nullopt);  // [0, 1 MiB) has none
    EXPECT_EQ(d.next_dirty(0, MiB + 1), MiB);
    EXPECT_EQ(d.next_dirty(MiB + 5, 10), MiB + 5);  // inside a dirty chunk: the offset itself
    EXPECT_EQ(d.next_dirty(MiB + 8 * KiB), 5 * MiB);
    EXPECT_EQ(d.next_dirty(5 * MiB + 4 * KiB), std::nullopt);
    EXPECT_EQ(d.next_clean(MiB), MiB + 8 * KiB);
    EXPECT_EQ(d.next_clean(MiB, 8 * KiB), std::nullopt);
    EXPECT_EQ(d.next_dirty_extent(0), (DirtyExtent{MiB, 8 * KiB}));
    EXPECT_EQ(d.next_dirty_extent(0, UINT64_MAX, 4 * KiB), (DirtyExtent{MiB, 4 * KiB}));
    EXPECT_EQ(d.next_dirty_extent(MiB + 100, 1000), (DirtyExtent{MiB + 100, 1000}));
    EXPECT_EQ(d.next_dirty_extent(MiB + 8 * KiB), (DirtyExtent{5 * MiB, 4 * KiB}));
    EXPECT_EQ(d.next_dirty_extent(0, UINT64_MAX, 0), std::nullopt);
    EXPECT_EQ(d.run_at(0), (DirtyRun{false, MiB}));
    EXPECT_EQ(d.run_at(0, 100), (DirtyRun{false, 100}));
    EXPECT_EQ(d.run_at(MiB + 1), (DirtyRun{true, 8 * KiB - 1}));
    EXPECT_EQ(d.run_at(5 * MiB + 4 * KiB), (DirtyRun{false, 5 * MiB - 4 * KiB}));
}

// The summaries: far-apart bits in a 1 TiB bitmap are found from anywhere,
// and so are the holes of an almost full one.
TEST(DirtyBits, SummariesFindSparseBitsAndHolesInATebibyte) {
    DirtyBits d(TiB, 64 * KiB);  // 16M chunks
    EXPECT_EQ(d.next_dirty(0), std::nullopt);
    const std::vector<uint64_t> at = {0, 64 * KiB * 63, 64 * KiB * 64, 3 * MiB * MiB / 7 & ~(64 * KiB - 1),
                                      TiB - 64 * KiB};
    for (uint64_t a : at) d.set(a, 1);
    uint64_t pos = 0;
    for (uint64_t a : at) {
        auto n = d.next_dirty(pos);
        ASSERT_TRUE(n);
        EXPECT_EQ(*n, a);
        pos = *n + 64 * KiB;
    }
    EXPECT_EQ(d.next_dirty(pos), std::nullopt);
    d.set_all();
    EXPECT_EQ(d.next_clean(0), std::nullopt);
    d.reset(TiB / 2, 64 * KiB);
    d.reset(TiB - 64 * KiB, 64 * KiB);
    EXPECT_EQ(d.next_clean(0), TiB / 2);
    EXPECT_EQ(d.next_clean(TiB / 2 + 1), TiB / 2 + 1);
    EXPECT_EQ(d.next_clean(TiB / 2 + 64 * KiB), TiB - 64 * KiB);
    EXPECT_EQ(d.dirty_chunks(), (TiB >> 16) - 2);
}

TEST(DirtyBits, MergeAcrossGranularities) {
    // A finer source dirties the coarse chunks holding its bits.
    DirtyBits coarse(MiB, 64 * KiB), fine(MiB, 4 * KiB);
    fine.set(5000, 1);               // fine chunk 1: [4 KiB, 8 KiB)
    fine.set(200 * KiB, 8 * KiB);    // two fine chunks inside coarse chunk 3
    coarse.merge(fine);
    EXPECT_EQ(coarse.dirty_chunks(), 2u);
    EXPECT_TRUE(coarse.test(0));
    EXPECT_TRUE(coarse.test(3 * 64 * KiB));
    // A coarser source dirties whole chunks of its own size.
    DirtyBits fine2(MiB, 4 * KiB), coarse2(MiB, 64 * KiB);
    coarse2.set(64 * KiB + 1, 1);
    fine2.merge(coarse2);
    EXPECT_EQ(fine2.dirty_chunks(), 16u);
    EXPECT_EQ(fine2.next_dirty_extent(0), (DirtyExtent{64 * KiB, 64 * KiB}));
    // Same granularity, word by word; bits already set stay.
    DirtyBits a(MiB, 4 * KiB), b(MiB, 4 * KiB);
    a.set(0, 4 * KiB);
    b.set(MiB - 1, 1);
    a.merge(b);
    EXPECT_EQ(a.dirty_chunks(), 2u);
    EXPECT_EQ(a.next_dirty(4 * KiB), MiB - 4 * KiB);
    a.merge(a);  // itself: nothing changes
    EXPECT_EQ(a.dirty_chunks(), 2u);
    // Different lengths: only what both cover.
    DirtyBits small(100 * KiB, 4 * KiB), big(MiB, 4 * KiB);
    big.set_all();
    small.merge(big);
    EXPECT_EQ(small.dirty_chunks(), small.chunks());
    big.clear();
    big.merge(small);
    EXPECT_EQ(big.next_clean(0), 100 * KiB);
}

TEST(DirtyBits, ResizeDropsWhatFallsOffAndAddsCleanChunks) {
    DirtyBits d(MiB, 64 * KiB);
    d.set_all();
    d.resize(MiB / 2 + 100);  // 8 whole chunks and one partial, kept dirty
    EXPECT_EQ(d.length(), MiB / 2 + 100);
    EXPECT_EQ(d.chunks(), 9u);
    EXPECT_EQ(d.dirty_chunks(), 9u);
    d.resize(2 * MiB);  // the partial chunk grows, still dirty; the rest is clean
    EXPECT_EQ(d.chunks(), 32u);
    EXPECT_EQ(d.dirty_chunks(), 9u);
    EXPECT_EQ(d.next_clean(0), 9 * 64 * KiB);
    EXPECT_EQ(d.next_dirty(9 * 64 * KiB), std::nullopt);
    d.resize(64 * KiB * 64 * 70);  // across word and summary boundaries
    d.set(64 * KiB * 64 * 69, 1);
    EXPECT_EQ(d.next_dirty(9 * 64 * KiB), 64 * KiB * 64 * 69);
    d.resize(0);
    EXPECT_EQ(d.chunks(), 0u);
    EXPECT_TRUE(d.empty());
    EXPECT_EQ(d.next_dirty(0), std::nullopt);
    EXPECT_EQ(d.next_clean(0), std::nullopt);
}

TEST(DirtyBits, SerialisedFormIsQcow2sBitOrder) {
    DirtyBits d(100 * 512 + 1, 512);  // 101 chunks: 13 bytes, 3 bits used in the last
    EXPECT_EQ(d.serialized_size(), 13u);
    d.set(0, 1);          // chunk 0: byte 0 bit 0
    d.set(9 * 512, 1);    // chunk 9: byte 1 bit 1
    d.set(100 * 512, 1);  // chunk 100: byte 12 bit 4
    std::vector<uint8_t> out(16, 0xaa);
    d.serialize(0, out);
    EXPECT_EQ(out, (std::vector<uint8_t>{0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}));
    std::vector<uint8_t> part(3);
    d.serialize(11, part);
    EXPECT_EQ(part, (std::vector<uint8_t>{0, 0x10, 0}));
    // Bits past the last chunk are ignored on the way in.
    DirtyBits e(100 * 512 + 1, 512);
    const std::vector<uint8_t> tail = {0xff};
    ASSERT_TRUE(e.deserialize(12, tail));
    EXPECT_EQ(e.dirty_chunks(), 5u);  // chunks 96..100
    EXPECT_EQ(e.next_dirty(0), 96u * 512);
    // Past the end: refused, nothing changed.
    const std::vector<uint8_t> two = {1, 1};
    EXPECT_FALSE(e.deserialize(12, two));
    EXPECT_FALSE(e.deserialize(14, {}));
    EXPECT_FALSE(e.deserialize_fill(5, 9, true));
    EXPECT_FALSE(e.deserialize_fill(UINT64_MAX, 2, true));
    EXPECT_EQ(e.dirty_chunks(), 5u);
    ASSERT_TRUE(e.deserialize_fill(1, 2, true));  // chunks 8..23
    EXPECT_EQ(e.dirty_chunks(), 21u);
    ASSERT_TRUE(e.deserialize_fill(0, 13, false));
    EXPECT_TRUE(e.empty());
}

TEST(DirtyBits, SerialisationRoundTripsInPieces) {
    std::mt19937_64 rng(7);
    for (uint64_t length : {uint64_t{0}, uint64_t{1}, 4097 * KiB + 3, 64 * MiB - 512}) {
        DirtyBits d(length, 4 * KiB);
        for (int i = 0; i < 200 && length; i++) d.set(rng() % length, rng() % (64 * KiB));
        std::vector<uint8_t> whole(d.serialized_size());
        d.serialize(0, whole);
        // Read back in odd-sized pieces at odd offsets, with fills between.
        DirtyBits r(length, 4 * KiB);
        r.set_all();
        for (uint64_t pos = 0; pos < whole.size();) {
            const uint64_t n = std::min<uint64_t>(whole.size() - pos, 1 + rng() % 777);
            const bool all_zero = std::all_of(whole.begin() + ptrdiff_t(pos), whole.begin() + ptrdiff_t(pos + n),
                                              [](uint8_t b) { return b == 0; });
            if (all_zero) ASSERT_TRUE(r.deserialize_fill(pos, n, false));
            else ASSERT_TRUE(r.deserialize(pos, std::span(whole).subspan(pos, n)));
            pos += n;
        }
        std::vector<uint8_t> again(r.serialized_size());
        r.serialize(0, again);
        EXPECT_EQ(again, whole) << length;
        EXPECT_EQ(r.dirty_chunks(), d.dirty_chunks());
        EXPECT_EQ(all_extents(r), all_extents(d)) << length;
    }
}

TEST(DirtyBits, CopiesAreIndependent) {
    DirtyBits a(MiB, 4 * KiB);
    a.set(0, 1);
    DirtyBits b = a;
    b.set(MiB - 1, 1);
    EXPECT_EQ(a.dirty_chunks(), 1u);
    EXPECT_EQ(b.dirty_chunks(), 2u);
    a = b;
    EXPECT_EQ(a.next_dirty(4 * KiB), MiB - 4 * KiB);
}

// Random operations on bitmaps of random shapes, each step checked against
// the model: what the summaries and the count say must be what the bits say.
TEST(DirtyBits, RandomOperationsAgreeWithAPlainModel) {
    std::mt19937_64 rng(2024);
    for (int round = 0; round < 40; round++) {
        const uint64_t gran = uint64_t{512} << (rng() % 8);
        uint64_t length = rng() % (gran * 64 * 70);  // up to ~4500 chunks: two summary levels
        DirtyBits d(length, gran);
        Model m(length, gran);
        for (int step = 0; step < 60; step++) {
            const int op = int(rng() % 20);
            const uint64_t off = length ? rng() % (length + gran) : 0;
            const uint64_t bytes = rng() % 4 == 0 ? rng() % (length + 1) : rng() % (gran * 130);
            if (op < 9) {
                d.set(off, bytes);
                m.set(off, bytes);
            } else if (op < 17) {
                d.reset(off, bytes);
                m.reset(off, bytes);
            } else if (op == 17) {
                d.set_all();
                m.set(0, UINT64_MAX);
            } else if (op == 18) {
                length = rng() % (gran * 64 * 70);
                d.resize(length);
                m.resize(length);
            } else {
                DirtyBits other(length, std::max<uint64_t>(512, (gran << (rng() % 5)) >> 2));  // finer or coarser
                other.set(off, bytes);
                other.set(rng() % (length + 1), 1);
                d.merge(other);
                // The model: every chunk of `other`'s dirty extents.
                for (const DirtyExtent& e : all_extents(other)) m.set(e.offset, e.bytes);
            }
            ASSERT_NO_FATAL_FAILURE(expect_same(d, m, rng)) << "round " << round << " step " << step << " op " << op;
        }
    }
}

}  // namespace
}  // namespace ioplane::block
