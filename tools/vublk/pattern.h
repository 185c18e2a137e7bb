// The data --verify writes and checks. Every 512-byte sector carries a
// header {magic, its own byte offset on the device, the write's generation,
// the run's seed} followed by a pseudo-random stream derived from the same
// three numbers, so a read-back names what it found: data from another
// offset (a misdirected write, or a GPA/user-address mix-up), an older
// generation (a lost write), another run, zeroes, or garbage.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ioplane::vublk {

// `buf` (a multiple of 512 bytes) as written to byte offset `offset`.
void fill_pattern(std::span<uint8_t> buf, uint64_t offset, uint32_t generation, uint32_t seed);

// nullopt when `buf` is what fill_pattern wrote; else what is wrong, for a
// message ("sector at +1024 holds offset 8192 generation 3, expected ...").
std::optional<std::string> check_pattern(std::span<const uint8_t> buf, uint64_t offset, uint32_t generation,
                                         uint32_t seed);

}  // namespace ioplane::vublk
