// GuestMemory (mapping and address translation) and SplitRing (the device
// side of a split virtqueue) over fake guest memory: a memfd that the test
// writes as the driver would (test_memory.h).
#include "split_ring.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "guest_memory.h"
#include "test_memory.h"

namespace ioplane::vhost_user {
namespace {

using test::DriverRing;
using test::FakeGuest;
using test::kAvailFNoInterrupt;
using test::kDescIndirect;
using test::kDescNext;
using test::kDescWrite;
using test::kUsedFNoNotify;
using test::map_regions;
using test::Memfd;

constexpr uint64_t kGpa = FakeGuest::kGpa;
constexpr uint64_t kUaddr = FakeGuest::kUaddr;

// ===========================================================================
// GuestMemory

TEST(GuestMemory, RegionMustFitInItsFile) {
    Memfd f(64 * 1024);
    // Exactly the file: fine.
    EXPECT_TRUE(map_regions({{kGpa, 64 * 1024, kUaddr, 0}}, {&f}));
    EXPECT_TRUE(map_regions({{kGpa, 60 * 1024, kUaddr, 4096}}, {&f}));
    // One byte more, or the same size at an offset: touching the tail would
    // raise SIGBUS in the daemon.
    for (MemRegion r : {MemRegion{kGpa, 64 * 1024 + 1, kUaddr, 0}, MemRegion{kGpa, 64 * 1024, kUaddr, 4096},
                        MemRegion{kGpa, 4096, kUaddr, 64 * 1024}}) {
        SCOPED_TRACE(r.size);
        auto m = map_regions({r}, {&f});
        ASSERT_FALSE(m);
        EXPECT_EQ(m.error().code, EPROTO);
    }
}

TEST(GuestMemory, RefusesEmptyRegionsAndFdCountMismatch) {
    Memfd f(4096);
    EXPECT_FALSE(map_regions({{kGpa, 0, kUaddr, 0}}, {&f}));
    std::vector<UniqueFd> no_fds;
    std::vector<MemRegion> one{{kGpa, 4096, kUaddr, 0}};
    EXPECT_FALSE(GuestMemory::map(one, no_fds));
}

TEST(GuestMemory, RefusesOverlappingRegions) {
    Memfd a(64 * 1024), b(64 * 1024);
    // Second region starts inside the first (guest-physical).
    EXPECT_FALSE(map_regions({{0x100000, 0x10000, 0x7f0000000000, 0}, {0x108000, 0x10000, 0x7f1000000000, 0}},
                             {&a, &b}));
    // Second region contains the first.
    EXPECT_FALSE(map_regions({{0x104000, 0x1000, 0x7f0000000000, 0}, {0x100000, 0x10000, 0x7f1000000000, 0}},
                             {&a, &b}));
    // Same start.
    EXPECT_FALSE(
        map_regions({{0x100000, 0x1000, 0x7f0000000000, 0}, {0x100000, 0x1000, 0x7f1000000000, 0}}, {&a, &b}));
    // Adjacent is not overlapping.
    auto m = map_regions({{0x100000, 0x10000, 0x7f0000000000, 0}, {0x110000, 0x10000, 0x7f1000000000, 0}}, {&a, &b});
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ((*m)->region_count(), 2u);
}

TEST(GuestMemory, RefusesAddressesThatWrap) {
    Memfd f(8192);
    const uint64_t top = UINT64_MAX - 4095;  // 4096 bytes below the top: +8192 wraps
    EXPECT_FALSE(map_regions({{top, 8192, kUaddr, 0}}, {&f}));
    EXPECT_FALSE(map_regions({{kGpa, 8192, top, 0}}, {&f}));
    EXPECT_FALSE(map_regions({{kGpa, 4096, kUaddr, UINT64_MAX - 100}}, {&f}));
    EXPECT_FALSE(map_regions({{kGpa, UINT64_MAX, kUaddr, 0}}, {&f}));
}

TEST(GuestMemory, TranslationsAreBoundedByTheRegion) {
    FakeGuest g(64 * 1024);
    const GuestMemory& m = g.mem();
    const uint64_t size = g.size();
    g.store<uint8_t>(0, 0x11);
    g.store<uint8_t>(size - 1, 0x22);

    // The first and the last byte, through both address spaces.
    auto* first = static_cast<uint8_t*>(m.gpa_to_host(kGpa, 1));
    auto* last = static_cast<uint8_t*>(m.gpa_to_host(kGpa + size - 1, 1));
    ASSERT_NE(first, nullptr);
    ASSERT_NE(last, nullptr);
    EXPECT_EQ(*first, 0x11);  // the daemon's mapping sees what the driver wrote
    EXPECT_EQ(*last, 0x22);
    EXPECT_EQ(last - first, ptrdiff_t(size - 1));
    EXPECT_EQ(m.uaddr_to_host(kUaddr, 1), first);
    EXPECT_EQ(m.uaddr_to_host(kUaddr + size - 1, 1), last);
    EXPECT_EQ(m.gpa_to_host(kGpa, size), first);  // the whole region

    // One past the end, ranges that run over it, and before the start.
    EXPECT_EQ(m.gpa_to_host(kGpa + size, 1), nullptr);
    EXPECT_EQ(m.gpa_to_host(kGpa + size - 4, 8), nullptr);
    EXPECT_EQ(m.gpa_to_host(kGpa, size + 1), nullptr);
    EXPECT_EQ(m.gpa_to_host(kGpa - 1, 1), nullptr);
    EXPECT_EQ(m.gpa_to_host(kGpa + 8, UINT64_MAX), nullptr);  // len that wraps gpa + len
    EXPECT_EQ(m.uaddr_to_host(kUaddr + size, 1), nullptr);
    EXPECT_EQ(m.uaddr_to_host(kUaddr + size - 4, 8), nullptr);
    EXPECT_EQ(m.uaddr_to_host(kUaddr - 1, 1), nullptr);
    EXPECT_EQ(m.uaddr_to_host(kUaddr + 8, UINT64_MAX), nullptr);

    // The two address spaces are not interchangeable.
    EXPECT_EQ(m.gpa_to_host(kUaddr, 1), nullptr);
    EXPECT_EQ(m.uaddr_to_host(kGpa, 1), nullptr);
}

TEST(GuestMemory, MmapOffsetSelectsWhereTheRegionStartsInTheFile) {
    Memfd f(3 * 4096);
    f.data()[2 * 4096] = 0x5a;
    auto m = map_regions({{kGpa, 4096, kUaddr, 2 * 4096}}, {&f});
    ASSERT_TRUE(m) << m.error().message;
    auto* p = static_cast<uint8_t*>((*m)->gpa_to_host(kGpa, 1));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(*p, 0x5a);
    EXPECT_EQ((*m)->gpa_to_host(kGpa + 4096, 1), nullptr);  // the region is 4096 bytes, not the file
}

TEST(GuestMemory, IovecsSplitWhereARangeCrossesIntoTheNextRegion) {
    Memfd a(64 * 1024), b(64 * 1024);
    // Adjacent in guest-physical memory, unrelated in user addresses and files.
    auto m = map_regions({{0x100000, 0x10000, 0x7f0000000000, 0}, {0x110000, 0x10000, 0x7e0000000000, 0}}, {&a, &b});
    ASSERT_TRUE(m) << m.error().message;
    const GuestMemory& mem = **m;
    a.data()[0x10000 - 100] = 'a';
    b.data()[0] = 'b';

    std::vector<iovec> iov;
    ASSERT_TRUE(mem.gpa_to_iovecs(0x110000 - 100, 200, iov, 8));
    ASSERT_EQ(iov.size(), 2u);
    EXPECT_EQ(iov[0].iov_len, 100u);
    EXPECT_EQ(iov[1].iov_len, 100u);
    EXPECT_EQ(*static_cast<char*>(iov[0].iov_base), 'a');
    EXPECT_EQ(*static_cast<char*>(iov[1].iov_base), 'b');
    EXPECT_EQ(iov[0].iov_base, mem.gpa_to_host(0x110000 - 100, 100));
    EXPECT_EQ(iov[1].iov_base, mem.gpa_to_host(0x110000, 100));
    // A single translation does not span regions.
    EXPECT_EQ(mem.gpa_to_host(0x110000 - 100, 200), nullptr);

    // Appends to what is there; the limit counts the whole vector.
    std::vector<iovec> more(3);
    EXPECT_FALSE(mem.gpa_to_iovecs(0x110000 - 100, 200, more, 4));
    std::vector<iovec> fits(2);
    EXPECT_TRUE(mem.gpa_to_iovecs(0x110000 - 100, 200, fits, 4));
    EXPECT_EQ(fits.size(), 4u);

    // Running off the end of the second region (into unmapped memory).
    std::vector<iovec> off_end;
    EXPECT_FALSE(mem.gpa_to_iovecs(0x120000 - 10, 20, off_end, 8));
    std::vector<iovec> huge;
    EXPECT_FALSE(mem.gpa_to_iovecs(0x100000, UINT64_MAX, huge, 8));
    std::vector<iovec> none;
    EXPECT_TRUE(mem.gpa_to_iovecs(0x100000, 0, none, 8));
    EXPECT_TRUE(none.empty());
}

// ===========================================================================
// SplitRing

class SplitRingTest : public ::testing::Test {
protected:
    static constexpr size_t kTables = 0x20000;  // indirect tables
    static constexpr size_t kData = 0x40000;    // buffers

