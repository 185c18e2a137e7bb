// The "guest" memory the front end shares with the back end: one or more
// memfd regions, each mapped MAP_SHARED here and described to the back end
// with SET_MEM_TABLE. Guest-physical addresses (GPAs) start at kGpaBase and
// leave a hole between regions, so they are never equal to this process's
// addresses and never contiguous across regions: a back end that confuses a
// GPA with a user address, or assumes one flat region, fails.
//
// Allocation is a bump allocator, round-robin over the regions so that every
// region holds rings and buffers when there are several; nothing is freed
// before the whole memory goes away.
//
// Thread contract: create and allocate from one thread; afterwards the
// mapped bytes are shared with the back end and the threads that own the
// queues placed in them.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ioplane::vublk {

inline constexpr uint64_t kGpaBase = 0x100000;
// Space left unmapped (in GPA terms) after each region.
inline constexpr uint64_t kGpaHole = 2 << 20;

struct GuestRegion {
    int fd = -1;
    uint8_t* host = nullptr;  // this process's mapping: the region's "user address"
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint64_t used = 0;  // bump pointer
};

// A piece of guest memory: where this process sees it and what the back end
// is told (descriptors carry GPAs).
struct GuestBuffer {
    uint8_t* host = nullptr;
    uint64_t gpa = 0;
    uint64_t size = 0;
};

class GuestMemory {
public:
    // `total` bytes (rounded up to pages) split evenly over `regions` memfds.
    static std::expected<GuestMemory, std::string> create(uint64_t total, unsigned regions);
    GuestMemory(GuestMemory&& other) noexcept;
    GuestMemory& operator=(GuestMemory&&) = delete;
    GuestMemory(const GuestMemory&) = delete;
    ~GuestMemory();

    // `size` bytes aligned to `align` (a power of two), zeroed, within one
    // region. Fails when no region has room.
    std::expected<GuestBuffer, std::string> allocate(uint64_t size, uint64_t align);

    // The GPA of a byte of this memory, or nullopt when `p` is not in it.
    std::optional<uint64_t> gpa_of(const void* p) const;
    // This process's pointer for `len` bytes at `gpa`, or nullptr when they
    // are not inside one region.
    uint8_t* host_of(uint64_t gpa, uint64_t len) const;

    std::span<const GuestRegion> regions() const { return regions_; }

private:
    GuestMemory() = default;
    std::vector<GuestRegion> regions_;
    size_t next_ = 0;  // the region the next allocation tries first
};

}  // namespace ioplane::vublk
