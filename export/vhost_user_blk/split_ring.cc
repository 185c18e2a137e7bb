#include "split_ring.h"

#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>

namespace ioplane::vhost_user {

namespace {

constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kUsedNoNotify = 1;
constexpr uint16_t kAvailNoInterrupt = 1;

// Ring fields the driver reads or writes concurrently.
uint16_t load_acquire(const uint16_t* p) { return std::atomic_ref(*const_cast<uint16_t*>(p)).load(std::memory_order_acquire); }
uint16_t load_relaxed(const uint16_t* p) { return std::atomic_ref(*const_cast<uint16_t*>(p)).load(std::memory_order_relaxed); }
// A seq_cst store is also the full barrier between it and the loads that
// follow (x86: xchg). ThreadSanitizer does not model atomic_thread_fence.
void store_seq_cst(uint16_t* p, uint16_t v) { std::atomic_ref(*p).store(v, std::memory_order_seq_cst); }
uint16_t load_seq_cst(const uint16_t* p) { return std::atomic_ref(*const_cast<uint16_t*>(p)).load(std::memory_order_seq_cst); }

// The spec's vring_need_event(): did [old, new) pass the driver's event index?
bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
    return uint16_t(new_idx - event - 1) < uint16_t(new_idx - old_idx);
}

}  // namespace

struct SplitRing::Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};


Result<SplitRing> SplitRing::create(const GuestMemory& mem, uint32_t num, const VringAddr& addr, uint16_t last_avail,
                                    bool event_idx, bool indirect) {
    if (num == 0 || num > kMaxQueueSize || (num & (num - 1)))
        return fail(EPROTO, "queue size " + std::to_string(num) + " (a power of 2 up to 32768 expected)");
    SplitRing ring(mem, num, event_idx, indirect);
    // Sizes and alignments from the spec's "Legacy interfaces" table.
    const uint64_t desc_size = 16ull * num;
    const uint64_t avail_size = 6 + 2ull * num;
    const uint64_t used_size = 6 + 8ull * num;
    if (addr.desc % 16 || addr.avail % 2 || addr.used % 4)
        return fail(EPROTO, "misaligned ring address");
    ring.desc_ = static_cast<const uint8_t*>(mem.uaddr_to_host(addr.desc, desc_size));
    ring.avail_ = static_cast<uint16_t*>(mem.uaddr_to_host(addr.avail, avail_size));
    ring.used_ = static_cast<uint16_t*>(mem.uaddr_to_host(addr.used, used_size));
    if (!ring.desc_ || !ring.avail_ || !ring.used_) return fail(EPROTO, "ring address outside guest memory");
    // The front end chooses its regions' user addresses and file offsets: an
    // aligned user address can still land on a misaligned pointer here, where
    // the avail and used rings are accessed atomically.
    if (reinterpret_cast<uintptr_t>(ring.avail_) % 2 || reinterpret_cast<uintptr_t>(ring.used_) % 4)
        return fail(EPROTO, "ring misaligned in the mapping of its memory region");
    ring.last_avail_ = last_avail;
    ring.used_idx_ = load_acquire(&ring.used_[1]);
    ring.published_used_ = ring.used_idx_;
    return ring;
}

bool SplitRing::has_available() const { return load_seq_cst(&avail_[1]) != last_avail_; }

SplitRing::Pop SplitRing::pop(DescriptorChain& chain, std::string& why) {
    const uint16_t avail_idx = load_acquire(&avail_[1]);
    if (avail_idx == last_avail_) return Pop::empty;
    if (uint16_t(avail_idx - last_avail_) > num_) {
        why = "avail index " + std::to_string(avail_idx) + " is more than the ring size ahead of " +
              std::to_string(last_avail_);
        return Pop::broken;
    }
    const uint16_t head = load_relaxed(&avail_[2 + last_avail_ % num_]);
    if (head >= num_ || in_flight_[head]) {
        why = "avail ring entry " + std::to_string(head) + (head >= num_ ? " is out of range" : " is already in flight");
        return Pop::broken;
    }
    const Pop r = walk_chain(head, chain, why);
    if (r == Pop::ok) last_avail_++;
    return r;
}

SplitRing::Pop SplitRing::pop_head(uint16_t head, DescriptorChain& chain, std::string& why) {
    if (head >= num_ || in_flight_[head]) {
        why = "resubmitted head " + std::to_string(head) + (head >= num_ ? " is out of range" : " is already in flight");
        return Pop::broken;
    }
    return walk_chain(head, chain, why);
}