    Result<SplitRing> make(const DriverRing& r, uint16_t last_avail = 0, bool event_idx = false,
                           bool indirect = false) {
        return SplitRing::create(g_.mem(), r.num(), r.addr(), last_avail, event_idx, indirect);
    }

    // Pops and expects `broken`, with a reason, and no state change.
    void expect_broken(SplitRing& ring) {
        const uint16_t last = ring.last_avail_idx();
        const size_t in_flight = ring.in_flight();
        DescriptorChain c;
        std::string why;
        EXPECT_EQ(ring.pop(c, why), SplitRing::Pop::broken);
        EXPECT_FALSE(why.empty());
        EXPECT_EQ(ring.last_avail_idx(), last);
        EXPECT_EQ(ring.in_flight(), in_flight);
    }
    SplitRing::Pop pop(SplitRing& ring, DescriptorChain& c) {
        std::string why;
        auto r = ring.pop(c, why);
        EXPECT_NE(r, SplitRing::Pop::broken) << why;
        return r;
    }
    void expect_iov(const iovec& v, uint64_t gpa, size_t len) {
        EXPECT_EQ(v.iov_base, g_.daemon_ptr(gpa));
        EXPECT_EQ(v.iov_len, len);
    }
    // A one-descriptor request at `head` (readable, 16 bytes at kData).
    void simple(DriverRing& r, uint16_t head) { r.set_desc(head, g_.gpa(kData), 16, 0); }

