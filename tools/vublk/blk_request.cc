#include "blk_request.h"

#include <algorithm>

namespace ioplane::vublk {

namespace {

// Layout of a slot's control block.
constexpr uint64_t kHeaderOff = 0;
constexpr uint64_t kStatusOff = 16;
constexpr uint64_t kRangesOff = 32;
constexpr uint64_t kIndirectOff = kRangesOff + BlkSlot::kMaxRanges * sizeof(BlkDiscardWriteZeroes);
constexpr uint64_t kControlBytes = kIndirectOff + BlkSlot::kMaxSegments * sizeof(VirtqDesc);
static_assert(kIndirectOff % 16 == 0, "descriptor tables are 16-byte aligned");

uint32_t type_of(BlkOp op) {
    switch (op) {
    case BlkOp::kRead: return kBlkTIn;
    case BlkOp::kWrite: return kBlkTOut;
    case BlkOp::kFlush: return kBlkTFlush;
    case BlkOp::kGetId: return kBlkTGetId;
    case BlkOp::kDiscard: return kBlkTDiscard;
    case BlkOp::kWriteZeroes: return kBlkTWriteZeroes;
    }
    return ~0u;
}

}  // namespace

const char* op_name(BlkOp op) {
    switch (op) {
    case BlkOp::kRead: return "read";
    case BlkOp::kWrite: return "write";
    case BlkOp::kFlush: return "flush";
    case BlkOp::kGetId: return "get-id";
    case BlkOp::kDiscard: return "discard";
    case BlkOp::kWriteZeroes: return "write-zeroes";
    }
    return "?";
}

std::string status_name(uint8_t status) {
    switch (status) {
    case kBlkSOk: return "OK";
    case kBlkSIoErr: return "IOERR";
    case kBlkSUnsupp: return "UNSUPP";
    }
    return "invalid status " + std::to_string(status) + (status == 0xff ? " (never written)" : "");
}

std::expected<BlkSlot, std::string> BlkSlot::allocate(GuestMemory& mem, uint32_t data_capacity) {
    BlkSlot s;
    auto control = mem.allocate(kControlBytes, 64);
    if (!control) return std::unexpected(control.error());
    auto data = mem.allocate(data_capacity ? data_capacity : 1, 4096);
    if (!data) return std::unexpected(data.error());
    s.control_ = *control;
    s.data_ = *data;
    s.data_.size = data_capacity;
    s.header_ = reinterpret_cast<BlkReqHeader*>(control->host + kHeaderOff);
    s.status_ = control->host + kStatusOff;
    s.ranges_ = reinterpret_cast<BlkDiscardWriteZeroes*>(control->host + kRangesOff);
    s.indirect_ = reinterpret_cast<VirtqDesc*>(control->host + kIndirectOff);
    s.indirect_gpa_ = control->gpa + kIndirectOff;
    return s;
}

std::expected<std::span<const Segment>, std::string> BlkSlot::prepare(const BlkRequest& r) {
    size_t n = 0;
    *header_ = BlkReqHeader{type_of(r.op), 0, 0};
    segs_[n++] = {control_.gpa + kHeaderOff, sizeof(BlkReqHeader), false};
    switch (r.op) {
    case BlkOp::kRead:
    case BlkOp::kWrite: {
        if (r.bytes == 0 || r.bytes > data_.size) return std::unexpected("data length out of the slot's range");
        if (r.data_segments == 0 || r.data_segments > kMaxDataSegments || r.data_segments > r.bytes)
            return std::unexpected("bad number of data segments");
        header_->sector = r.sector;
        // Pieces of whole sectors, as a guest's page-based segments are;
        // the last one takes the remainder.
        const uint32_t piece = std::max<uint32_t>(r.bytes / r.data_segments / kSectorSize * kSectorSize, 1);
        for (uint32_t i = 0, at = 0; i < r.data_segments; i++) {
            const uint32_t len = i + 1 == r.data_segments ? r.bytes - at : piece;
            segs_[n++] = {data_.gpa + at, len, r.op == BlkOp::kRead};
            at += len;
        }
        break;
    }
    case BlkOp::kGetId:
        if (data_.size < kBlkIdBytes) return std::unexpected("data buffer under 20 bytes");
        segs_[n++] = {data_.gpa, kBlkIdBytes, true};
        break;
    case BlkOp::kDiscard:
    case BlkOp::kWriteZeroes:
        if (r.ranges.empty() || r.ranges.size() > kMaxRanges) return std::unexpected("bad number of ranges");
        for (size_t i = 0; i < r.ranges.size(); i++)
            ranges_[i] = BlkDiscardWriteZeroes{r.ranges[i].sector, r.ranges[i].sectors,
                                               r.op == BlkOp::kWriteZeroes && r.unmap ? kBlkWriteZeroesUnmap : 0};
        segs_[n++] = {control_.gpa + kRangesOff, uint32_t(r.ranges.size() * sizeof(BlkDiscardWriteZeroes)), false};
        break;
    case BlkOp::kFlush:
        break;
    }
    *status_ = 0xff;
    segs_[n++] = {control_.gpa + kStatusOff, 1, true};
    writable_bytes_ = 0;
    for (size_t i = 0; i < n; i++)
        if (segs_[i].device_writes) writable_bytes_ += segs_[i].len;
    return std::span<const Segment>(segs_.data(), n);
}

}  // namespace ioplane::vublk
