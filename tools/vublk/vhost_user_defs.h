// vhost-user message codes, header flags, protocol feature bits and payload
// layouts, from /work/shared/specs/vhost-user.rst. All numbers are in the
// machine's byte order (the protocol says native, not little-endian).
//
// Thread contract: constants and plain data; any thread.
#pragma once

#include <cstdint>

namespace ioplane::vublk {

// Front-end message types ("Front-end message types" in the spec).
enum class Request : uint32_t {
    kGetFeatures = 1,
    kSetFeatures = 2,
    kSetOwner = 3,
    kResetOwner = 4,
    kSetMemTable = 5,
    kSetLogBase = 6,
    kSetLogFd = 7,
    kSetVringNum = 8,
    kSetVringAddr = 9,
    kSetVringBase = 10,
    kGetVringBase = 11,
    kSetVringKick = 12,
    kSetVringCall = 13,
    kSetVringErr = 14,
    kGetProtocolFeatures = 15,
    kSetProtocolFeatures = 16,
    kGetQueueNum = 17,
    kSetVringEnable = 18,
    kGetConfig = 24,
    kSetConfig = 25,
    kGetInflightFd = 31,
    kSetInflightFd = 32,
    kResetDevice = 34,
    kGetMaxMemSlots = 36,
    kAddMemReg = 37,
    kRemMemReg = 38,
    kSetStatus = 39,
    kGetStatus = 40,
};

// The spec's name for a request, for messages ("GET_FEATURES"); "request N"
// for a code it does not know.
const char* request_name(uint32_t request);

// Header flags.
inline constexpr uint32_t kVersion = 0x1;       // lower 2 bits
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 0x4;     // set on every reply from the back end
inline constexpr uint32_t kFlagNeedReply = 0x8; // REPLY_ACK: the back end must answer with a u64

// The feature bit (in GET_FEATURES) that says the back end has protocol features.
inline constexpr unsigned kFProtocolFeatures = 30;

// Protocol feature bits ("Protocol features").
inline constexpr unsigned kPfMq = 0;
inline constexpr unsigned kPfLogShmfd = 1;
inline constexpr unsigned kPfReplyAck = 3;
inline constexpr unsigned kPfBackendReq = 5;
inline constexpr unsigned kPfConfig = 9;
inline constexpr unsigned kPfHostNotifier = 11;
inline constexpr unsigned kPfInflightShmfd = 12;
inline constexpr unsigned kPfResetDevice = 13;
inline constexpr unsigned kPfInbandNotifications = 14;
inline constexpr unsigned kPfConfigureMemSlots = 15;
inline constexpr unsigned kPfStatus = 16;

// SET_VRING_KICK / SET_VRING_CALL payload: bits 0-7 the vring index, bit 8
// "no fd attached".
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 0x100;

// SET_MEM_TABLE carries at most this many regions (one fd each).
inline constexpr unsigned kMaxMemRegions = 8;

struct MsgHeader {
    uint32_t request;
    uint32_t flags;
    uint32_t size;  // payload bytes after the header
};
static_assert(sizeof(MsgHeader) == 12);

struct VringState {  // SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE
    uint32_t index;
    uint32_t num;
};

struct VringAddr {  // SET_VRING_ADDR: user (front-end virtual) addresses
    uint32_t index;
    uint32_t flags;  // bit 0: log used ring writes (never set here)
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

struct MemRegion {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};
static_assert(sizeof(MemRegion) == 32);

struct MemTableHeader {  // followed by num_regions MemRegion
    uint32_t num_regions;
    uint32_t padding;
};

struct InflightDescription {  // GET_INFLIGHT_FD / SET_INFLIGHT_FD (the fd beside it)
    uint64_t mmap_size;
    uint64_t mmap_offset;
    uint16_t num_queues;
    uint16_t queue_size;
    uint32_t padding;
};
static_assert(sizeof(InflightDescription) == 24);

struct ConfigHeader {  // GET_CONFIG / SET_CONFIG, followed by `size` bytes
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
};

}  // namespace ioplane::vublk
