// libFuzzer target over DirtyBits' deserialiser (the code that will read
// qcow2 bitmap data, which comes from untrusted images). The input chooses
// a bitmap's shape and then a sequence of pieces of serialised data (and
// all-zero / all-one fills, as qcow2's unallocated bitmap clusters read) at
// fuzzed positions, some of them out of range (they must be refused),
// with resizes between. After each step the bitmap must agree with itself:
// its count with the population of its serialised form, test() with each
// bit, the summaries' searches with a plain scan, and bits past the last
// chunk zero; at the end, a copy made from the serialised form serialises
// the same.
//
// Input: byte 0 granularity (512 << (b % 16)), bytes 1-4 the length (up
// to 4 MiB, any byte count); then steps of 5 bytes (kind, position 16-bit,
// size 16-bit), a "data" step followed by its bytes.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "ioplane/block/dirty_bits.h"

using ioplane::block::DirtyBits;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

uint64_t chunk_bit(const std::vector<uint8_t>& data, uint64_t c) { return (data[c / 8] >> (c % 8)) & 1; }

void check_consistent(const DirtyBits& d) {
    std::vector<uint8_t> data(d.serialized_size());
    d.serialize(0, data);
    uint64_t pop = 0;
    for (uint8_t b : data) pop += uint64_t(std::popcount(b));
    check(pop == d.dirty_chunks());
    const uint64_t chunks = d.chunks(), g = d.granularity();
    if (chunks % 8) check((data.back() >> (chunks % 8)) == 0);
    // What the searches must find from each chunk, by a backward scan.
    std::vector<uint64_t> next_set(chunks + 1, chunks), next_clear(chunks + 1, chunks);
    for (uint64_t c = chunks; c-- > 0;) {
        next_set[c] = chunk_bit(data, c) ? c : next_set[c + 1];
        next_clear[c] = chunk_bit(data, c) ? next_clear[c + 1] : c;
    }
    for (uint64_t c = 0; c < chunks; c++) {
        check(d.test(c * g) == bool(chunk_bit(data, c)));
        auto nd = d.next_dirty(c * g), nc = d.next_clean(c * g);
        check(nd ? *nd == next_set[c] * g : next_set[c] == chunks);
        check(nc ? *nc == next_clear[c] * g : next_clear[c] == chunks);
    }
    uint64_t seen = 0, pos = 0;
    while (auto e = d.next_dirty_extent(pos)) {
        check(e->bytes > 0 && e->offset >= pos && e->offset + e->bytes <= d.length());
        seen += (e->bytes + g - 1) / g;
        pos = e->offset + e->bytes;
    }
    check(seen == d.dirty_chunks());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* in, size_t size) {
    if (size < 5) return 0;
    const uint64_t granularity = uint64_t{512} << (in[0] % 16);
    // Up to 4 MiB: 8192 chunks at 512 B, every one of them checked after each step.
    const uint64_t length = (uint64_t(in[1]) | uint64_t(in[2] & 0x0f) << 8) * 1024 + uint64_t(in[3]) * 4 + in[4] % 4;
    DirtyBits d(length, granularity);
    std::span<const uint8_t> rest(in + 5, size - 5);
    while (rest.size() >= 5) {
        const uint8_t kind = rest[0] % 4;
        const uint64_t pos = uint64_t(rest[1]) | uint64_t(rest[2]) << 8;
        const uint64_t n = uint64_t(rest[3]) | uint64_t(rest[4]) << 8;
        rest = rest.subspan(5);
        const bool fits = pos <= d.serialized_size() && n <= d.serialized_size() - pos;
        if (kind == 0) {
            const auto piece = rest.subspan(0, std::min<size_t>(n, rest.size()));
            rest = rest.subspan(piece.size());
            const bool piece_fits = pos <= d.serialized_size() && piece.size() <= d.serialized_size() - pos;
            check(bool(d.deserialize(pos, piece)) == piece_fits);
        } else if (kind == 1 || kind == 2) {
            check(bool(d.deserialize_fill(pos, n, kind == 2)) == fits);
        } else {
            d.resize((pos << 16 | n) * 64 % (length + 1 + 1024 * granularity));
        }
        check_consistent(d);
    }
    std::vector<uint8_t> data(d.serialized_size());
    d.serialize(0, data);
    DirtyBits copy(d.length(), granularity);
    check(bool(copy.deserialize(0, data)));
    std::vector<uint8_t> again(copy.serialized_size());
    copy.serialize(0, again);
    check(again == data && copy.dirty_chunks() == d.dirty_chunks());
    return 0;
}
