// A vhost-user-blk front end: the control-channel half of what a VMM does
// for a vhost-user-blk device, without a guest. It negotiates features,
// shares guest memory (GuestMemory), places split rings in it and hands
// them to the back end, and stops them again.
//
// Message order (QEMU's, so a back end sees what it sees from a VMM):
//   negotiate(): GET_FEATURES, [GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
//                [GET_QUEUE_NUM]], SET_OWNER, [GET_CONFIG], SET_FEATURES
//   start():     SET_MEM_TABLE; per queue SET_VRING_NUM, SET_VRING_BASE 0,
//                SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL; then per
//                queue SET_VRING_ENABLE 1 (when protocol features are on)
//   stop():      GET_VRING_BASE per queue, then RESET_DEVICE if offered
// With REPLY_ACK negotiated every message without a reply of its own asks
// for an ack and fails on a non-zero one.
//
// Thread contract: the control calls from one thread. Once started, queue(i)
// is driven by one thread each (see split_ring.h); stop() only after those
// threads are done with the queues.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel.h"
#include "guest_memory.h"
#include "split_ring.h"
#include "virtio_defs.h"

namespace ioplane::vublk {

struct FrontendOptions {
    std::string socket;
    uint16_t queues = 1;
    unsigned mem_regions = 1;
    bool indirect = true;   // take VIRTIO_RING_F_INDIRECT_DESC if offered
    bool event_idx = true;  // take VIRTIO_RING_F_EVENT_IDX if offered
    bool reply_ack = true;  // take VHOST_USER_PROTOCOL_F_REPLY_ACK if offered
    bool config_wce = false;  // take VIRTIO_BLK_F_CONFIG_WCE if offered (the caller writes `writeback`)
    // Take VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD if offered: start() then
    // gets the in-flight area (GET_INFLIGHT_FD) and gives it back
    // (SET_INFLIGHT_FD) before the queues, as QEMU does.
    bool inflight = false;
    std::chrono::milliseconds timeout{10000};
};

// What the back end offered and what was agreed.
struct Negotiation {
    uint64_t offered_features = 0;
    uint64_t features = 0;  // sent with SET_FEATURES
    uint64_t offered_protocol_features = 0;
    uint64_t protocol_features = 0;
    std::optional<uint64_t> queue_num;  // GET_QUEUE_NUM's answer
    std::optional<BlkConfig> config;    // GET_CONFIG's answer
    bool has(unsigned feature_bit) const { return features & bit(feature_bit); }
    bool has_protocol(unsigned pf_bit) const { return protocol_features & bit(pf_bit); }
};

// One started queue: its ring and its eventfds.
struct Queue {
    Queue(Virtqueue v, int kick, int call) : vq(std::move(v)), kick_fd(kick), call_fd(call) {}
    Queue(const Queue&) = delete;
    ~Queue();  // closes the eventfds
    Virtqueue vq;
    int kick_fd = -1;  // we write: "new buffers"
    int call_fd = -1;  // the back end writes: "buffers used" (non-blocking)
    // Notifies the back end (one eventfd write).
    void kick() const;
};

class Frontend {
public:
    static std::expected<std::unique_ptr<Frontend>, std::string> connect(const FrontendOptions& o);
    ~Frontend();

    std::expected<void, std::string> negotiate();
    // Creates `mem_size` bytes of guest memory, sends the table and starts
    // every queue with `queue_size` entries (a power of two).
    std::expected<void, std::string> start(uint16_t queue_size, uint64_t mem_size);
    // GET_VRING_BASE on every queue (the back end stops them; the base it
    // answers must be our avail idx: every request was taken), then
    // RESET_DEVICE if offered.
    std::expected<void, std::string> stop();

    const FrontendOptions& options() const { return o_; }
    const Negotiation& negotiation() const { return n_; }
    // The device's capacity in bytes (GET_CONFIG), or nullopt without CONFIG.
    std::optional<uint64_t> capacity_bytes() const;
    GuestMemory& memory() { return *memory_; }
    // The in-flight area (mapped here too) and its description, once
    // start() got it; null without INFLIGHT_SHMFD.
    uint8_t* inflight_area() const { return inflight_base_; }
    const InflightDescription& inflight_description() const { return inflight_desc_; }
    int inflight_fd() const { return inflight_fd_; }
    Queue& queue(size_t i) { return *queues_[i]; }
    size_t queue_count() const { return queues_.size(); }

    // Raw access to the control channel (any message, any payload, any
    // fds), for tests of a back end's error handling.
    Channel& channel() { return channel_; }

private:
    Frontend(FrontendOptions o, Channel c) : o_(std::move(o)), channel_(std::move(c)) {}
    std::expected<uint64_t, std::string> get_u64(Request r);
    std::expected<void, std::string> start_queue(uint32_t index, uint16_t size);
    std::expected<void, std::string> share_inflight_area(uint16_t queue_size);

    FrontendOptions o_;
    Channel channel_;
    Negotiation n_;
    std::optional<GuestMemory> memory_;
    std::vector<std::unique_ptr<Queue>> queues_;
    InflightDescription inflight_desc_{};
    int inflight_fd_ = -1;
    uint8_t* inflight_base_ = nullptr;
};

// "VERSION_1 INDIRECT_DESC ..." for a feature mask (virtio-blk names), and
// the protocol features likewise; unknown bits as "bitN".
std::string feature_names(uint64_t features);
std::string protocol_feature_names(uint64_t features);

}  // namespace ioplane::vublk
