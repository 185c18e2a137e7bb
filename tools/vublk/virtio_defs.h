// Virtio constants and structures the front end puts in guest memory, from
// the virtio 1.x specification (virtio-content.tex, virtio-split-ring.tex,
// virtio-blk.tex in /work/shared/specs).
//
// Virtio 1.x structures are little-endian; the tool only runs on
// little-endian hosts (static_assert below), so they are plain structs.
//
// Thread contract: constants and plain data; any thread.
#pragma once

#include <bit>
#include <cstdint>

namespace ioplane::vublk {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x rings and requests are little-endian: this tool writes them as native structs");

// ---- device-independent feature bits (virtio-content.tex) ----
inline constexpr unsigned kFIndirectDesc = 28;  // VIRTIO_RING_F_INDIRECT_DESC
inline constexpr unsigned kFEventIdx = 29;      // VIRTIO_RING_F_EVENT_IDX
inline constexpr unsigned kFVersion1 = 32;      // VIRTIO_F_VERSION_1

// ---- virtio-blk feature bits (virtio-blk.tex) ----
inline constexpr unsigned kBlkFSizeMax = 1;
inline constexpr unsigned kBlkFSegMax = 2;
inline constexpr unsigned kBlkFGeometry = 4;
inline constexpr unsigned kBlkFRo = 5;
inline constexpr unsigned kBlkFBlkSize = 6;
inline constexpr unsigned kBlkFFlush = 9;
inline constexpr unsigned kBlkFTopology = 10;
inline constexpr unsigned kBlkFConfigWce = 11;
inline constexpr unsigned kBlkFMq = 12;
inline constexpr unsigned kBlkFDiscard = 13;
inline constexpr unsigned kBlkFWriteZeroes = 14;

constexpr uint64_t bit(unsigned n) { return uint64_t(1) << n; }

// ---- split virtqueue (virtio-split-ring.tex) ----
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;     // device writes this buffer
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint32_t kMaxQueueSize = 32768;

struct VirtqDesc {
    uint64_t addr;  // guest-physical address
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);

struct VirtqUsedElem {
    uint32_t id;  // head of the used descriptor chain
    uint32_t len; // bytes the device wrote into the chain
};
static_assert(sizeof(VirtqUsedElem) == 8);

// ---- virtio-blk requests ----
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint32_t kBlkTGetId = 8;
inline constexpr uint32_t kBlkTDiscard = 11;
inline constexpr uint32_t kBlkTWriteZeroes = 13;

inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint8_t kBlkSIoErr = 1;
inline constexpr uint8_t kBlkSUnsupp = 2;

inline constexpr uint32_t kSectorSize = 512;  // the protocol's unit, whatever blk_size says
inline constexpr uint32_t kBlkIdBytes = 20;   // GET_ID: NUL-padded, up to 20 bytes

struct BlkReqHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(BlkReqHeader) == 16);

struct BlkDiscardWriteZeroes {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;  // bit 0: unmap (write zeroes only)
};
static_assert(sizeof(BlkDiscardWriteZeroes) == 16);
inline constexpr uint32_t kBlkWriteZeroesUnmap = 1;

// struct virtio_blk_config up to write_zeroes_may_unmap and its padding: 60
// bytes. The front end asks for exactly this much with GET_CONFIG: back ends
// built against older headers (QEMU 7.2's) refuse a larger request, and the
// later fields (secure erase, zoned) are for features this tool never takes.
struct __attribute__((packed)) BlkConfig {
    uint64_t capacity;  // in 512-byte sectors
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
};
static_assert(sizeof(BlkConfig) == 60);

}  // namespace ioplane::vublk
