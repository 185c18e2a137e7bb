#include "device_limits.h"

#include <algorithm>

#include "blk_request.h"

namespace ioplane::vublk {

std::expected<DeviceLimits, std::string> DeviceLimits::from(const Negotiation& n) {
    if (!n.config)
        return std::unexpected("the back end has no config space (protocol feature CONFIG not offered): "
                               "the device's capacity is unknown");
    const BlkConfig& c = *n.config;
    DeviceLimits l;
    l.capacity_bytes = c.capacity * kSectorSize;
    if (n.has(kBlkFSizeMax) && c.size_max) l.size_max = c.size_max;
    if (n.has(kBlkFSegMax) && c.seg_max) l.seg_max = c.seg_max;
    if (n.has(kBlkFBlkSize) && c.blk_size >= kSectorSize) l.blk_size = c.blk_size;
    l.read_only = n.has(kBlkFRo);
    l.flush = n.has(kBlkFFlush);
    if (n.has(kBlkFDiscard)) {
        l.discard = true;
        l.max_discard_sectors = c.max_discard_sectors;
        l.max_discard_seg = c.max_discard_seg;
        l.discard_sector_alignment = c.discard_sector_alignment;
    }
    if (n.has(kBlkFWriteZeroes)) {
        l.write_zeroes = true;
        l.max_write_zeroes_sectors = c.max_write_zeroes_sectors;
        l.max_write_zeroes_seg = c.max_write_zeroes_seg;
        l.write_zeroes_may_unmap = c.write_zeroes_may_unmap != 0;
    }
    return l;
}

std::expected<uint16_t, std::string> DeviceLimits::segments_for(uint32_t bytes, uint16_t wanted) const {
    // As BlkSlot::prepare() splits: whole sectors, the last piece taking the remainder.
    auto largest_piece = [bytes](uint32_t segs) {
        const uint32_t piece = std::max<uint32_t>(bytes / segs / kSectorSize * kSectorSize, 1);
        return bytes - piece * (segs - 1);
    };
    uint32_t segs = wanted;
    while (size_max && largest_piece(segs) > *size_max && segs <= BlkSlot::kMaxDataSegments) segs++;
    if (seg_max && segs > *seg_max)
        return std::unexpected(std::to_string(bytes) + "-byte requests need " + std::to_string(segs) +
                               " data descriptors, the device takes at most " + std::to_string(*seg_max) +
                               " (SEG_MAX)");
    if (segs > BlkSlot::kMaxDataSegments)
        return std::unexpected(std::to_string(bytes) + "-byte requests need " + std::to_string(segs) +
                               " data descriptors (SIZE_MAX " + std::to_string(size_max.value_or(0)) +
                               "), more than this tool builds");
    return uint16_t(segs);
}

}  // namespace ioplane::vublk