    FakeGuest g_{1 << 20};
};

// ---- create ----

TEST_F(SplitRingTest, CreateRefusesSizesThatAreNotPowersOf2) {
    for (uint32_t num : {0u, 3u, 100u, 255u, 32769u, 65536u}) {
        SCOPED_TRACE(num);
        DriverRing r(g_, 1);  // num is checked before the addresses
        auto ring = SplitRing::create(g_.mem(), num, r.addr(), 0, false, false);
        ASSERT_FALSE(ring);
        EXPECT_EQ(ring.error().code, EPROTO);
    }
    for (uint32_t num : {1u, 2u, 256u, 32768u}) {
        SCOPED_TRACE(num);
        DriverRing r(g_, num);
        EXPECT_TRUE(make(r)) << num;
    }
}

TEST_F(SplitRingTest, CreateRefusesMisalignedRings) {
    DriverRing r(g_, 8);
    VringAddr a = r.addr();
    ASSERT_TRUE(SplitRing::create(g_.mem(), 8, a, 0, false, false));
    for (auto [field, delta] : {std::pair{&VringAddr::desc, 8}, {&VringAddr::desc, 1}, {&VringAddr::avail, 1},
                                {&VringAddr::used, 2}, {&VringAddr::used, 1}}) {
        VringAddr bad = a;
        bad.*field += delta;
        EXPECT_FALSE(SplitRing::create(g_.mem(), 8, bad, 0, false, false));
    }
}

TEST_F(SplitRingTest, CreateRefusesRingsOutsideGuestMemory) {
    DriverRing r(g_, 256);
    const VringAddr good = r.addr();
    // Guest-physical addresses where user addresses belong.
    VringAddr gpas = good;
    gpas.desc = g_.gpa(0);
    gpas.avail = g_.gpa(16 * 256);
    gpas.used = g_.gpa(0x2000);
    EXPECT_FALSE(SplitRing::create(g_.mem(), 256, gpas, 0, false, false));
    // Each ring running over the end of the region by a little.
    VringAddr desc_over = good;
    desc_over.desc = g_.uaddr(g_.size() - 16 * 256 + 16);
    EXPECT_FALSE(SplitRing::create(g_.mem(), 256, desc_over, 0, false, false));
    VringAddr avail_over = good;
    avail_over.avail = g_.uaddr(g_.size() - (6 + 2 * 256) + 2);
    EXPECT_FALSE(SplitRing::create(g_.mem(), 256, avail_over, 0, false, false));
    // (The used ring is 6 + 8 * 256 = 2054 bytes; 4-aligned starts are 2
    // bytes short of the end or 2 bytes over it.)
    VringAddr used_over = good;
    used_over.used = g_.uaddr(g_.size() - 2052);  // avail_event would be past the end
    EXPECT_FALSE(SplitRing::create(g_.mem(), 256, used_over, 0, false, false));
    // Up to the end is fine.
    VringAddr used_at_end = good;
    used_at_end.used = g_.uaddr(g_.size() - 2056);
    EXPECT_TRUE(SplitRing::create(g_.mem(), 256, used_at_end, 0, false, false));
    VringAddr desc_at_end = good;
    desc_at_end.desc = g_.uaddr(g_.size() - 16 * 256);
    EXPECT_TRUE(SplitRing::create(g_.mem(), 256, desc_at_end, 0, false, false));
}

// A front end picks its regions' user addresses and file offsets. If they
// are not congruent, a ring address aligned in user addresses lands on a
// misaligned pointer in the daemon, where the ring's index fields are
// accessed atomically (std::atomic_ref requires natural alignment).
TEST_F(SplitRingTest, CreateRefusesRingsMisalignedInTheDaemonsMapping) {
    Memfd f(64 * 1024);
    // Ring addresses aligned as create() requires in user addresses.
    const VringAddr a{.desc = kUaddr + 0x100, .used = kUaddr + 0x2000, .avail = kUaddr + 0x1000};
    // How far the region's user address is off the file offset's alignment,
    // and whether the rings then still land aligned in the daemon.
    for (auto [shift, ok] : {std::pair{uint64_t(0), true}, {4096, true}, {1, false}, {2, false}}) {
        SCOPED_TRACE(shift);
        auto m = map_regions({{kGpa, 60 * 1024, kUaddr - shift, 4096}}, {&f});
        ASSERT_TRUE(m) << m.error().message;
        auto ring = SplitRing::create(**m, 8, a, 0, false, false);
        EXPECT_EQ(bool(ring), ok);
        if (!ring) {
            EXPECT_EQ(ring.error().code, EPROTO);
        }
    }
}

TEST_F(SplitRingTest, CreateStartsAtTheUsedIndexInMemoryAndTheGivenAvailIndex) {
    DriverRing r(g_, 8);
    r.set_used_idx(1234);
    r.set_avail_idx(77);
    auto ring = make(r, 77);
    ASSERT_TRUE(ring);
    EXPECT_EQ(ring->used_idx(), 1234);
    EXPECT_EQ(ring->last_avail_idx(), 77);
    EXPECT_EQ(ring->size(), 8u);
    EXPECT_FALSE(ring->has_available());
    EXPECT_FALSE(ring->publish_used());  // nothing pushed yet
}

// ---- pop: valid chains ----

TEST_F(SplitRingTest, EmptyRingPopsNothing) {
    DriverRing r(g_, 8);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    EXPECT_EQ(pop(*ring, c), SplitRing::Pop::empty);
    EXPECT_EQ(ring->last_avail_idx(), 0);
    EXPECT_EQ(ring->in_flight(), 0u);
}

TEST_F(SplitRingTest, PopsABlockRequestShapedChain) {
    DriverRing r(g_, 8);
    // Header (out), data (in), status (in), linked out of order: 5 -> 2 -> 7.
    r.set_desc(5, g_.gpa(kData), 16, kDescNext, 2);
    r.set_desc(2, g_.gpa(kData + 0x1000), 4096, kDescWrite | kDescNext, 7);
    r.set_desc(7, g_.gpa(kData + 0x3000), 1, kDescWrite);
    std::memcpy(g_.bytes(kData), "header-bytes-16!", 16);
    r.make_available(5);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    EXPECT_TRUE(ring->has_available());

    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.head, 5);
    ASSERT_EQ(c.out.size(), 1u);
    expect_iov(c.out[0], g_.gpa(kData), 16);
    ASSERT_EQ(c.in.size(), 2u);
    expect_iov(c.in[0], g_.gpa(kData + 0x1000), 4096);
    expect_iov(c.in[1], g_.gpa(kData + 0x3000), 1);
    EXPECT_EQ(c.out_bytes, 16u);
    EXPECT_EQ(c.in_bytes, 4097u);
    EXPECT_EQ(std::memcmp(c.out[0].iov_base, "header-bytes-16!", 16), 0);  // the same memory
    EXPECT_EQ(ring->last_avail_idx(), 1);
    EXPECT_EQ(ring->in_flight(), 1u);
    EXPECT_FALSE(ring->has_available());
    EXPECT_EQ(pop(*ring, c), SplitRing::Pop::empty);
}

TEST_F(SplitRingTest, ChainVectorsAreResetBetweenPops) {
    DriverRing r(g_, 8);
    r.set_desc(0, g_.gpa(kData), 16, kDescNext, 1);
    r.set_desc(1, g_.gpa(kData + 16), 8, kDescWrite);
    r.set_desc(2, g_.gpa(kData + 64), 32, 0);
    r.make_available(0);
    r.make_available(2);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.head, 2);
    ASSERT_EQ(c.out.size(), 1u);
    expect_iov(c.out[0], g_.gpa(kData + 64), 32);
    EXPECT_TRUE(c.in.empty());
    EXPECT_EQ(c.out_bytes, 32u);
    EXPECT_EQ(c.in_bytes, 0u);
}

