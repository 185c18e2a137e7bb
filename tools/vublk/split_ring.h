// The driver (front-end) side of a split virtqueue in shared memory:
// descriptor table, available ring, used ring (virtio-split-ring.tex).
// It knows nothing of virtio-blk: it puts chains of (GPA, length,
// direction) segments on the ring, publishes them, says whether the device
// wants a notification, and takes used entries off.
//
// Memory ordering (the device is another process on another CPU):
// - publish(): the descriptors and avail ring entries are written with plain
//   stores, then avail->idx with a store-release (pairs with the device's
//   load-acquire of avail->idx before it reads the entries); then a full
//   fence before reading used->flags / avail_event (pairs with the device's
//   full fence between writing avail_event and re-reading avail->idx, so
//   that either it sees the new idx or we see its request for a kick).
// - next_used(): used->idx with a load-acquire (pairs with the device's
//   store-release after it wrote the used element and the buffers).
// - enable_notifications(): writes used_event (or clears NO_INTERRUPT), then
//   a full fence, then re-reads used->idx (pairs with the device's fence
//   between writing used->idx and reading used_event), so a completion
//   that raced with re-arming is seen here rather than lost.
//
// Thread contract: one thread drives a Virtqueue (the device is the only
// other party).
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "guest_memory.h"
#include "virtio_defs.h"

namespace ioplane::vublk {

// Where the three parts of a ring of `size` entries go in one allocation,
// each at its minimum alignment (16, 2, 4), packed: a back end that assumes
// the legacy page-aligned layout fails.
struct RingLayout {
    uint16_t size;
    uint64_t desc_offset;
    uint64_t avail_offset;
    uint64_t used_offset;
    uint64_t total;
    static RingLayout for_size(uint16_t size);
    static constexpr uint64_t kAlign = 16;  // of the whole allocation
};

// vring_need_event: whether moving an index from old_idx to new_idx passes
// event_idx, i.e. event_idx is in [old_idx, new_idx) modulo 2^16.
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
    return uint16_t(new_idx - event_idx - 1) < uint16_t(new_idx - old_idx);
}

// Free descriptor indices, last freed first out (warm in cache).
class FreeList {
public:
    explicit FreeList(uint16_t size);
    std::optional<uint16_t> pop();
    void push(uint16_t index);
    size_t available() const { return stack_.size(); }
    bool is_free(uint16_t index) const { return index < free_.size() && free_[index]; }

private:
    std::vector<uint16_t> stack_;
    std::vector<bool> free_;
};

// One buffer of a request: `device_writes` for buffers the device fills.
struct Segment {
    uint64_t gpa;
    uint32_t len;
    bool device_writes;
};

// An indirect descriptor table the caller owns (in guest memory).
struct IndirectTable {
    VirtqDesc* host;
    uint64_t gpa;
    uint16_t capacity;  // entries
};

class Virtqueue {
public:
    // `ring` holds RingLayout::for_size(size).total bytes, zeroed. `size` is
    // a power of two up to 32768. `event_idx`: VIRTIO_RING_F_EVENT_IDX was
    // negotiated.
    Virtqueue(uint16_t size, GuestBuffer ring, bool event_idx);

    uint16_t size() const { return size_; }
    bool event_idx() const { return event_idx_; }
    size_t free_descriptors() const { return free_.available(); }

    // The chain as direct descriptors. Fails if there are not enough free
    // descriptors or no segments. Returns the head.
    std::expected<uint16_t, std::string> add_chain(std::span<const Segment> segs);
    // The chain in `table`, referred to by one ring descriptor with
    // VIRTQ_DESC_F_INDIRECT. Returns the head.
    std::expected<uint16_t, std::string> add_indirect(std::span<const Segment> segs, const IndirectTable& table);
    // Puts a chain's head in the avail ring; the device sees it after publish().
    void make_available(uint16_t head);
    // Makes the entries added since the last publish visible; true if the
    // device asked to be notified of them (then kick it).
    bool publish();

    // The next used element, its chain's descriptors freed; nullopt when
    // the device has not used more. Fails (the queue is then broken) when
    // the device returns an id that is not an outstanding head, or moves
    // used->idx further than the queue size.
    std::expected<std::optional<VirtqUsedElem>, std::string> next_used();
    // Whether the device has used entries not taken yet (load-acquire).
    bool has_used() const;
    uint16_t outstanding() const { return outstanding_; }

    // Used-buffer notifications: off while polling; on (then a full fence
    // and a re-check) before sleeping on the call eventfd. True if entries
    // are already waiting, i.e. do not sleep.
    void disable_notifications();
    bool enable_notifications();

    // Where the parts are in this process (SET_VRING_ADDR takes these).
    const VirtqDesc* desc_host() const { return desc_; }
    const void* avail_host() const { return avail_; }
    const void* used_host() const { return used_; }
    uint16_t avail_idx() const { return avail_shadow_; }
    uint16_t last_used() const { return last_used_; }

    // ---- raw access, for tests that hand-craft bad chains ----
    // The descriptor table; entries the free list hands out are overwritten
    // by add_chain(): a test should take them with take_descriptor().
    std::span<VirtqDesc> raw_descriptors() { return {desc_, size_}; }
    // A descriptor index off the free list, for a hand-made chain; the
    // chain's head must then go through raw_make_available() with every
    // index the test took for it: they are freed when the device uses `head`.
    std::optional<uint16_t> take_descriptor() { return free_.pop(); }
    void raw_make_available(uint16_t head, std::span<const uint16_t> indices);
    // Writes any value at avail ring slot `slot % size` and any avail->idx
    // (store-release): whatever the test wants the device to see.
    void raw_set_avail_entry(uint16_t slot, uint16_t value);
    void raw_set_avail_idx(uint16_t idx);
    uint16_t raw_used_idx() const;

private:
    uint16_t size_;
    bool event_idx_;
    VirtqDesc* desc_;
    uint16_t* avail_;  // [0] flags, [1] idx, [2 .. 2+size) ring, [2+size] used_event
    uint8_t* used_;    // flags u16, idx u16, ring VirtqUsedElem[size], avail_event u16
    uint16_t* used_flags() const { return reinterpret_cast<uint16_t*>(used_); }
    uint16_t* used_idx_ptr() const { return reinterpret_cast<uint16_t*>(used_ + 2); }
    VirtqUsedElem* used_ring() const { return reinterpret_cast<VirtqUsedElem*>(used_ + 4); }
    uint16_t* avail_event_ptr() const { return reinterpret_cast<uint16_t*>(used_ + 4 + 8 * size_); }
    uint16_t* used_event_ptr() const { return avail_ + 2 + size_; }

    FreeList free_;
    // Per head: the chain's descriptor indices (our copy: the device must
    // not be trusted to leave the table alone), empty when not outstanding.
    std::vector<std::vector<uint16_t>> chains_;
    uint16_t avail_shadow_ = 0;     // next avail idx, not yet published
    uint16_t avail_published_ = 0;  // what avail->idx holds
    uint16_t avail_flags_ = 0;      // our copy of avail->flags
    uint16_t last_used_ = 0;
    uint16_t outstanding_ = 0;      // heads made available and not used
};

}  // namespace ioplane::vublk
