#include "split_ring.h"

#include <atomic>
#include <cassert>

namespace ioplane::vublk {

namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// Shared-memory fields the device reads or writes: accessed atomically so
// that the compiler neither tears, caches nor reorders them.
uint16_t load_relaxed(const uint16_t* p) { return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_relaxed); }
void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }

// A full barrier between our stores and our loads of shared memory. The
// other side is another process, so only the hardware's ordering matters.
// g++ 12's ThreadSanitizer rejects atomic_thread_fence (-Wtsan); there a
// sequentially consistent read-modify-write, a locked instruction (a full
// barrier) on x86, stands in.
void full_fence() {
#if defined(__SANITIZE_THREAD__)
    static std::atomic<int> dummy;
    dummy.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace

RingLayout RingLayout::for_size(uint16_t size) {
    RingLayout l{};
    l.size = size;
    l.desc_offset = 0;                                 // 16-aligned
    l.avail_offset = 16 * uint64_t(size);              // 2-aligned
    l.used_offset = align_up(l.avail_offset + 6 + 2 * uint64_t(size), 4);
    l.total = l.used_offset + 6 + 8 * uint64_t(size);
    return l;
}

FreeList::FreeList(uint16_t size) : free_(size, true) {
    stack_.reserve(size);
    // Pushed in reverse so that descriptors go out as 0, 1, 2...
    for (uint32_t i = size; i > 0; i--) stack_.push_back(uint16_t(i - 1));
}

std::optional<uint16_t> FreeList::pop() {
    if (stack_.empty()) return std::nullopt;
    const uint16_t i = stack_.back();
    stack_.pop_back();
    free_[i] = false;
    return i;
}

void FreeList::push(uint16_t index) {
    assert(index < free_.size() && !free_[index]);
    free_[index] = true;
    stack_.push_back(index);
}

Virtqueue::Virtqueue(uint16_t size, GuestBuffer ring, bool event_idx)
    : size_(size), event_idx_(event_idx), free_(size), chains_(size) {
    const RingLayout l = RingLayout::for_size(size);
    assert(size != 0 && (size & (size - 1)) == 0 && ring.size >= l.total);
    desc_ = reinterpret_cast<VirtqDesc*>(ring.host + l.desc_offset);
    avail_ = reinterpret_cast<uint16_t*>(ring.host + l.avail_offset);
    used_ = ring.host + l.used_offset;
}

std::expected<uint16_t, std::string> Virtqueue::add_chain(std::span<const Segment> segs) {
    if (segs.empty()) return std::unexpected("empty descriptor chain");
    if (segs.size() > free_.available())
        return std::unexpected("no room: " + std::to_string(segs.size()) + " descriptors wanted, " +
                               std::to_string(free_.available()) + " free");
    std::vector<uint16_t>* chain = nullptr;
    uint16_t head = 0, prev = 0;
    for (size_t i = 0; i < segs.size(); i++) {
        const uint16_t d = *free_.pop();
        if (i == 0) {
            head = d;
            chain = &chains_[head];
            chain->clear();
        } else {
            desc_[prev].flags |= kDescFNext;
            desc_[prev].next = d;
        }
        desc_[d] = VirtqDesc{segs[i].gpa, segs[i].len, uint16_t(segs[i].device_writes ? kDescFWrite : 0), 0};
        chain->push_back(d);
        prev = d;
    }
    return head;
}

std::expected<uint16_t, std::string> Virtqueue::add_indirect(std::span<const Segment> segs, const IndirectTable& table) {
    if (segs.empty()) return std::unexpected("empty descriptor chain");
    if (segs.size() > table.capacity) return std::unexpected("indirect table too small");
    auto head = free_.pop();
    if (!head) return std::unexpected("no room: no free descriptor");
    for (size_t i = 0; i < segs.size(); i++) {
        const bool last = i + 1 == segs.size();
        table.host[i] = VirtqDesc{segs[i].gpa, segs[i].len,
                                  uint16_t((segs[i].device_writes ? kDescFWrite : 0) | (last ? 0 : kDescFNext)),
                                  uint16_t(last ? 0 : i + 1)};
    }
    desc_[*head] = VirtqDesc{table.gpa, uint32_t(segs.size() * sizeof(VirtqDesc)), kDescFIndirect, 0};
    chains_[*head].assign(1, *head);
    return *head;
}

void Virtqueue::make_available(uint16_t head) {
    avail_[2 + (avail_shadow_ & (size_ - 1))] = head;
    avail_shadow_++;
    outstanding_++;
}

bool Virtqueue::publish() {
    const uint16_t old_idx = avail_published_, new_idx = avail_shadow_;
    if (old_idx == new_idx) return false;
    // Pairs with the device's load-acquire of avail->idx: it sees the ring
    // entries and descriptors written before.
    std::atomic_ref<uint16_t>(avail_[1]).store(new_idx, std::memory_order_release);
    avail_published_ = new_idx;
    // Pairs with the device's fence between writing avail_event (or
    // NO_NOTIFY) and re-reading avail->idx before it sleeps.
    full_fence();
    if (event_idx_) return need_event(load_relaxed(avail_event_ptr()), new_idx, old_idx);
    return !(load_relaxed(used_flags()) & kUsedFNoNotify);
}

bool Virtqueue::has_used() const {
    // Pairs with the device's store-release of used->idx.
    return std::atomic_ref<uint16_t>(*used_idx_ptr()).load(std::memory_order_acquire) != last_used_;
}

std::expected<std::optional<VirtqUsedElem>, std::string> Virtqueue::next_used() {
    // Pairs with the device's store-release of used->idx: the element and
    // the buffers it wrote are visible after this load.
    const uint16_t used_idx = std::atomic_ref<uint16_t>(*used_idx_ptr()).load(std::memory_order_acquire);
    if (used_idx == last_used_) return std::nullopt;
    const uint16_t ahead = uint16_t(used_idx - last_used_);
    if (ahead > outstanding_)
        return std::unexpected("used->idx moved to " + std::to_string(used_idx) + ", " + std::to_string(ahead) +
                               " entries past the last seen, but only " + std::to_string(outstanding_) +
                               " requests are outstanding");
    const VirtqUsedElem e = used_ring()[last_used_ & (size_ - 1)];
    if (e.id >= size_ || chains_[e.id].empty())
        return std::unexpected("used ring entry " + std::to_string(last_used_) + " has id " + std::to_string(e.id) +
                               ", which is not the head of an outstanding chain");
    for (uint16_t d : chains_[e.id]) free_.push(d);
    chains_[e.id].clear();
    last_used_++;
    outstanding_--;
    return e;
}

void Virtqueue::disable_notifications() {
    if (event_idx_) {
        // An index the device has already passed: it never crosses it again
        // (fewer than 2^16 - size entries can be ahead of last_used_).
        store_relaxed(used_event_ptr(), uint16_t(last_used_ - 1));
    } else if (!(avail_flags_ & kAvailFNoInterrupt)) {
        avail_flags_ |= kAvailFNoInterrupt;
        store_relaxed(&avail_[0], avail_flags_);
    }
}

bool Virtqueue::enable_notifications() {
    if (event_idx_) {
        // Notify when the device writes the entry at last_used_: the next one.
        store_relaxed(used_event_ptr(), last_used_);
    } else if (avail_flags_ & kAvailFNoInterrupt) {
        avail_flags_ &= uint16_t(~kAvailFNoInterrupt);
        store_relaxed(&avail_[0], avail_flags_);
    }
    // Pairs with the device's fence between writing used->idx and reading
    // used_event / the flags: if it missed our re-arm, we see its entry.
    full_fence();
    return has_used();
}

void Virtqueue::raw_make_available(uint16_t head, std::span<const uint16_t> indices) {
    chains_[head].assign(indices.begin(), indices.end());
    make_available(head);
}

void Virtqueue::raw_set_avail_entry(uint16_t slot, uint16_t value) { avail_[2 + (slot & (size_ - 1))] = value; }

void Virtqueue::raw_set_avail_idx(uint16_t idx) {
    std::atomic_ref<uint16_t>(avail_[1]).store(idx, std::memory_order_release);
    avail_published_ = avail_shadow_ = idx;
}

uint16_t Virtqueue::raw_used_idx() const {
    return std::atomic_ref<uint16_t>(*used_idx_ptr()).load(std::memory_order_acquire);
}

}  // namespace ioplane::vublk