TEST_F(SplitRingTest, ZeroLengthBuffersAddNoIovec) {
    DriverRing r(g_, 4);
    // Address 0 is outside guest memory: not looked at for an empty buffer.
    r.set_desc(0, 0, 0, kDescNext, 1);
    r.set_desc(1, g_.gpa(kData), 16, kDescNext, 2);
    r.set_desc(2, 0, 0, kDescWrite);
    r.make_available(0);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.out.size(), 1u);
    EXPECT_TRUE(c.in.empty());
    EXPECT_EQ(c.out_bytes, 16u);
}

TEST_F(SplitRingTest, AvailIndexWrapsAround) {
    DriverRing r(g_, 4);
    for (uint16_t i = 0; i < 4; i++) simple(r, i);
    r.set_avail_idx(65534);
    r.make_available(1);  // slot 65534 % 4 == 2
    r.make_available(3);  // slot 3
    r.make_available(0);  // avail idx 0 -> 1, slot 0
    EXPECT_EQ(r.avail_idx(), 1);
    auto ring = make(r, 65534);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    std::vector<uint16_t> heads;
    while (pop(*ring, c) == SplitRing::Pop::ok) heads.push_back(c.head);
    EXPECT_EQ(heads, (std::vector<uint16_t>{1, 3, 0}));
    EXPECT_EQ(ring->last_avail_idx(), 1);
}

