// virtio-blk requests in guest memory: one BlkSlot per request that can be
// outstanding, holding the request header, the status byte, the
// discard/write-zeroes segments, an indirect descriptor table and a data
// buffer; prepare() fills them for a request and returns the chain's
// segments (virtio-blk.tex, "Device Operation"):
//   header (device reads) | data (reads or writes, 1..N buffers) | status (device writes)
// The status byte is set to 0xff before each request, so one the device
// never wrote is caught as an invalid status rather than read as OK.
//
// Thread contract: a slot belongs to the thread that drives its queue.
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <span>
#include <string>

#include "guest_memory.h"
#include "split_ring.h"
#include "virtio_defs.h"

namespace ioplane::vublk {

enum class BlkOp : uint8_t { kRead, kWrite, kFlush, kGetId, kDiscard, kWriteZeroes };
const char* op_name(BlkOp op);
// "OK", "IOERR", "UNSUPP", or "invalid status N".
std::string status_name(uint8_t status);

struct BlkRange {
    uint64_t sector;
    uint32_t sectors;
};

struct BlkRequest {
    BlkOp op = BlkOp::kRead;
    uint64_t sector = 0;            // read, write
    uint32_t bytes = 0;             // read, write: data length, at most the slot's capacity
    uint16_t data_segments = 1;     // read, write: data split over this many descriptors
    std::span<const BlkRange> ranges;  // discard, write zeroes: 1..kMaxRanges
    bool unmap = false;             // write zeroes: the unmap flag
};

class BlkSlot {
public:
    static constexpr size_t kMaxDataSegments = 16;
    static constexpr size_t kMaxRanges = 4;
    static constexpr size_t kMaxSegments = kMaxDataSegments + 2;

    // A slot whose data buffer holds `data_capacity` bytes (page aligned).
    static std::expected<BlkSlot, std::string> allocate(GuestMemory& mem, uint32_t data_capacity);

    // Writes the header (and ranges) and poisons the status; returns the
    // chain's segments, valid until the next prepare(). Fails for a request
    // the slot cannot hold.
    std::expected<std::span<const Segment>, std::string> prepare(const BlkRequest& r);
    // Bytes the device should report having written (the used element's len).
    uint32_t expected_used_len() const { return writable_bytes_; }

    uint8_t status() const { return *status_; }
    uint8_t* data() { return data_.host; }
    const uint8_t* data() const { return data_.host; }
    uint32_t data_capacity() const { return uint32_t(data_.size); }
    IndirectTable indirect() const { return {indirect_, indirect_gpa_, uint16_t(kMaxSegments)}; }

private:
    BlkSlot() = default;
    GuestBuffer control_{};  // header, status, ranges, indirect table
    GuestBuffer data_{};
    BlkReqHeader* header_ = nullptr;
    uint8_t* status_ = nullptr;
    BlkDiscardWriteZeroes* ranges_ = nullptr;
    VirtqDesc* indirect_ = nullptr;
    uint64_t indirect_gpa_ = 0;
    std::array<Segment, kMaxSegments> segs_{};
    uint32_t writable_bytes_ = 0;
};

}  // namespace ioplane::vublk
