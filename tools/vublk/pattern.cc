#include "pattern.h"

#include <algorithm>
#include <cstring>

namespace ioplane::vublk {

namespace {

constexpr uint64_t kMagic = 0x6b6c627576706f69;  // "iopvublk"
constexpr size_t kSector = 512;

struct SectorHeader {
    uint64_t magic;
    uint64_t offset;
    uint32_t generation;
    uint32_t seed;
};

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
    x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
    return x ^ (x >> 31);
}

void fill_sector(uint8_t* s, uint64_t offset, uint32_t generation, uint32_t seed) {
    const SectorHeader h{kMagic, offset, generation, seed};
    std::memcpy(s, &h, sizeof h);
    uint64_t x = mix(offset ^ (uint64_t(generation) << 32) ^ seed);
    for (size_t i = sizeof h; i < kSector; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift64
        std::memcpy(s + i, &x, 8);
    }
}

std::string num(uint64_t v) { return std::to_string(v); }

}  // namespace

void fill_pattern(std::span<uint8_t> buf, uint64_t offset, uint32_t generation, uint32_t seed) {
    for (size_t at = 0; at + kSector <= buf.size(); at += kSector) fill_sector(buf.data() + at, offset + at, generation, seed);
}

std::optional<std::string> check_pattern(std::span<const uint8_t> buf, uint64_t offset, uint32_t generation,
                                         uint32_t seed) {
    uint8_t want[kSector];
    for (size_t at = 0; at + kSector <= buf.size(); at += kSector) {
        const uint8_t* got = buf.data() + at;
        fill_sector(want, offset + at, generation, seed);
        if (std::memcmp(got, want, kSector) == 0) continue;
        const std::string where = "sector at byte offset " + num(offset + at);
        const std::string expected = " (expected offset " + num(offset + at) + " generation " + num(generation) + ")";
        if (std::all_of(got, got + kSector, [](uint8_t b) { return b == 0; })) return where + " reads as zeroes" + expected;
        SectorHeader h;
        std::memcpy(&h, got, sizeof h);
        if (h.magic != kMagic) return where + " holds no pattern header" + expected;
        if (h.seed != seed) return where + " holds data of another run (seed " + num(h.seed) + ")" + expected;
        if (h.offset != offset + at || h.generation != generation)
            return where + " holds offset " + num(h.offset) + " generation " + num(h.generation) + expected;
        const size_t i = size_t(std::mismatch(got, got + kSector, want).first - got);
        return where + ": the header is right but byte " + num(i) + " of the sector differs";
    }
    return std::nullopt;
}

}  // namespace ioplane::vublk
