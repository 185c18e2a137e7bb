// virtio-blk (../shared/specs/virtio-blk.tex): feature bits, the device
// configuration space, and the execution of one request against a block
// node. Request layout: a 16-byte header (type, ioprio, sector) and, for
// writes, discard and write zeroes, a payload in the device-readable
// buffers; the data of reads and GET_ID, then a status byte, in the
// device-writable ones. Sectors are 512 bytes whatever the logical block
// size.
//
// Thread contract: encode_config(), device_features() and blk_size_max() are
// pure (any thread); execute() is a coroutine in the node's context.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "ioplane/block/backend.h"
#include "split_ring.h"
#include "virtio_blk_defs.h"

namespace ioplane::vhost_user {

// Per request: larger reads and writes fail with IOERR (no guest sends them;
// it bounds what one request may make the node do).
constexpr uint64_t kBlkMaxDataBytes = 1ull << 30;
// One discard or write-zeroes segment may cover this many sectors (1 GiB).
constexpr uint32_t kBlkMaxZeroSectors = (1u << 30) / 512;
// The largest read or write the configuration describes (size_max times
// seg_max) is at most this: 65535 sectors. Firmware drivers count it in 16
// bits: SeaBIOS 1.16 takes `(u16)(size_max * seg_max / 512)` (the product in
// 32 bits) as the sectors per request and splits larger transfers into
// requests of that many; a product that wraps to 0 there made it send
// zero-sector requests forever, and no VM could boot through its BIOS.
constexpr uint32_t kBlkMaxAdvertisedRequestBytes = 0xffffu * 512;

struct BlkDeviceConfig {
    uint64_t size_bytes = 0;
    uint32_t logical_block_size = 512;
    uint16_t num_queues = 1;
    uint32_t seg_max = 126;
    bool read_only = false;
    std::string serial;  // GET_ID: up to 20 bytes
};

uint64_t device_features(const BlkDeviceConfig& config);
// The size_max to advertise with `seg_max` (1 to 8191) segments: whole pages,
// at most 256 KiB, and with seg_max at most kBlkMaxAdvertisedRequestBytes.
uint32_t blk_size_max(uint32_t seg_max);
// `writeback`: the cache mode the `writeback` field reports (CONFIG_WCE).
std::array<uint8_t, kBlkConfigSize> encode_config(const BlkDeviceConfig& config, bool writeback = true);

// What became of one request.
struct BlkOutcome {
    uint8_t status = kBlkSOk;
    uint32_t written = 0;  // bytes written to the device-writable buffers, status byte included
};

// Checks what the queue needs before it may start a request: a header to
// read and a status byte to write. False: the driver broke the protocol.
bool blk_chain_is_well_formed(const DescriptorChain& chain);

// Executes a well-formed request: reads its header, does the I/O through
// `blk` (inside a request the caller counted with co_begin_request), and
// writes the status byte. `writethrough`: the driver did not negotiate
// FLUSH, or chose a writethrough cache (CONFIG_WCE), so every write must be
// durable when it completes. The chain's
// iovecs are trimmed in place (header and status byte removed).
Task<BlkOutcome> execute_blk_request(block::BlockBackend& blk, const BlkDeviceConfig& config, bool writethrough,
                                     DescriptorChain& chain);

}  // namespace ioplane::vhost_user
