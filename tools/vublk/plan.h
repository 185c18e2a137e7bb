// The sizes a run needs, worked out from the options and what the back end
// negotiated, before any memory is shared: ring size, descriptors per
// request, the addressed range and each queue's slice of it, and how much
// guest memory holds all of that.
//
// Thread contract: pure function; any thread.
#pragma once

#include <cstdint>
#include <expected>
#include <string>

#include "device_limits.h"
#include "options.h"

namespace ioplane::vublk {

struct Plan {
    bool indirect = false;     // requests go in indirect tables
    uint16_t segments = 1;     // data descriptors per read/write
    uint16_t queue_size = 0;
    uint64_t range_offset = 0;
    uint64_t range_bytes = 0;  // queues * slice_blocks * bs
    uint64_t slice_blocks = 0; // per queue, of bs bytes
    uint32_t aux_slot_bytes = 0;  // the one-request slot of checks and transfers (0: none)
    uint64_t mem_size = 0;
};

inline constexpr uint16_t kDefaultMinQueueSize = 256;  // QEMU's virtio-blk default
inline constexpr uint32_t kTransferChunk = 256 * 1024;

std::expected<Plan, std::string> make_plan(const Options& o, const DeviceLimits& l, bool indirect_negotiated);

}  // namespace ioplane::vublk
