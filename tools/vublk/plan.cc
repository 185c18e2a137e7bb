#include "plan.h"

#include <algorithm>
#include <bit>

#include "blk_request.h"
#include "checks.h"
#include "split_ring.h"

namespace ioplane::vublk {

namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
std::string str(uint64_t v) { return std::to_string(v); }

// The largest single request the device takes, up to kTransferChunk.
uint32_t transfer_chunk(const DeviceLimits& l) {
    uint64_t chunk = kTransferChunk;
    if (l.size_max) {
        const uint64_t segs = std::min<uint64_t>(l.seg_max.value_or(BlkSlot::kMaxDataSegments), BlkSlot::kMaxDataSegments);
        chunk = std::min<uint64_t>(chunk, uint64_t(*l.size_max) * segs);
    }
    return uint32_t(std::max<uint64_t>(chunk / kSectorSize * kSectorSize, kSectorSize));
}

}  // namespace

std::expected<Plan, std::string> make_plan(const Options& o, const DeviceLimits& l, bool indirect_negotiated) {
    Plan p;
    const bool workload = o.runtime_s.value_or(0) > 0;
    p.indirect = indirect_negotiated;
    auto segs = l.segments_for(o.bs, o.segments);
    if (!segs) return std::unexpected(segs.error());
    p.segments = *segs;

    // Ring: room for iodepth chains (one descriptor each with indirect tables).
    const uint64_t per_request = p.indirect ? 1 : 2 + uint64_t(p.segments);
    const uint64_t needed = uint64_t(o.iodepth) * per_request;
    if (o.queue_size) {
        if (o.queue_size < needed)
            return std::unexpected("--queue-size " + str(o.queue_size) + " is too small for iodepth " +
                                   str(o.iodepth) + " (" + str(needed) + " descriptors)");
        p.queue_size = o.queue_size;
    } else {
        const uint64_t size = std::bit_ceil(std::max<uint64_t>(needed, kDefaultMinQueueSize));
        if (size >= kMaxQueueSize)
            return std::unexpected("iodepth " + str(o.iodepth) + " needs " + str(needed) + " descriptors per queue");
        p.queue_size = uint16_t(size);
    }

    // The range, split into one slice per queue.
    if (o.offset >= l.capacity_bytes)
        return std::unexpected("--offset " + str(o.offset) + " is past the device's end (" + str(l.capacity_bytes) + " bytes)");
    const uint64_t rest = l.capacity_bytes - o.offset;
    const uint64_t range = std::min(o.size.value_or(rest), rest);
    p.range_offset = o.offset;
    p.slice_blocks = range / o.bs / o.queues;
    p.range_bytes = p.slice_blocks * o.bs * o.queues;
    if (workload) {
        if (p.slice_blocks == 0)
            return std::unexpected("the range (" + str(range) + " bytes) is smaller than one " + str(o.bs) +
                                   "-byte block per queue");
        if (o.verify && p.slice_blocks <= o.iodepth)
            return std::unexpected("--verify needs more than iodepth blocks per queue: the range gives " +
                                   str(p.slice_blocks));
        if (l.read_only && rw_writes(o.rw))
            return std::unexpected("the device is read-only (VIRTIO_BLK_F_RO) and the workload writes");
        if (o.verify && l.read_only) return std::unexpected("--verify writes, and the device is read-only");
    }

    if (o.checks || !o.write_from.empty() || !o.read_to.empty())
        p.aux_slot_bytes = std::max(check_buffer_bytes(l), transfer_chunk(l));

    // Memory: rings, slots (control block + page-aligned data), and room for
    // the round-robin allocator to put everything of one kind in one region.
    constexpr uint64_t kControl = 512, kPage = 4096;
    uint64_t need = uint64_t(o.queues) * align_up(RingLayout::for_size(p.queue_size).total + kPage, kPage);
    if (workload) need += uint64_t(o.queues) * o.iodepth * (kControl + align_up(o.bs, kPage) + kPage);
    if (p.aux_slot_bytes) need += kControl + align_up(p.aux_slot_bytes, kPage) + kPage;
    p.mem_size = o.mem_size.value_or(need * o.mem_regions + (1 << 20));
    return p;
}

}  // namespace ioplane::vublk
