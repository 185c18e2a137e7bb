// The vhost-user wire format (../shared/specs/vhost-user.rst): message
// header, request codes, feature bits, and decoders for the payloads a block
// device's front end sends. Every decoder checks the payload's size against
// the request type: the front end is untrusted, and a message that does not
// fit its type ends the session.
//
// Thread contract: pure functions over bytes; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane::vhost_user {

enum class Request : uint32_t {
    get_features = 1,
    set_features = 2,
    set_owner = 3,
    reset_owner = 4,
    set_mem_table = 5,
    set_log_base = 6,
    set_log_fd = 7,
    set_vring_num = 8,
    set_vring_addr = 9,
    set_vring_base = 10,
    get_vring_base = 11,
    set_vring_kick = 12,
    set_vring_call = 13,
    set_vring_err = 14,
    get_protocol_features = 15,
    set_protocol_features = 16,
    get_queue_num = 17,
    set_vring_enable = 18,
    get_config = 24,
    set_config = 25,
    get_inflight_fd = 31,
    set_inflight_fd = 32,
    reset_device = 34,
    get_max_mem_slots = 36,
};
const char* request_name(uint32_t request);

// Header flags.
constexpr uint32_t kVersion = 0x1;
constexpr uint32_t kVersionMask = 0x3;
constexpr uint32_t kFlagReply = 1u << 2;
constexpr uint32_t kFlagNeedReply = 1u << 3;

constexpr size_t kHeaderSize = 12;
// The largest payload accepted: a memory table is 8 + 8 * 32 bytes, a config
// access 12 + 256. Anything bigger is not a message of this protocol.
constexpr uint32_t kMaxPayload = 4096;
// File descriptors accepted with one message (SET_MEM_TABLE has one a region).
constexpr size_t kMaxFds = 8;
constexpr size_t kMaxMemRegions = 8;

// Device feature bits (virtio and vhost-user).
constexpr uint64_t kFVersion1 = 1ull << 32;
constexpr uint64_t kFRingIndirectDesc = 1ull << 28;
constexpr uint64_t kFRingEventIdx = 1ull << 29;
constexpr uint64_t kFProtocolFeatures = 1ull << 30;

// Protocol feature bits.
constexpr uint64_t kPfMq = 1ull << 0;
constexpr uint64_t kPfReplyAck = 1ull << 3;
constexpr uint64_t kPfConfig = 1ull << 9;
constexpr uint64_t kPfInflightShmfd = 1ull << 12;
constexpr uint64_t kPfResetDevice = 1ull << 13;

// SET_VRING_KICK/CALL/ERR: bits 0-7 index, bit 8 "no fd" (poll instead).
constexpr uint64_t kVringIndexMask = 0xff;
constexpr uint64_t kVringNoFdMask = 1ull << 8;

struct Header {
    uint32_t request = 0;
    uint32_t flags = 0;
    uint32_t size = 0;
};
// Decodes a header (kHeaderSize bytes); refuses a wrong version or a payload
// size above kMaxPayload.
Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> bytes);

struct VringState {
    uint32_t index = 0;
    uint32_t num = 0;
};
struct VringAddr {
    uint32_t index = 0;
    uint32_t flags = 0;  // bit 0: VHOST_VRING_F_LOG
    uint64_t desc = 0;   // the front end's user addresses
    uint64_t used = 0;
    uint64_t avail = 0;
    uint64_t log = 0;
};
struct MemRegion {
    uint64_t guest_addr = 0;
    uint64_t size = 0;
    uint64_t user_addr = 0;
    uint64_t mmap_offset = 0;
};
struct ConfigAccess {
    uint32_t offset = 0;
    uint32_t size = 0;
    uint32_t flags = 0;
    std::span<const uint8_t> data;  // `size` bytes (into the payload)
};
// GET_INFLIGHT_FD / SET_INFLIGHT_FD: the shared area that records the
// requests in flight (vhost-user.rst "Inflight I/O tracking").
struct InflightDescription {
    uint64_t mmap_size = 0;
    uint64_t mmap_offset = 0;
    uint16_t num_queues = 0;
    uint16_t queue_size = 0;
};
// The vring index and "no fd" flag of SET_VRING_KICK/CALL/ERR.
struct VringFd {
    uint32_t index = 0;
    bool no_fd = false;
};

// Payload decoders. `payload` is exactly header.size bytes.
Result<uint64_t> decode_u64(std::span<const uint8_t> payload);
Result<VringState> decode_vring_state(std::span<const uint8_t> payload);
Result<VringAddr> decode_vring_addr(std::span<const uint8_t> payload);
// Checks the region count against the payload and the fds received.
Result<std::vector<MemRegion>> decode_mem_table(std::span<const uint8_t> payload, size_t fd_count);
Result<ConfigAccess> decode_config(std::span<const uint8_t> payload);
// QEMU sends the C struct with its tail padding (24 bytes); 20 are enough.
Result<InflightDescription> decode_inflight(std::span<const uint8_t> payload);
// Checks that the fd count (0 or 1) matches the "no fd" flag.
Result<VringFd> decode_vring_fd(std::span<const uint8_t> payload, size_t fd_count);

// Replies: the header (with kFlagReply) followed by the payload.
std::vector<uint8_t> encode_reply(uint32_t request, std::span<const uint8_t> payload);
std::vector<uint8_t> encode_reply_u64(uint32_t request, uint64_t value);
std::vector<uint8_t> encode_reply_vring_state(uint32_t request, VringState state);
// GET_INFLIGHT_FD's reply (the fd travels beside it).
std::vector<uint8_t> encode_reply_inflight(uint32_t request, const InflightDescription& d);
// GET_CONFIG's reply: offset, size, flags, then the bytes.
std::vector<uint8_t> encode_reply_config(uint32_t request, const ConfigAccess& access, std::span<const uint8_t> bytes);

}  // namespace ioplane::vhost_user
