// GuestMemory: the front end's memory regions (SET_MEM_TABLE) mapped into
// this process, and the translation of guest-physical addresses (descriptor
// buffers) and front-end user addresses (ring locations) into pointers here.
// Every translation checks that the whole range lies in one region; a range
// that does not is refused, never clamped.
//
// A table is immutable once mapped. A new SET_MEM_TABLE builds a new one; the
// old one is unmapped when its last holder (a stopped queue, the session)
// lets go, which happens only after the queues using it are stopped.
//
// Thread contract: map() in any thread; the const members from any thread
// (the object is immutable).
#pragma once

#include <sys/uio.h>

#include <memory>
#include <span>
#include <vector>

#include "ioplane/core/unique_fd.h"
#include "protocol.h"

namespace ioplane::vhost_user {

class GuestMemory {
public:
    // mmaps each region's fd (MAP_SHARED, read-write). Refuses empty or
    // overlapping regions, address arithmetic that wraps, and a region that
    // reaches past the end of its file (touching such a page would raise
    // SIGBUS in the daemon).
    static Result<std::shared_ptr<const GuestMemory>> map(std::span<const MemRegion> regions,
                                                          std::span<UniqueFd> fds);
    ~GuestMemory();
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;

    // A pointer to guest-physical [gpa, gpa+len) if it lies in one region.
    void* gpa_to_host(uint64_t gpa, uint64_t len) const;
    // A pointer to front-end user address range [uaddr, uaddr+len).
    void* uaddr_to_host(uint64_t uaddr, uint64_t len) const;
    // Appends iovecs covering guest-physical [gpa, gpa+len), split where it
    // crosses from one region into the next. False if a byte is unmapped or
    // `out` would grow past `max_iovecs`.
    bool gpa_to_iovecs(uint64_t gpa, uint64_t len, std::vector<iovec>& out, size_t max_iovecs) const;

    size_t region_count() const { return regions_.size(); }

private:
    struct Region {
        MemRegion desc;
        uint8_t* host = nullptr;  // desc.guest_addr maps here
        void* mapping = nullptr;  // what munmap gets
        size_t mapping_len = 0;
    };
    GuestMemory() = default;
    const Region* find_gpa(uint64_t gpa) const;

    std::vector<Region> regions_;
};

}  // namespace ioplane::vhost_user