void SplitRing::resume_at(uint16_t last_avail) {
    assert(in_flight_count_ == 0);
    last_avail_ = last_avail;
}

// Copies the chain at `head` into `chain` and marks the head in flight.
SplitRing::Pop SplitRing::walk_chain(uint16_t head, DescriptorChain& chain, std::string& why) {
    chain.head = head;
    chain.out.clear();
    chain.in.clear();
    chain.out_bytes = chain.in_bytes = 0;

    const uint8_t* table = desc_;
    uint32_t table_size = num_;
    uint32_t i = head;
    uint32_t visited = 0;
    bool seen_writable = false;
    bool in_indirect = false;
    for (;;) {
        Desc d;
        static_assert(sizeof d == 16);
        std::memcpy(&d, table + 16ull * i, sizeof d);  // one copy: the driver may change it meanwhile
        if (++visited > table_size) {
            why = "descriptor chain loops";
            return Pop::broken;
        }
        if (d.flags & kDescIndirect) {
            // It may follow direct descriptors (the spec's device requirement)
            // but must end the chain and not be inside a table itself.
            if (!indirect_ || in_indirect || (d.flags & kDescNext)) {
                why = "indirect descriptor not allowed here";
                return Pop::broken;
            }
            if (d.len == 0 || d.len % 16 || d.len / 16 > num_) {
                why = "indirect table of " + std::to_string(d.len) + " bytes";
                return Pop::broken;
            }
            table = static_cast<const uint8_t*>(mem_->gpa_to_host(d.addr, d.len));
            if (!table) {
                why = "indirect table outside guest memory";
                return Pop::broken;
            }
            table_size = d.len / 16;
            in_indirect = true;
            i = 0;
            visited = 0;
            continue;
        }
        if (!add_buffer(chain, d, seen_writable, why)) return Pop::broken;
        if (!(d.flags & kDescNext)) break;
        i = d.next;
        if (i >= table_size) {
            why = "descriptor 'next' " + std::to_string(i) + " out of range";
            return Pop::broken;
        }
    }
    in_flight_[head] = true;
    in_flight_count_++;
    return Pop::ok;
}

bool SplitRing::add_buffer(DescriptorChain& chain, const Desc& d, bool& seen_writable, std::string& why) {
    const bool writable = d.flags & kDescWrite;
    if (!writable && seen_writable) {
        why = "device-readable descriptor after a device-writable one";
        return false;
    }
    seen_writable |= writable;
    if (d.len == 0) return true;
    auto& iov = writable ? chain.in : chain.out;
    const size_t room = kMaxIovecs - (chain.in.size() + chain.out.size()) + iov.size();
    if (!mem_->gpa_to_iovecs(d.addr, d.len, iov, room)) {
        why = "buffer outside guest memory or more than " + std::to_string(kMaxIovecs) + " buffers";
        return false;
    }
    (writable ? chain.in_bytes : chain.out_bytes) += d.len;
    return true;
}

void SplitRing::push(uint16_t head, uint32_t written) {
    assert(head < num_ && in_flight_[head]);
    in_flight_[head] = false;
    in_flight_count_--;
    auto* elem = reinterpret_cast<uint32_t*>(used_ + 2) + 2 * (used_idx_ % num_);
    std::atomic_ref(elem[0]).store(head, std::memory_order_relaxed);
    std::atomic_ref(elem[1]).store(written, std::memory_order_relaxed);
    used_idx_++;
}

bool SplitRing::publish_used() {
    if (used_idx_ == published_used_) return false;
    const uint16_t old = published_used_;
    published_used_ = used_idx_;
    store_seq_cst(&used_[1], used_idx_);  // release, and ordered before the loads below
    if (event_idx_) return need_event(load_seq_cst(&avail_[2 + num_]), used_idx_, old);
    return !(load_seq_cst(&avail_[0]) & kAvailNoInterrupt);
}

void SplitRing::set_kick_notifications(bool on) {
    if (event_idx_) {
        // Off: avail_event stays behind, so the driver's next additions pass
        // it at most once more; on: ask for a kick at the next addition.
        // (seq_cst: ordered before the caller's re-read of avail->idx)
        if (on) store_seq_cst(&used_[2 + 4 * num_], last_avail_);
    } else {
        store_seq_cst(&used_[0], on ? 0 : kUsedNoNotify);
    }
}

}  // namespace ioplane::vhost_user
