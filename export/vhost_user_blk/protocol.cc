#include "protocol.h"

#include <cerrno>
#include <cstring>

namespace ioplane::vhost_user {

namespace {

// Native byte order, as the spec says; memcpy because payloads are unaligned.
template <class T>
T load(std::span<const uint8_t> bytes, size_t offset) {
    T v;
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
}

template <class T>
void store(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

std::unexpected<Error> bad_size(const char* what, size_t got, size_t want) {
    return fail(EPROTO, std::string(what) + " payload of " + std::to_string(got) + " bytes (expected " +
                            std::to_string(want) + ")");
}

}  // namespace

const char* request_name(uint32_t request) {
    switch (static_cast<Request>(request)) {
    case Request::get_features: return "GET_FEATURES";
    case Request::set_features: return "SET_FEATURES";
    case Request::set_owner: return "SET_OWNER";
    case Request::reset_owner: return "RESET_OWNER";
    case Request::set_mem_table: return "SET_MEM_TABLE";
    case Request::set_log_base: return "SET_LOG_BASE";
    case Request::set_log_fd: return "SET_LOG_FD";
    case Request::set_vring_num: return "SET_VRING_NUM";
    case Request::set_vring_addr: return "SET_VRING_ADDR";
    case Request::set_vring_base: return "SET_VRING_BASE";
    case Request::get_vring_base: return "GET_VRING_BASE";
    case Request::set_vring_kick: return "SET_VRING_KICK";
    case Request::set_vring_call: return "SET_VRING_CALL";
    case Request::set_vring_err: return "SET_VRING_ERR";
    case Request::get_protocol_features: return "GET_PROTOCOL_FEATURES";
    case Request::set_protocol_features: return "SET_PROTOCOL_FEATURES";
    case Request::get_queue_num: return "GET_QUEUE_NUM";
    case Request::set_vring_enable: return "SET_VRING_ENABLE";
    case Request::get_config: return "GET_CONFIG";
    case Request::set_config: return "SET_CONFIG";
    case Request::get_inflight_fd: return "GET_INFLIGHT_FD";
    case Request::set_inflight_fd: return "SET_INFLIGHT_FD";
    case Request::reset_device: return "RESET_DEVICE";
    case Request::get_max_mem_slots: return "GET_MAX_MEM_SLOTS";
    }
    return "unknown request";
}

Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> bytes) {
    Header h{load<uint32_t>(bytes, 0), load<uint32_t>(bytes, 4), load<uint32_t>(bytes, 8)};
    if ((h.flags & kVersionMask) != kVersion)
        return fail(EPROTO, "message version " + std::to_string(h.flags & kVersionMask) + " (expected 1)");
    if (h.flags & kFlagReply) return fail(EPROTO, "a reply sent as a request");
    if (h.size > kMaxPayload)
        return fail(EPROTO, "payload of " + std::to_string(h.size) + " bytes (at most " +
                                std::to_string(kMaxPayload) + ")");
    return h;
}

Result<uint64_t> decode_u64(std::span<const uint8_t> payload) {
    if (payload.size() != 8) return bad_size("u64", payload.size(), 8);
    return load<uint64_t>(payload, 0);
}

Result<VringState> decode_vring_state(std::span<const uint8_t> payload) {
    if (payload.size() != 8) return bad_size("vring state", payload.size(), 8);
    return VringState{load<uint32_t>(payload, 0), load<uint32_t>(payload, 4)};
}

Result<VringAddr> decode_vring_addr(std::span<const uint8_t> payload) {
    if (payload.size() != 40) return bad_size("vring address", payload.size(), 40);
    return VringAddr{load<uint32_t>(payload, 0), load<uint32_t>(payload, 4), load<uint64_t>(payload, 8),
                     load<uint64_t>(payload, 16), load<uint64_t>(payload, 24), load<uint64_t>(payload, 32)};
}

Result<std::vector<MemRegion>> decode_mem_table(std::span<const uint8_t> payload, size_t fd_count) {
    if (payload.size() < 8) return bad_size("memory table", payload.size(), 8);
    const uint32_t n = load<uint32_t>(payload, 0);
    if (n == 0 || n > kMaxMemRegions)
        return fail(EPROTO, "memory table with " + std::to_string(n) + " regions (1 to 8 allowed)");
    // QEMU sends the whole 8-slot array; a front end may send only n slots.
    if (payload.size() != 8 + n * 32 && payload.size() != 8 + kMaxMemRegions * 32)
        return bad_size("memory table", payload.size(), 8 + n * 32);
    if (fd_count != n)
        return fail(EPROTO, "memory table with " + std::to_string(n) + " regions but " + std::to_string(fd_count) +
                                " file descriptors");
    std::vector<MemRegion> regions;
    for (uint32_t i = 0; i < n; i++) {
        const size_t o = 8 + i * 32;
        regions.push_back({load<uint64_t>(payload, o), load<uint64_t>(payload, o + 8), load<uint64_t>(payload, o + 16),
                           load<uint64_t>(payload, o + 24)});
    }
    return regions;
}

Result<ConfigAccess> decode_config(std::span<const uint8_t> payload) {
    if (payload.size() < 12) return bad_size("config", payload.size(), 12);
    ConfigAccess a{load<uint32_t>(payload, 0), load<uint32_t>(payload, 4), load<uint32_t>(payload, 8), {}};
    if (payload.size() - 12 != a.size) return bad_size("config", payload.size(), 12 + size_t(a.size));
    a.data = payload.subspan(12);
    return a;
}

Result<InflightDescription> decode_inflight(std::span<const uint8_t> payload) {
    if (payload.size() != 20 && payload.size() != 24) return bad_size("inflight description", payload.size(), 24);
    return InflightDescription{load<uint64_t>(payload, 0), load<uint64_t>(payload, 8), load<uint16_t>(payload, 16),
                               load<uint16_t>(payload, 18)};
}

Result<VringFd> decode_vring_fd(std::span<const uint8_t> payload, size_t fd_count) {
    auto v = decode_u64(payload);
    if (!v) return std::unexpected(v.error());
    if (*v & ~(kVringIndexMask | kVringNoFdMask)) return fail(EPROTO, "vring fd message with unknown flag bits");
    VringFd out{uint32_t(*v & kVringIndexMask), (*v & kVringNoFdMask) != 0};
    if (fd_count != (out.no_fd ? 0u : 1u))
        return fail(EPROTO, "vring fd message with " + std::to_string(fd_count) + " file descriptors" +
                                (out.no_fd ? " and the no-fd flag" : ""));
    return out;
}

std::vector<uint8_t> encode_reply(uint32_t request, std::span<const uint8_t> payload) {
    std::vector<uint8_t> out;
    out.reserve(kHeaderSize + payload.size());
    store(out, request);
    store(out, kVersion | kFlagReply);
    store(out, uint32_t(payload.size()));
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

std::vector<uint8_t> encode_reply_u64(uint32_t request, uint64_t value) {
    std::vector<uint8_t> p;
    store(p, value);
    return encode_reply(request, p);
}

std::vector<uint8_t> encode_reply_vring_state(uint32_t request, VringState state) {
    std::vector<uint8_t> p;
    store(p, state.index);
    store(p, state.num);
    return encode_reply(request, p);
}

std::vector<uint8_t> encode_reply_inflight(uint32_t request, const InflightDescription& d) {
    std::vector<uint8_t> p;
    store(p, d.mmap_size);
    store(p, d.mmap_offset);
    store(p, d.num_queues);
    store(p, d.queue_size);
    store(p, uint32_t(0));  // the C struct's padding
    return encode_reply(request, p);
}

std::vector<uint8_t> encode_reply_config(uint32_t request, const ConfigAccess& access, std::span<const uint8_t> bytes) {
    std::vector<uint8_t> p;
    store(p, access.offset);
    store(p, uint32_t(bytes.size()));
    store(p, access.flags);
    p.insert(p.end(), bytes.begin(), bytes.end());
    return encode_reply(request, p);
}

}  // namespace ioplane::vhost_user
