// What the negotiated features and the config space allow a request to
// be: capacity, the per-descriptor and per-request data limits, and the
// discard / write-zeroes limits (virtio-blk.tex, "Device configuration
// layout"). Limits whose feature was not negotiated are "none".
//
// Thread contract: plain value; any thread.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>

#include "frontend.h"

namespace ioplane::vublk {

struct DeviceLimits {
    uint64_t capacity_bytes = 0;
    std::optional<uint32_t> size_max;   // bytes per data descriptor (SIZE_MAX)
    std::optional<uint32_t> seg_max;    // data descriptors per request (SEG_MAX)
    uint32_t blk_size = 512;            // BLK_SIZE, else 512
    bool read_only = false;
    bool flush = false;
    bool discard = false;
    uint32_t max_discard_sectors = 0, max_discard_seg = 0, discard_sector_alignment = 0;
    bool write_zeroes = false;
    uint32_t max_write_zeroes_sectors = 0, max_write_zeroes_seg = 0;
    bool write_zeroes_may_unmap = false;

    // Fails without a config space (no CONFIG protocol feature): the
    // capacity is needed to stay inside the device.
    static std::expected<DeviceLimits, std::string> from(const Negotiation& n);

    // The number of data descriptors a read/write of `bytes` uses: at least
    // `wanted`, more if SIZE_MAX requires; fails if SEG_MAX forbids that.
    std::expected<uint16_t, std::string> segments_for(uint32_t bytes, uint16_t wanted) const;
};

}  // namespace ioplane::vublk