TEST_F(SplitRingTest, AvailIndexExactlyTheRingSizeAheadIsAFullRing) {
    DriverRing r(g_, 4);
    for (uint16_t i = 0; i < 4; i++) {
        simple(r, i);
        r.make_available(i);
    }
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    for (int i = 0; i < 4; i++) ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(pop(*ring, c), SplitRing::Pop::empty);
    EXPECT_EQ(ring->in_flight(), 4u);
}

TEST_F(SplitRingTest, ChainAsLongAsTheRingIsAccepted) {
    DriverRing r(g_, 8);
    for (uint16_t i = 0; i < 8; i++) r.set_desc(i, g_.gpa(kData + 16 * i), 16, i < 7 ? kDescNext : 0, i + 1);
    r.make_available(0);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.out.size(), 8u);
    EXPECT_EQ(c.out_bytes, 128u);
}

TEST_F(SplitRingTest, BufferAcrossTwoRegionsBecomesTwoIovecs) {
    Memfd a(64 * 1024), b(64 * 1024);
    auto m = map_regions({{0x100000, 0x10000, 0x7f0000000000, 0}, {0x110000, 0x10000, 0x7e0000000000, 0}}, {&a, &b});
    ASSERT_TRUE(m);
    // The ring in region a (by user address), the buffer straddling a and b.
    auto put_desc = [&](size_t i, uint64_t addr, uint32_t len, uint16_t flags) {
        std::memcpy(a.data() + 16 * i, &addr, 8);
        std::memcpy(a.data() + 16 * i + 8, &len, 4);
        std::memcpy(a.data() + 16 * i + 12, &flags, 2);
    };
    put_desc(0, 0x110000 - 8, 24, 0);
    const uint16_t avail[3] = {0, 1, 0};  // flags, idx, ring[0]
    std::memcpy(a.data() + 0x100, avail, sizeof avail);
    VringAddr addr{.desc = 0x7f0000000000, .used = 0x7f0000000200, .avail = 0x7f0000000100};
    auto ring = SplitRing::create(**m, 2, addr, 0, false, false);
    ASSERT_TRUE(ring) << ring.error().message;
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ASSERT_EQ(c.out.size(), 2u);
    EXPECT_EQ(c.out[0].iov_base, (*m)->gpa_to_host(0x110000 - 8, 8));
    EXPECT_EQ(c.out[0].iov_len, 8u);
    EXPECT_EQ(c.out[1].iov_base, (*m)->gpa_to_host(0x110000, 16));
    EXPECT_EQ(c.out[1].iov_len, 16u);
    EXPECT_EQ(c.out_bytes, 24u);
}

// ---- pop: indirect ----

TEST_F(SplitRingTest, PopsAnIndirectChain) {
    DriverRing r(g_, 8);
    // Table of 3: header, data, status. The WRITE flag of the descriptor that
    // points at the table must be ignored.
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData), 16, kDescNext, 1);
    DriverRing::write_desc(g_, kTables, 1, g_.gpa(kData + 0x1000), 512, kDescWrite | kDescNext, 2);
    DriverRing::write_desc(g_, kTables, 2, g_.gpa(kData + 0x2000), 1, kDescWrite);
    r.set_desc(3, g_.gpa(kTables), 3 * 16, kDescIndirect | kDescWrite);
    r.make_available(3);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.head, 3);
    ASSERT_EQ(c.out.size(), 1u);
    expect_iov(c.out[0], g_.gpa(kData), 16);
    ASSERT_EQ(c.in.size(), 2u);
    expect_iov(c.in[0], g_.gpa(kData + 0x1000), 512);
    expect_iov(c.in[1], g_.gpa(kData + 0x2000), 1);
    EXPECT_EQ(c.out_bytes, 16u);
    EXPECT_EQ(c.in_bytes, 513u);
}

// virtio-split-ring.tex, "Indirect Descriptors" (device requirements): "The
// device MUST handle the case of zero or more normal chained descriptors
// followed by a single descriptor with VIRTQ_DESC_F_INDIRECT."
TEST_F(SplitRingTest, DirectDescriptorsFollowedByAnIndirectTable) {
    DriverRing r(g_, 8);
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData + 0x1000), 512, kDescWrite | kDescNext, 1);
    DriverRing::write_desc(g_, kTables, 1, g_.gpa(kData + 0x2000), 1, kDescWrite);
    r.set_desc(0, g_.gpa(kData), 16, kDescNext, 1);
    r.set_desc(1, g_.gpa(kTables), 2 * 16, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ASSERT_EQ(c.out.size(), 1u);
    expect_iov(c.out[0], g_.gpa(kData), 16);
    ASSERT_EQ(c.in.size(), 2u);
    EXPECT_EQ(c.in_bytes, 513u);
}

TEST_F(SplitRingTest, IndirectTableAsLargeAsTheRingIsAccepted) {
    DriverRing r(g_, 8);
    for (uint32_t i = 0; i < 8; i++)
        DriverRing::write_desc(g_, kTables, i, g_.gpa(kData + 32 * i), 32, i < 7 ? kDescNext : 0, uint16_t(i + 1));
    r.set_desc(0, g_.gpa(kTables), 8 * 16, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.out.size(), 8u);
    EXPECT_EQ(c.out_bytes, 256u);
}

