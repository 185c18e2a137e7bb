// libFuzzer target for what a vhost-user front end controls: the wire
// messages (protocol.h), the contents of guest memory that the split ring
// reads (guest_memory.h, split_ring.h) and the in-flight region a previous
// back end left (inflight.h). The invariants the daemon relies on
// are checked with __builtin_trap().
//
// Input layout (short inputs are zero-padded):
//   [0]      fd count for the payload decoders (value % 10: 0..9)
//   [1]      ring size: 1 << (value % 9), so 1..256
//   [2]      flags: 1 EVENT_IDX, 2 INDIRECT_DESC, 4 ring addresses from
//            [8..13] (else a fixed layout), 8 push in reverse order,
//            16 turn kick notifications on (else off),
//            32 in-flight tracking: recover from the region at the start of
//            region B (as our own mapping sees it), resubmit, then track
//   [3]      how many chains to pop at most
//   [4..5]   last_avail (SET_VRING_BASE), little-endian
//   [6..7]   length P of the protocol part
//   [8..13]  desc, avail, used: u16 offsets into region A (flag 4)
//   [14..]   P bytes: a message header (12 bytes) and its payload;
//            then guest memory: region A from its start, then region B.
//
// Guest memory is two adjacent 64 KiB regions (memfds, mapped once):
// guest-physical A = [0x100000, 0x110000), B = [0x110000, 0x120000), at
// unrelated front-end user addresses. Rings are in A (by user address);
// descriptors point anywhere (by guest-physical address), so a buffer may
// straddle the two regions.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "guest_memory.h"
#include "inflight.h"
#include "protocol.h"
#include "split_ring.h"

using namespace ioplane;
using namespace ioplane::vhost_user;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

using Bytes = std::span<const uint8_t>;

constexpr size_t kParamsSize = 14;
constexpr uint64_t kRegionSize = 64 * 1024;
constexpr uint64_t kGpaA = 0x100000, kGpaB = kGpaA + kRegionSize;
constexpr uint64_t kUaddrA = 0x7f0000000000, kUaddrB = 0x7e0000000000;
// The fixed ring layout in region A (room for 256 entries each).
constexpr uint64_t kDescOff = 0, kAvailOff = 0x1000, kUsedOff = 0x2000;

// memcpy that accepts an empty source (a null pointer with length 0).
void copy(void* dst, const void* src, size_t n) {
    if (n > 0) std::memcpy(dst, src, n);
}

