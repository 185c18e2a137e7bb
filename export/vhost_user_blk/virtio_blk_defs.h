// virtio-blk's wire values (../shared/specs/virtio-blk.tex): feature bits,
// request types, status values and sizes. Apart from virtio_blk.h so that
// code without the block layer (bench/vublk_reference_backend) uses the
// same definitions.
//
// Thread contract: constants only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ioplane::vhost_user {

// Feature bits.
constexpr uint64_t kBlkFSizeMax = 1ull << 1;
constexpr uint64_t kBlkFSegMax = 1ull << 2;
constexpr uint64_t kBlkFRo = 1ull << 5;
constexpr uint64_t kBlkFBlkSize = 1ull << 6;
constexpr uint64_t kBlkFFlush = 1ull << 9;
constexpr uint64_t kBlkFTopology = 1ull << 10;
constexpr uint64_t kBlkFConfigWce = 1ull << 11;  // the driver may switch writeback / writethrough
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
constexpr uint32_t kBlkConfigWritebackOffset = 32;  // u8 writeback

}  // namespace ioplane::vhost_user