TEST_F(SplitRingTest, IndirectRefusedUnlessNegotiated) {
    DriverRing r(g_, 8);
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData), 16, 0);
    r.set_desc(0, g_.gpa(kTables), 16, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, /*indirect=*/false);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

struct BadIndirect {
    const char* what;
    uint64_t table_offset;  // from kTables; ~0: outside guest memory
    uint32_t len;
    uint16_t flags;             // of the descriptor pointing at the table
    uint16_t first_entry_flags;  // of the table's entry 0
};

TEST_F(SplitRingTest, MalformedIndirectDescriptorsBreakTheRing) {
    const BadIndirect cases[] = {
        {"nested", 0, 32, kDescIndirect, kDescIndirect},
        {"with NEXT", 0, 32, kDescIndirect | kDescNext, 0},
        {"len 0", 0, 0, kDescIndirect, 0},
        {"len not a multiple of 16", 0, 40, kDescIndirect, 0},
        {"len 15", 0, 15, kDescIndirect, 0},
        {"more entries than the ring", 0, 16 * 9, kDescIndirect, 0},
        {"table outside guest memory", ~0ull, 32, kDescIndirect, 0},
        {"table running past the end", ~1ull, 32, kDescIndirect, 0},
    };
    for (const BadIndirect& bad : cases) {
        SCOPED_TRACE(bad.what);
        FakeGuest g(1 << 20);
        DriverRing r(g, 8);
        uint64_t table_gpa = g.gpa(kTables + bad.table_offset);
        if (bad.table_offset == ~0ull) table_gpa = g.gpa(g.size()) + 0x1000;
        if (bad.table_offset == ~1ull) table_gpa = g.gpa(g.size() - 16);
        DriverRing::write_desc(g, kTables, 0, g.gpa(kData), 16, bad.first_entry_flags, 1);
        DriverRing::write_desc(g, kTables, 1, g.gpa(kData + 16), 16, 0);
        r.set_desc(0, table_gpa, bad.len, bad.flags, 1);
        r.set_desc(1, g.gpa(kData), 16, 0);
        r.make_available(0);
        auto ring = SplitRing::create(g.mem(), 8, r.addr(), 0, false, true);
        ASSERT_TRUE(ring);
        const uint16_t last = ring->last_avail_idx();
        DescriptorChain c;
        std::string why;
        EXPECT_EQ(ring->pop(c, why), SplitRing::Pop::broken);
        EXPECT_FALSE(why.empty());
        EXPECT_EQ(ring->last_avail_idx(), last);
        EXPECT_EQ(ring->in_flight(), 0u);
    }
}