template <class T>
T load(const void* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// The two regions: our own mappings (the driver's view) and the daemon's.
struct Guest {
    uint8_t* a = nullptr;
    uint8_t* b = nullptr;
    std::shared_ptr<const GuestMemory> mem;
    const uint8_t* host_a = nullptr;  // where the daemon's mapping has them
    const uint8_t* host_b = nullptr;
};

uint8_t* make_region(UniqueFd& fd) {
    fd = UniqueFd(memfd_create("fuzz-guest", MFD_CLOEXEC));
    check(fd && ftruncate(fd.get(), off_t(kRegionSize)) == 0);
    void* p = mmap(nullptr, kRegionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    check(p != MAP_FAILED);
    return static_cast<uint8_t*>(p);
}

const Guest& guest() {
    static const Guest g = [] {
        Guest g;
        std::vector<UniqueFd> fds(2);
        g.a = make_region(fds[0]);
        g.b = make_region(fds[1]);
        const MemRegion regions[] = {{kGpaA, kRegionSize, kUaddrA, 0}, {kGpaB, kRegionSize, kUaddrB, 0}};
        auto m = GuestMemory::map(regions, fds);
        check(m.has_value());
        g.mem = *m;
        g.host_a = static_cast<const uint8_t*>(g.mem->gpa_to_host(kGpaA, kRegionSize));
        g.host_b = static_cast<const uint8_t*>(g.mem->gpa_to_host(kGpaB, kRegionSize));
        check(g.host_a && g.host_b);
        return g;
    }();
    return g;
}

bool inside(const iovec& v, const uint8_t* base) {
    const auto* p = static_cast<const uint8_t*>(v.iov_base);
    return p >= base && p < base + kRegionSize && v.iov_len <= size_t(base + kRegionSize - p);
}

// ---- protocol ----

template <class T>
void check_refusal(const Result<T>& r) {
    check(r.error().code == EPROTO);
    check(!r.error().message.empty());
}

void fuzz_protocol(Bytes in, size_t fd_count) {
    if (in.size() < kHeaderSize) return;
    auto h = decode_header(in.first<kHeaderSize>());
    if (h) {
        check((h->flags & kVersionMask) == kVersion && !(h->flags & kFlagReply) && h->size <= kMaxPayload);
        check(request_name(h->request) != nullptr);
    } else {
        check_refusal(h);
    }
    const Bytes payload = in.subspan(kHeaderSize);

    auto u = decode_u64(payload);
    check(u.has_value() == (payload.size() == 8));
    if (u) {
        // A reply of the value carries the same 8 bytes.
        auto reply = encode_reply_u64(h ? h->request : 0, *u);
        check(reply.size() == kHeaderSize + 8 && std::equal(payload.begin(), payload.end(), reply.begin() + kHeaderSize));
    } else {
        check_refusal(u);
    }

    auto s = decode_vring_state(payload);
    check(s.has_value() == (payload.size() == 8));
    if (s) {
        auto reply = encode_reply_vring_state(0, *s);
        check(std::equal(payload.begin(), payload.end(), reply.begin() + kHeaderSize));
    }

    auto a = decode_vring_addr(payload);
    check(a.has_value() == (payload.size() == 40));
    if (a) check(a->desc == load<uint64_t>(payload.data() + 8) && a->log == load<uint64_t>(payload.data() + 32));

    auto t = decode_mem_table(payload, fd_count);
    if (t) {
        check(!t->empty() && t->size() <= kMaxMemRegions && t->size() == fd_count);
        check(payload.size() == 8 + 32 * t->size() || payload.size() == 8 + 32 * kMaxMemRegions);
    } else {
        check_refusal(t);
    }

    auto c = decode_config(payload);
    if (c) {
        check(c->data.size() == c->size && payload.size() == 12 + size_t(c->size));
        check(c->data.data() == payload.data() + 12);
        // GET_CONFIG's reply of the same bytes decodes to the same access.
        auto reply = encode_reply_config(0, *c, c->data);
        auto back = decode_config(Bytes(reply).subspan(kHeaderSize));
        check(back && back->offset == c->offset && back->size == c->size && back->flags == c->flags &&
              std::equal(back->data.begin(), back->data.end(), c->data.begin(), c->data.end()));
    } else {
        check_refusal(c);
    }

    auto inf = decode_inflight(payload);
    check(inf.has_value() == (payload.size() == 20 || payload.size() == 24));
    if (inf) {
        auto reply = encode_reply_inflight(0, *inf);
        check(reply.size() == kHeaderSize + 24 && std::equal(payload.begin(), payload.begin() + 20, reply.begin() + kHeaderSize));
    } else {
        check_refusal(inf);
    }

    auto f = decode_vring_fd(payload, fd_count);
    if (f) {
        check(f->index <= kVringIndexMask);
        check(fd_count == (f->no_fd ? 0u : 1u));
    } else {
        check_refusal(f);
    }

    auto r = encode_reply(h ? h->request : 0, payload);
    check(r.size() == kHeaderSize + payload.size() && load<uint32_t>(r.data() + 4) == (kVersion | kFlagReply));
}

// ---- split ring ----

void fuzz_ring(const uint8_t* params, Bytes memory) {
    const Guest& g = guest();
    // The whole of guest memory comes from this input (nothing from the last).
    const size_t to_a = std::min<size_t>(memory.size(), kRegionSize);
    copy(g.a, memory.data(), to_a);
    std::memset(g.a + to_a, 0, kRegionSize - to_a);
    const size_t to_b = std::min<size_t>(memory.size() - to_a, kRegionSize);
    copy(g.b, memory.data() + to_a, to_b);
    std::memset(g.b + to_b, 0, kRegionSize - to_b);

    const uint32_t num = 1u << (params[1] % 9);
    const uint8_t flags = params[2];
    const bool event_idx = flags & 1, indirect = flags & 2;
    const size_t max_pops = params[3];
    const uint16_t last_avail = load<uint16_t>(params + 4);
    VringAddr addr{.desc = kUaddrA + kDescOff, .used = kUaddrA + kUsedOff, .avail = kUaddrA + kAvailOff};
    if (flags & 4) {
        addr.desc = kUaddrA + load<uint16_t>(params + 8);
        addr.avail = kUaddrA + load<uint16_t>(params + 10);
        addr.used = kUaddrA + load<uint16_t>(params + 12);
    }
    auto ring = SplitRing::create(*g.mem, num, addr, last_avail, event_idx, indirect);
    if (!ring) return check_refusal(ring);
    check(ring->size() == num && ring->last_avail_idx() == last_avail && ring->in_flight() == 0);
    // The driver's view of the rings (create() checked them against A).
    const size_t avail_off = addr.avail - kUaddrA, used_off = addr.used - kUaddrA;
    check(used_off + 6 + 8 * num <= kRegionSize && avail_off + 6 + 2 * num <= kRegionSize);
    check(ring->used_idx() == load<uint16_t>(g.a + used_off + 2));

    std::vector<std::pair<uint16_t, uint32_t>> popped;  // head, bytes "written"
    std::vector<bool> seen(num, false);
    DescriptorChain chain;
    std::optional<InflightTracker> tracker;
    if (flags & 32) {
        tracker.emplace(g.b, uint16_t(num));
        auto rec = tracker->recover(ring->used_idx(), num);
        if (!rec) return check_refusal(rec);
        check(load<uint16_t>(g.b + 8) == 1 && load<uint16_t>(g.b + 10) == num);
        check(load<uint16_t>(g.b + 14) == ring->used_idx());
        check(rec->heads.size() <= num);
        if (rec->in_use) ring->resume_at(uint16_t(ring->used_idx() + rec->heads.size()));
        for (uint16_t head : rec->heads) {
            check(head < num && !seen[head]);
            seen[head] = true;
            std::string why;
            if (ring->pop_head(head, chain, why) != SplitRing::Pop::ok) {
                check(!why.empty());
                continue;
            }
            check(chain.head == head);
            popped.emplace_back(head, 0);
        }
    }
    for (size_t i = 0; i < max_pops; i++) {
        const uint16_t before = ring->last_avail_idx();
        std::string why;
        const auto r = ring->pop(chain, why);
        if (r == SplitRing::Pop::empty) {
            check(ring->last_avail_idx() == before && !ring->has_available());
            break;
        }
        if (r == SplitRing::Pop::broken) {
            check(!why.empty() && ring->last_avail_idx() == before);
            break;
        }
        check(ring->last_avail_idx() == uint16_t(before + 1));
        check(chain.head < num && !seen[chain.head]);
        seen[chain.head] = true;
        if (tracker) tracker->fetched(chain.head);
        check(chain.out.size() + chain.in.size() <= kMaxIovecs);
        uint64_t out_bytes = 0, in_bytes = 0;
        for (const iovec& v : chain.out) {
            check(v.iov_len > 0 && (inside(v, g.host_a) || inside(v, g.host_b)));
            out_bytes += v.iov_len;
        }
        for (const iovec& v : chain.in) {
            check(v.iov_len > 0 && (inside(v, g.host_a) || inside(v, g.host_b)));
            in_bytes += v.iov_len;
        }
        check(out_bytes == chain.out_bytes && in_bytes == chain.in_bytes);
        // A chain is at most the ring size of descriptors (or of one
        // indirect table's), each at most 4 GiB.
        check(chain.out_bytes + chain.in_bytes <= 2ull * num * UINT32_MAX);
        popped.emplace_back(chain.head, uint32_t(std::min<uint64_t>(in_bytes, UINT32_MAX)));
        check(ring->in_flight() == popped.size());
    }

    if (flags & 8) std::reverse(popped.begin(), popped.end());
    const uint16_t used_before = ring->used_idx();
    bool notify = false;
    if (tracker) {
        for (auto [head, written] : popped) {
            tracker->publishing(head);
            ring->push(head, written);
            notify |= ring->publish_used();
            tracker->published(head, ring->used_idx());
        }
        for (auto [head, written] : popped) check(g.b[16 + 16 * head] == 0);  // none left in flight
    } else {
        for (auto [head, written] : popped) ring->push(head, written);
        notify = ring->publish_used();
    }
    check(ring->in_flight() == 0 && ring->used_idx() == uint16_t(used_before + popped.size()));
    check(load<uint16_t>(g.a + used_off + 2) == ring->used_idx());
    if (popped.empty()) check(!notify);
    for (size_t i = 0; i < popped.size(); i++) {
        const size_t elem = used_off + 4 + 8 * ((used_before + i) % num);
        check(load<uint32_t>(g.a + elem) == popped[i].first && load<uint32_t>(g.a + elem + 4) == popped[i].second);
    }

    const bool kicks_on = flags & 16;
    ring->set_kick_notifications(kicks_on);
    if (event_idx) {
        if (kicks_on) check(load<uint16_t>(g.a + used_off + 4 + 8 * num) == ring->last_avail_idx());
    } else {
        check(load<uint16_t>(g.a + used_off) == (kicks_on ? 0 : 1));
    }
    (void)ring->has_available();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint8_t params[kParamsSize] = {};
    copy(params, data, std::min(size, kParamsSize));
    const Bytes rest = size > kParamsSize ? Bytes(data + kParamsSize, size - kParamsSize) : Bytes();
    const size_t proto_len = std::min<size_t>(load<uint16_t>(params + 6), rest.size());
    fuzz_protocol(rest.first(proto_len), params[0] % 10);
    fuzz_ring(params, rest.subspan(proto_len));
    return 0;
}
