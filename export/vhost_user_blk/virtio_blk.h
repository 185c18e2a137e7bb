// virtio-blk (../shared/specs/virtio-blk.tex): feature bits, the device
// configuration space, and the execution of one request against a block
// node. Request layout: a 16-byte header (type, ioprio, sector) and, for
// writes, discard and write zeroes, a payload in the device-readable
// buffers; the data of reads and GET_ID, then a status byte, in the
// device-writable ones. Sectors are 512 bytes whatever the logical block
// size.
//
// Thread contract: encode_config() and device_features() are pure (any
// thread); execute() is a coroutine in the node's context.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "ioplane/block/backend.h"
#include "split_ring.h"

namespace ioplane::vhost_user {

// Feature bits.
constexpr uint64_t kBlkFSegMax = 1ull << 2;
constexpr uint64_t kBlkFRo = 1ull << 5;
constexpr uint64_t kBlkFBlkSize = 1ull << 6;
constexpr uint64_t kBlkFFlush = 1ull << 9;
constexpr uint64_t kBlkFMq = 1ull << 12;
constexpr uint64_t kBlkFDiscard = 1ull << 13;
constexpr uint64_t kBlkFWriteZeroes = 1ull << 14;

// Request types and status values.
constexpr uint32_t kBlkTIn = 0;
constexpr uint32_t kBlkTOut = 1;
constexpr uint32_t kBlkTFlush = 4;
constexpr uint32_t kBlkTGetId = 8;
constexpr uint32_t kBlkTDiscard = 11;
constexpr uint32_t kBlkTWriteZeroes = 13;
constexpr uint8_t kBlkSOk = 0;
constexpr uint8_t kBlkSIoErr = 1;
constexpr uint8_t kBlkSUnsupp = 2;

constexpr size_t kBlkHeaderSize = 16;
constexpr size_t kBlkIdBytes = 20;
constexpr size_t kBlkConfigSize = 60;  // up to and including unused1[3]
// Per request: larger reads and writes fail with IOERR (no guest sends them;
// it bounds what one request may make the node do).
constexpr uint64_t kBlkMaxDataBytes = 1ull << 30;
// One discard or write-zeroes segment may cover this many sectors (1 GiB).
constexpr uint32_t kBlkMaxZeroSectors = (1u << 30) / 512;

struct BlkDeviceConfig {
    uint64_t size_bytes = 0;
    uint32_t logical_block_size = 512;
    uint16_t num_queues = 1;
    uint32_t seg_max = 126;
    bool read_only = false;
    std::string serial;  // GET_ID: up to 20 bytes
};

uint64_t device_features(const BlkDeviceConfig& config);
std::array<uint8_t, kBlkConfigSize> encode_config(const BlkDeviceConfig& config);

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
// FLUSH, so every write must be durable when it completes. The chain's
// iovecs are trimmed in place (header and status byte removed).
Task<BlkOutcome> execute_blk_request(block::BlockBackend& blk, const BlkDeviceConfig& config, bool writethrough,
                                     DescriptorChain& chain);

}  // namespace ioplane::vhost_user