TEST_F(SplitRingTest, LoopInsideAnIndirectTableBreaksTheRing) {
    DriverRing r(g_, 8);
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData), 16, kDescNext, 1);
    DriverRing::write_desc(g_, kTables, 1, g_.gpa(kData), 16, kDescNext, 0);
    r.set_desc(0, g_.gpa(kTables), 32, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

TEST_F(SplitRingTest, IndirectNextOutOfTheTableBreaksTheRing) {
    DriverRing r(g_, 8);
    // next = 2 is inside the ring's table size but outside this 2-entry table.
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData), 16, kDescNext, 1);
    DriverRing::write_desc(g_, kTables, 1, g_.gpa(kData), 16, kDescNext, 2);
    r.set_desc(0, g_.gpa(kTables), 32, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

// ---- pop: rule breaking ----

TEST_F(SplitRingTest, DescriptorLoopBreaksTheRing) {
    DriverRing r(g_, 8);
    r.set_desc(0, g_.gpa(kData), 16, kDescNext, 1);
    r.set_desc(1, g_.gpa(kData), 16, kDescNext, 2);
    r.set_desc(2, g_.gpa(kData), 16, kDescNext, 1);  // back to 1
    r.make_available(0);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
    // A self-loop too.
    DriverRing r2(g_, 8, 0x10000);
    r2.set_desc(4, g_.gpa(kData), 16, kDescNext, 4);
    r2.make_available(4);
    auto ring2 = make(r2);
    ASSERT_TRUE(ring2);
    expect_broken(*ring2);
}

TEST_F(SplitRingTest, HeadOutOfRangeBreaksTheRing) {
    DriverRing r(g_, 8);
    r.make_available(8);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

TEST_F(SplitRingTest, NextOutOfRangeBreaksTheRing) {
    DriverRing r(g_, 8);
    r.set_desc(0, g_.gpa(kData), 16, kDescNext, 8);
    r.make_available(0);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

TEST_F(SplitRingTest, HeadAlreadyInFlightBreaksTheRingUntilPushed) {
    DriverRing r(g_, 8);
    simple(r, 3);
    r.make_available(3);
    r.make_available(3);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    expect_broken(*ring);
    // Once the device has given it back, the driver may reuse it.
    ring->push(3, 0);
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(c.head, 3);
}

TEST_F(SplitRingTest, ReadableAfterWritableBreaksTheRing) {
    DriverRing r(g_, 8);
    r.set_desc(0, g_.gpa(kData), 16, kDescNext, 1);
    r.set_desc(1, g_.gpa(kData + 16), 16, kDescWrite | kDescNext, 2);
    r.set_desc(2, g_.gpa(kData + 32), 16, 0);
    r.make_available(0);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

TEST_F(SplitRingTest, ReadableInIndirectTableAfterWritableDirectOneBreaksTheRing) {
    DriverRing r(g_, 8);
    DriverRing::write_desc(g_, kTables, 0, g_.gpa(kData), 16, 0);
    r.set_desc(0, g_.gpa(kData + 16), 16, kDescWrite | kDescNext, 1);
    r.set_desc(1, g_.gpa(kTables), 16, kDescIndirect);
    r.make_available(0);
    auto ring = make(r, 0, false, true);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
}

TEST_F(SplitRingTest, BufferOutsideGuestMemoryBreaksTheRing) {
    struct Case {
        const char* what;
        uint64_t addr;
        uint32_t len;
    };
    const Case cases[] = {
        {"below the region", kGpa - 0x1000, 16},
        {"running past the end", kGpa + (1 << 20) - 8, 16},
        {"just past the end", kGpa + (1 << 20), 1},
        {"a user address", kUaddr + kData, 16},
        {"wrapping", UINT64_MAX - 4, 16},
    };
    for (const Case& bad : cases) {
        SCOPED_TRACE(bad.what);
        FakeGuest g(1 << 20);
        DriverRing r(g, 8);
        r.set_desc(0, g.gpa(kData), 16, kDescNext, 1);
        r.set_desc(1, bad.addr, bad.len, kDescWrite);
        r.make_available(0);
        auto ring = SplitRing::create(g.mem(), 8, r.addr(), 0, false, false);
        ASSERT_TRUE(ring);
        DescriptorChain c;
        std::string why;
        EXPECT_EQ(ring->pop(c, why), SplitRing::Pop::broken);
        EXPECT_EQ(ring->in_flight(), 0u);
    }
}

TEST_F(SplitRingTest, AvailIndexMoreThanTheRingSizeAheadBreaksTheRing) {
    DriverRing r(g_, 8);
    for (uint16_t i = 0; i < 8; i++) simple(r, i);
    r.set_avail_idx(9);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    expect_broken(*ring);
    // "Ahead" is modulo 2^16: an index behind ours is far ahead.
    r.set_avail_idx(65535);
    auto ring2 = make(r, 0);
    ASSERT_TRUE(ring2);
    expect_broken(*ring2);
}

TEST_F(SplitRingTest, MoreThanKMaxIovecsBuffersBreakTheRing) {
    // A ring large enough for a chain of kMaxIovecs + 1 one-byte buffers.
    constexpr uint32_t kNum = 2048;
    static_assert(kNum > kMaxIovecs + 1);
    auto build = [&](DriverRing& r, uint32_t n) {
        for (uint32_t i = 0; i < n; i++)
            r.set_desc(i, g_.gpa(kData + i), 1, i + 1 < n ? kDescNext : 0, uint16_t(i + 1));
        r.make_available(0);
    };
    {
        DriverRing r(g_, kNum);
        build(r, kMaxIovecs);
        auto ring = make(r);
        ASSERT_TRUE(ring);
        DescriptorChain c;
        ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
        EXPECT_EQ(c.out.size(), kMaxIovecs);
    }
    {
        DriverRing r(g_, kNum);
        r.set_avail_idx(0);
        build(r, kMaxIovecs + 1);
        auto ring = make(r);
        ASSERT_TRUE(ring);
        expect_broken(*ring);
    }
    {
        // The limit counts readable and writable buffers together.
        DriverRing r(g_, kNum);
        r.set_avail_idx(0);
        for (uint32_t i = 0; i <= kMaxIovecs; i++)
            r.set_desc(i, g_.gpa(kData + i), 1, (i >= 600 ? kDescWrite : 0) | (i < kMaxIovecs ? kDescNext : 0),
                       uint16_t(i + 1));
        r.make_available(0);
        auto ring = make(r);
        ASSERT_TRUE(ring);
        expect_broken(*ring);
    }
}

// ---- push / publish ----

TEST_F(SplitRingTest, PushedElementsBecomeVisibleWhenPublished) {
    DriverRing r(g_, 4);
    r.set_used_idx(10);
    for (uint16_t i = 0; i < 4; i++) {
        simple(r, i);
        r.make_available(uint16_t(3 - i));
    }
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);  // head 3
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);  // head 2
    ring->push(2, 513);  // completed out of order
    ring->push(3, 1);
    EXPECT_EQ(ring->in_flight(), 0u);
    EXPECT_EQ(ring->used_idx(), 12);
    EXPECT_EQ(r.used_idx(), 10);  // not published yet
    EXPECT_TRUE(ring->publish_used());  // flags 0, no EVENT_IDX: notify
    EXPECT_EQ(r.used_idx(), 12);
    EXPECT_EQ(r.used_id(10), 2u);
    EXPECT_EQ(r.used_len(10), 513u);
    EXPECT_EQ(r.used_id(11), 3u);
    EXPECT_EQ(r.used_len(11), 1u);
    EXPECT_FALSE(ring->publish_used());  // nothing new
}

TEST_F(SplitRingTest, WithoutEventIdxTheNoInterruptFlagSuppressesNotifications) {
    DriverRing r(g_, 4);
    for (uint16_t i = 0; i < 4; i++) {
        simple(r, i);
        r.make_available(i);
    }
    auto ring = make(r);
    ASSERT_TRUE(ring);
    DescriptorChain c;
    r.set_used_event(ring->used_idx());  // must be ignored without EVENT_IDX
    r.set_avail_flags(kAvailFNoInterrupt);
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ring->push(c.head, 1);
    EXPECT_FALSE(ring->publish_used());
    EXPECT_EQ(r.used_idx(), 1);  // published all the same
    r.set_avail_flags(0);
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ring->push(c.head, 1);
    EXPECT_TRUE(ring->publish_used());
}

// EVENT_IDX: notify iff the used entries published since the last
// publication include the one at index used_event (vring_need_event).
TEST_F(SplitRingTest, EventIdxNotifiesWhenUsedEventIsPassedAcross16BitWrap) {
    DriverRing r(g_, 8);
    for (uint16_t i = 0; i < 8; i++) simple(r, i);
    r.set_used_idx(65533);
    r.set_avail_idx(65533);
    auto ring = make(r, 65533, /*event_idx=*/true);
    ASSERT_TRUE(ring);
    r.set_avail_flags(kAvailFNoInterrupt);  // must be ignored with EVENT_IDX
    auto complete_one = [&](uint16_t head) {
        r.make_available(head);
        DescriptorChain c;
        ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
        ring->push(c.head, 1);
    };
    r.set_used_event(65535);  // "tell me when entry 65535 is used"
    complete_one(0);          // entry 65533
    EXPECT_FALSE(ring->publish_used());
    complete_one(1);  // entry 65534
    EXPECT_FALSE(ring->publish_used());
    complete_one(2);  // entry 65535: idx becomes 0
    EXPECT_TRUE(ring->publish_used());
    EXPECT_EQ(r.used_idx(), 0);
    complete_one(3);  // entry 0: used_event is behind now
    EXPECT_FALSE(ring->publish_used());

    // Several entries in one publication: notify if any of them is the one.
    r.set_used_event(2);
    complete_one(4);  // entry 1
    complete_one(5);  // entry 2
    complete_one(6);  // entry 3
    EXPECT_TRUE(ring->publish_used());
    EXPECT_EQ(r.used_idx(), 4);
    // used_event far behind (the driver did not update it): no notification.
    r.set_used_event(65000);
    complete_one(7);
    EXPECT_FALSE(ring->publish_used());
}

TEST_F(SplitRingTest, EventIdxUsedEventAheadOfThePublishedRange) {
    DriverRing r(g_, 8);
    simple(r, 0);
    r.set_used_idx(65535);
    r.set_avail_idx(65535);
    auto ring = make(r, 65535, true);
    ASSERT_TRUE(ring);
    r.set_used_event(1);  // two entries ahead
    r.make_available(0);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ring->push(0, 1);  // entry 65535
    EXPECT_FALSE(ring->publish_used());
}

// ---- kick notifications ----

TEST_F(SplitRingTest, KickNotificationsWithEventIdxMoveAvailEvent) {
    DriverRing r(g_, 8);
    for (uint16_t i = 0; i < 8; i++) simple(r, i);
    r.set_avail_idx(65535);
    r.set_avail_event(1111);
    auto ring = make(r, 65535, true);
    ASSERT_TRUE(ring);
    ring->set_kick_notifications(false);
    EXPECT_EQ(r.avail_event(), 1111);  // off: left behind
    EXPECT_EQ(r.used_flags(), 0);      // the flag is not used with EVENT_IDX
    ring->set_kick_notifications(true);
    EXPECT_EQ(r.avail_event(), 65535);  // the next entry we would pop
    EXPECT_EQ(r.used_flags(), 0);
    r.make_available(0);
    r.make_available(1);
    DescriptorChain c;
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    ASSERT_EQ(pop(*ring, c), SplitRing::Pop::ok);
    EXPECT_EQ(ring->last_avail_idx(), 1);
    ring->set_kick_notifications(true);
    EXPECT_EQ(r.avail_event(), 1);
}

TEST_F(SplitRingTest, KickNotificationsWithoutEventIdxUseTheNoNotifyFlag) {
    DriverRing r(g_, 8);
    r.set_avail_event(1111);
    auto ring = make(r);
    ASSERT_TRUE(ring);
    ring->set_kick_notifications(false);
    EXPECT_EQ(r.used_flags(), kUsedFNoNotify);
    ring->set_kick_notifications(true);
    EXPECT_EQ(r.used_flags(), 0);
    EXPECT_EQ(r.avail_event(), 1111);  // not ours without EVENT_IDX
}

}  // namespace
}  // namespace ioplane::vhost_user
