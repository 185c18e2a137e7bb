// SplitRing: the device side of a split virtqueue (virtio-split-ring.tex) in
// shared guest memory. It pops descriptor chains as iovecs into guest memory,
// pushes used elements, and decides when the driver wants a notification
// (VIRTIO_RING_F_EVENT_IDX or the flags).
//
// The driver is untrusted and writes the ring concurrently. Descriptors are
// copied out once and checked on the copy. A ring that breaks the rules (an
// avail index more than the ring size ahead, a head out of range or already
// in flight, a descriptor loop, an indirect table nested or misplaced, a
// device-readable buffer after a device-writable one, a buffer outside guest
// memory, more than kMaxIovecs buffers) makes pop() return `broken` with a
// reason; the queue then stops (the device needs a reset).
//
// Memory ordering with the driver: avail->idx is read with acquire before
// the ring entries and descriptors it publishes; used elements are written
// before used->idx is stored; publishing used->idx (or re-enabling
// notifications) is a seq_cst store, a full barrier before reading the
// driver's used_event / flags (or re-reading avail->idx), as the spec's
// notification suppression requires.
//
// Thread contract: home context of the queue that owns it (one thread at a
// time); create() from any thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "guest_memory.h"

namespace ioplane::vhost_user {

// Buffers a request may have, device-readable and device-writable together
// (IOV_MAX: what preadv and io_uring accept in one call).
constexpr size_t kMaxIovecs = 1024;
constexpr uint32_t kMaxQueueSize = 32768;

// One popped descriptor chain.
struct DescriptorChain {
    uint16_t head = 0;
    std::vector<iovec> out;  // device-readable buffers, in order
    std::vector<iovec> in;   // device-writable buffers, in order
    uint64_t out_bytes = 0;
    uint64_t in_bytes = 0;
};

class SplitRing {
public:
    enum class Pop { ok, empty, broken };

    // Translates the ring's user addresses through `mem` and checks sizes
    // and alignment. `last_avail` is SET_VRING_BASE's value; the used index
    // is read from guest memory (as the spec says for split rings).
    static Result<SplitRing> create(const GuestMemory& mem, uint32_t num, const VringAddr& addr, uint16_t last_avail,
                                    bool event_idx, bool indirect);

    // Pops the next chain into `chain` (its vectors are reused). On `broken`,
    // `why` says what rule the driver broke.
    Pop pop(DescriptorChain& chain, std::string& why);
    // Pops the chain at `head` without taking it from the avail ring: a
    // request the previous back end had taken and not completed (in-flight
    // tracking). Never `empty`.
    Pop pop_head(uint16_t head, DescriptorChain& chain, std::string& why);
    // Moves the next avail entry to pop (nothing may be in flight): where
    // in-flight tracking says the previous back end stopped.
    void resume_at(uint16_t last_avail);
    // Whether the driver has made buffers available that were not popped.
    bool has_available() const;
    // Writes a used element; it becomes visible to the driver with
    // publish_used(). `head` must be in flight (popped, not yet pushed).
    void push(uint16_t head, uint32_t written);
    // Makes the pushed elements visible; true if the driver asked to be
    // notified of them.
    bool publish_used();
    // Driver notifications (kicks) on or off. After turning them on the
    // caller must check has_available() again: buffers made available
    // meanwhile came without a kick.
    void set_kick_notifications(bool on);

    uint16_t last_avail_idx() const { return last_avail_; }
    uint16_t used_idx() const { return used_idx_; }
    uint32_t size() const { return num_; }
    size_t in_flight() const { return in_flight_count_; }

private:
    struct Desc;
    SplitRing(const GuestMemory& mem, uint32_t num, bool event_idx, bool indirect)
        : mem_(&mem), num_(num), event_idx_(event_idx), indirect_(indirect), in_flight_(num, false) {}
    bool add_buffer(DescriptorChain& chain, const Desc& d, bool& seen_writable, std::string& why);
    Pop walk_chain(uint16_t head, DescriptorChain& chain, std::string& why);

    const GuestMemory* mem_;
    uint32_t num_;
    bool event_idx_;
    bool indirect_;
    const uint8_t* desc_ = nullptr;  // num_ 16-byte descriptors
    uint16_t* avail_ = nullptr;      // flags, idx, ring[num], used_event
    uint16_t* used_ = nullptr;       // flags, idx, then {u32 id, u32 len}[num], avail_event
    uint16_t last_avail_ = 0;        // next avail entry to pop
    uint16_t used_idx_ = 0;          // next used entry to write
    uint16_t published_used_ = 0;    // used->idx as the driver last saw it
    std::vector<bool> in_flight_;    // heads popped and not yet pushed
    size_t in_flight_count_ = 0;
};

}  // namespace ioplane::vhost_user
