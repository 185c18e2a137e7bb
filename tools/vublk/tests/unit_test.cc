// Unit tests of the front end's pure logic: notification arithmetic, the
// descriptor free list, ring layout, chain building (direct and indirect)
// against a simulated device, request building, the verify pattern, the
// latency histogram, options and planning, and the message framing against
// a scripted back end on a unix socket.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "blk_request.h"
#include "channel.h"
#include "device_limits.h"
#include "guest_memory.h"
#include "job.h"  // LatencyHistogram
#include "options.h"
#include "pattern.h"
#include "plan.h"
#include "split_ring.h"

namespace ioplane::vublk {
namespace {

// ---------------------------------------------------------------- need_event

// The definition: event_idx is one of the indices the move covered,
// old_idx .. new_idx - 1, modulo 2^16.
bool covered(uint16_t ev, uint16_t new_idx, uint16_t old_idx) {
    for (uint16_t i = old_idx; i != new_idx; i++)
        if (i == ev) return true;
    return false;
}

TEST(NeedEvent, SimpleCases) {
    EXPECT_TRUE(need_event(0, 1, 0));   // the entry at 0 was the event
    EXPECT_FALSE(need_event(1, 1, 0));  // the event is the next entry
    EXPECT_TRUE(need_event(4, 5, 0));
    EXPECT_FALSE(need_event(5, 5, 0));
    EXPECT_FALSE(need_event(7, 7, 7));  // no move, no event
    EXPECT_FALSE(need_event(3, 9, 4));  // the event is behind: already passed
}

TEST(NeedEvent, WrapsAround) {
    EXPECT_TRUE(need_event(65534, 2, 65534));
    EXPECT_TRUE(need_event(65535, 2, 65534));
    EXPECT_TRUE(need_event(0, 2, 65534));
    EXPECT_TRUE(need_event(1, 2, 65534));
    EXPECT_FALSE(need_event(2, 2, 65534));
    EXPECT_FALSE(need_event(65533, 2, 65534));
}

TEST(NeedEvent, MatchesTheDefinitionAcrossTheWrap) {
    for (uint32_t old_idx : {0u, 100u, 65400u, 65535u}) {
        for (uint32_t delta : {0u, 1u, 2u, 17u, 128u, 256u}) {
            const uint16_t o = uint16_t(old_idx), n = uint16_t(old_idx + delta);
            for (uint32_t d = 0; d < 600; d++) {
                const uint16_t ev = uint16_t(old_idx - 300 + d);
                ASSERT_EQ(need_event(ev, n, o), covered(ev, n, o)) << "event " << ev << " old " << o << " new " << n;
            }
        }
    }
}

// ---------------------------------------------------------------- free list

TEST(FreeList, HandsOutEveryIndexOnceThenNothing) {
    FreeList f(4);
    EXPECT_EQ(f.available(), 4u);
    for (uint16_t want = 0; want < 4; want++) {
        auto got = f.pop();
        ASSERT_TRUE(got);
        EXPECT_EQ(*got, want);
        EXPECT_FALSE(f.is_free(want));
    }
    EXPECT_FALSE(f.pop());
    EXPECT_EQ(f.available(), 0u);
}

TEST(FreeList, LastFreedIsNextOut) {
    FreeList f(8);
    for (int i = 0; i < 8; i++) f.pop();
    f.push(5);
    f.push(2);
    EXPECT_TRUE(f.is_free(5));
    EXPECT_EQ(f.available(), 2u);
    EXPECT_EQ(*f.pop(), 2);
    EXPECT_EQ(*f.pop(), 5);
    EXPECT_FALSE(f.pop());
}

// ---------------------------------------------------------------- layout

TEST(RingLayout, PartsAreAlignedAndDoNotOverlap) {
    for (uint32_t size = 1; size <= 32768; size *= 2) {
        const RingLayout l = RingLayout::for_size(uint16_t(size == 32768 ? 32768 : size));
        EXPECT_EQ(l.desc_offset % 16, 0u);
        EXPECT_EQ(l.avail_offset % 2, 0u);
        EXPECT_EQ(l.used_offset % 4, 0u);
        EXPECT_GE(l.avail_offset, l.desc_offset + 16 * uint64_t(size));
        EXPECT_GE(l.used_offset, l.avail_offset + 6 + 2 * uint64_t(size));
        EXPECT_EQ(l.total, l.used_offset + 6 + 8 * uint64_t(size));
    }
    const RingLayout l = RingLayout::for_size(256);
    EXPECT_EQ(l.avail_offset, 4096u);
    EXPECT_EQ(l.used_offset, 4616u);  // 4096 + 6 + 512 = 4614, up to 4
}

// ---------------------------------------------------------------- virtqueue

// A ring in ordinary memory, and the device's side of it done by hand.
class RingTest : public ::testing::TestWithParam<bool> {
protected:
    static constexpr uint16_t kSize = 8;
    static constexpr uint64_t kGpa = 0x40000;
    RingTest() : mem_(RingLayout::for_size(kSize).total + 16), vq_(kSize, ring(), GetParam()) {}

    GuestBuffer ring() {
        auto* p = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem_.data()) + 15) & ~uintptr_t(15));
        return GuestBuffer{p, kGpa, RingLayout::for_size(kSize).total};
    }
    uint8_t* base() { return ring().host; }
    const VirtqDesc* desc() { return reinterpret_cast<const VirtqDesc*>(base()); }
    uint16_t* avail() { return reinterpret_cast<uint16_t*>(base() + RingLayout::for_size(kSize).avail_offset); }
    uint8_t* used() { return base() + RingLayout::for_size(kSize).used_offset; }
    uint16_t& used_flags() { return *reinterpret_cast<uint16_t*>(used()); }
    uint16_t& used_idx() { return *reinterpret_cast<uint16_t*>(used() + 2); }
    VirtqUsedElem* used_ring() { return reinterpret_cast<VirtqUsedElem*>(used() + 4); }
    uint16_t& avail_event() { return *reinterpret_cast<uint16_t*>(used() + 4 + 8 * kSize); }
    uint16_t used_event() { return avail()[2 + kSize]; }

    // The device returns `head` with `len` bytes written.
    void device_uses(uint16_t head, uint32_t len) {
        used_ring()[used_idx() % kSize] = VirtqUsedElem{head, len};
        used_idx()++;
    }

    std::vector<uint8_t> mem_;
    Virtqueue vq_;
};

const Segment kThree[] = {{0x1000, 16, false}, {0x2000, 4096, true}, {0x3000, 1, true}};

TEST_P(RingTest, DirectChainIsLinkedInOrder) {
    auto head = vq_.add_chain(kThree);
    ASSERT_TRUE(head) << head.error();
    EXPECT_EQ(vq_.free_descriptors(), kSize - 3u);
    uint16_t d = *head;
    for (size_t i = 0; i < 3; i++) {
        EXPECT_EQ(desc()[d].addr, kThree[i].gpa);
        EXPECT_EQ(desc()[d].len, kThree[i].len);
        EXPECT_EQ(bool(desc()[d].flags & kDescFWrite), kThree[i].device_writes);
        EXPECT_EQ(bool(desc()[d].flags & kDescFNext), i < 2) << i;
        EXPECT_FALSE(desc()[d].flags & kDescFIndirect);
        d = desc()[d].next;
    }
    vq_.make_available(*head);
    EXPECT_EQ(avail()[1], 0) << "not visible before publish()";
    vq_.publish();
    EXPECT_EQ(avail()[1], 1);
    EXPECT_EQ(avail()[2], *head);
}

TEST_P(RingTest, IndirectChainUsesOneRingDescriptor) {
    alignas(16) VirtqDesc table[4] = {};
    const IndirectTable t{table, 0x9000, 4};
    auto head = vq_.add_indirect(kThree, t);
    ASSERT_TRUE(head) << head.error();
    EXPECT_EQ(vq_.free_descriptors(), kSize - 1u);
    EXPECT_EQ(desc()[*head].flags, kDescFIndirect);  // not NEXT, not WRITE
    EXPECT_EQ(desc()[*head].addr, 0x9000u);
    EXPECT_EQ(desc()[*head].len, 3 * sizeof(VirtqDesc));
    for (uint16_t i = 0; i < 3; i++) {
        EXPECT_EQ(table[i].addr, kThree[i].gpa);
        EXPECT_EQ(bool(table[i].flags & kDescFNext), i < 2);
        EXPECT_EQ(bool(table[i].flags & kDescFWrite), kThree[i].device_writes);
        if (i < 2) {
            EXPECT_EQ(table[i].next, i + 1);
        }
    }
    const Segment five[5] = {};
    EXPECT_FALSE(vq_.add_indirect(five, t)) << "more segments than the table holds";
}

TEST_P(RingTest, RunsOutOfDescriptorsAndGetsThemBack) {
    auto a = vq_.add_chain(kThree);
    auto b = vq_.add_chain(kThree);
    ASSERT_TRUE(a && b);
    EXPECT_FALSE(vq_.add_chain(kThree)) << "2 left, 3 wanted";
    EXPECT_FALSE(vq_.add_chain({})) << "an empty chain";
    vq_.make_available(*a);
    vq_.make_available(*b);
    vq_.publish();
    EXPECT_EQ(vq_.outstanding(), 2);
    device_uses(*b, 4097);
    auto e = vq_.next_used();
    ASSERT_TRUE(e && *e);
    EXPECT_EQ((*e)->id, *b);
    EXPECT_EQ((*e)->len, 4097u);
    EXPECT_EQ(vq_.free_descriptors(), kSize - 3u);
    EXPECT_TRUE(vq_.add_chain(kThree)) << "b's descriptors are free again";
    auto none = vq_.next_used();
    ASSERT_TRUE(none);
    EXPECT_FALSE(*none);
}

TEST_P(RingTest, ManyRoundsWrapTheRingIndices) {
    // More than 2^16 requests: avail and used indices wrap.
    for (uint32_t round = 0; round < 70000; round++) {
        auto h = vq_.add_chain(kThree);
        ASSERT_TRUE(h);
        vq_.make_available(*h);
        vq_.publish();
        ASSERT_EQ(avail()[2 + (uint16_t(round) % kSize)], *h);
        device_uses(*h, 1);
        auto e = vq_.next_used();
        ASSERT_TRUE(e && *e);
        ASSERT_EQ((*e)->id, *h);
    }
    EXPECT_EQ(vq_.avail_idx(), uint16_t(70000));
    EXPECT_EQ(vq_.free_descriptors(), kSize);
}

TEST_P(RingTest, RejectsAUsedIdThatIsNotOutstanding) {
    auto h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    vq_.publish();
    device_uses(uint16_t(*h + 1), 1);  // a descriptor inside the chain, not its head
    EXPECT_FALSE(vq_.next_used());
}

TEST_P(RingTest, RejectsAUsedIdOutOfRange) {
    auto h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    vq_.publish();
    device_uses(kSize, 1);
    EXPECT_FALSE(vq_.next_used());
}

TEST_P(RingTest, RejectsUsedIdxRunningAhead) {
    auto h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    vq_.publish();
    device_uses(*h, 1);
    used_idx() += 1;  // claims two, one is outstanding
    EXPECT_FALSE(vq_.next_used());
}

INSTANTIATE_TEST_SUITE_P(EventIdx, RingTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "event_idx" : "flags"; });

class RingFlagsTest : public RingTest {};
class RingEventIdxTest : public RingTest {};

TEST_P(RingFlagsTest, KickUnlessTheDeviceSaysNoNotify) {
    auto h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    EXPECT_TRUE(vq_.publish());
    used_flags() = kUsedFNoNotify;
    h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    EXPECT_FALSE(vq_.publish());
    EXPECT_FALSE(vq_.publish()) << "nothing new: no kick";
}

TEST_P(RingFlagsTest, NotificationsToggleTheAvailFlag) {
    vq_.disable_notifications();
    EXPECT_EQ(avail()[0], kAvailFNoInterrupt);
    EXPECT_FALSE(vq_.enable_notifications());
    EXPECT_EQ(avail()[0], 0);
}
INSTANTIATE_TEST_SUITE_P(Flags, RingFlagsTest, ::testing::Values(false));

TEST_P(RingEventIdxTest, KickOnlyWhenAvailEventIsPassed) {
    avail_event() = 2;  // the device wants to hear when entry 2 is made available
    for (int i = 0; i < 2; i++) {
        auto h = vq_.add_chain(kThree);
        vq_.make_available(*h);
        EXPECT_FALSE(vq_.publish()) << i;  // entries 0, 1
    }
    alignas(16) VirtqDesc t1[4], t2[4];
    vq_.make_available(*vq_.add_indirect(kThree, {t1, 0x9000, 4}));
    vq_.make_available(*vq_.add_indirect(kThree, {t2, 0x9100, 4}));
    EXPECT_TRUE(vq_.publish());  // entries 2, 3 in one batch: passes 2
}

TEST_P(RingEventIdxTest, UsedEventArmsTheNextCompletionOnly) {
    auto h = vq_.add_chain(kThree);
    vq_.make_available(*h);
    vq_.publish();
    vq_.disable_notifications();
    EXPECT_EQ(used_event(), uint16_t(0 - 1)) << "an index the device has passed";
    EXPECT_FALSE(vq_.enable_notifications());
    EXPECT_EQ(used_event(), 0) << "notify on the next used entry";
    device_uses(*h, 1);
    EXPECT_TRUE(vq_.enable_notifications()) << "an entry is waiting: do not sleep";
    ASSERT_TRUE(vq_.next_used());
    vq_.disable_notifications();
    EXPECT_EQ(used_event(), 0);
    EXPECT_FALSE(need_event(used_event(), 1, 1)) << "the device would not notify again";
}
INSTANTIATE_TEST_SUITE_P(EventIdx, RingEventIdxTest, ::testing::Values(true));

// ---------------------------------------------------------------- requests

TEST(GuestMemory, GpasAreNotHostAddressesAndRegionsLeaveAHole) {
    auto m = GuestMemory::create(4 << 20, 2);
    ASSERT_TRUE(m) << m.error();
    ASSERT_EQ(m->regions().size(), 2u);
    const GuestRegion& a = m->regions()[0];
    const GuestRegion& b = m->regions()[1];
    EXPECT_EQ(a.gpa, kGpaBase);
    EXPECT_GT(b.gpa, a.gpa + a.size) << "a hole between regions";
    EXPECT_NE(a.gpa, reinterpret_cast<uint64_t>(a.host));
    auto x = m->allocate(100, 64), y = m->allocate(100, 4096);
    ASSERT_TRUE(x && y);
    EXPECT_LT(x->gpa, a.gpa + a.size);
    EXPECT_GE(y->gpa, b.gpa) << "round robin over regions";
    EXPECT_EQ(m->gpa_of(y->host), y->gpa);
    EXPECT_EQ(y->gpa % 4096, 0u);
    EXPECT_EQ(m->host_of(x->gpa, 100), x->host);
    EXPECT_EQ(m->host_of(a.gpa + a.size - 10, 20), nullptr) << "runs off the region";
    EXPECT_FALSE(m->allocate(8 << 20, 64)) << "more than a region holds";
}

class BlkSlotTest : public ::testing::Test {
protected:
    BlkSlotTest() : mem_(*GuestMemory::create(1 << 20, 1)), slot_(*BlkSlot::allocate(mem_, 8192)) {}
    const BlkReqHeader& header(std::span<const Segment> s) {
        return *reinterpret_cast<const BlkReqHeader*>(mem_.host_of(s[0].gpa, sizeof(BlkReqHeader)));
    }
    GuestMemory mem_;
    BlkSlot slot_;
};

TEST_F(BlkSlotTest, ReadIsHeaderDataStatus) {
    BlkRequest r;
    r.op = BlkOp::kRead;
    r.sector = 77;
    r.bytes = 4096;
    auto s = slot_.prepare(r);
    ASSERT_TRUE(s) << s.error();
    ASSERT_EQ(s->size(), 3u);
    EXPECT_EQ(header(*s).type, kBlkTIn);
    EXPECT_EQ(header(*s).sector, 77u);
    EXPECT_FALSE((*s)[0].device_writes);
    EXPECT_EQ((*s)[0].len, 16u);
    EXPECT_TRUE((*s)[1].device_writes);
    EXPECT_EQ((*s)[1].len, 4096u);
    EXPECT_EQ(mem_.host_of((*s)[1].gpa, 4096), slot_.data());
    EXPECT_TRUE((*s)[2].device_writes);
    EXPECT_EQ((*s)[2].len, 1u);
    EXPECT_EQ(slot_.status(), 0xff) << "poisoned until the device writes it";
    EXPECT_EQ(slot_.expected_used_len(), 4097u);
}

TEST_F(BlkSlotTest, WriteSplitsDataIntoWholeSectors) {
    BlkRequest r;
    r.op = BlkOp::kWrite;
    r.bytes = 8192;
    r.data_segments = 3;
    auto s = slot_.prepare(r);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->size(), 5u);
    EXPECT_EQ(header(*s).type, kBlkTOut);
    uint32_t total = 0;
    for (size_t i = 1; i < 4; i++) {
        EXPECT_FALSE((*s)[i].device_writes);
        EXPECT_EQ((*s)[i].len % kSectorSize, 0u);
        EXPECT_EQ((*s)[i].gpa, (*s)[1].gpa + total) << "contiguous pieces";
        total += (*s)[i].len;
    }
    EXPECT_EQ(total, 8192u);
    EXPECT_EQ(slot_.expected_used_len(), 1u);
    r.bytes = 8193 + 8192;
    EXPECT_FALSE(slot_.prepare(r)) << "more than the buffer";
}

TEST_F(BlkSlotTest, WriteZeroesCarriesRangesAndTheUnmapFlag) {
    const BlkRange ranges[2] = {{8, 16}, {100, 8}};
    BlkRequest r;
    r.op = BlkOp::kWriteZeroes;
    r.ranges = ranges;
    r.unmap = true;
    auto s = slot_.prepare(r);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->size(), 3u);
    EXPECT_EQ(header(*s).type, kBlkTWriteZeroes);
    EXPECT_EQ((*s)[1].len, 2 * sizeof(BlkDiscardWriteZeroes));
    const auto* seg = reinterpret_cast<const BlkDiscardWriteZeroes*>(mem_.host_of((*s)[1].gpa, 32));
    EXPECT_EQ(seg[0].sector, 8u);
    EXPECT_EQ(seg[0].num_sectors, 16u);
    EXPECT_EQ(seg[1].flags, kBlkWriteZeroesUnmap);
    r.op = BlkOp::kDiscard;  // the unmap flag is never set on a discard
    s = slot_.prepare(r);
    ASSERT_TRUE(s);
    EXPECT_EQ(reinterpret_cast<const BlkDiscardWriteZeroes*>(mem_.host_of((*s)[1].gpa, 32))[0].flags, 0u);
}

TEST_F(BlkSlotTest, FlushHasNoDataAndGetIdTwentyBytes) {
    BlkRequest r;
    r.op = BlkOp::kFlush;
    r.sector = 99;  // ignored: a flush's sector must be 0
    auto s = slot_.prepare(r);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->size(), 2u);
    EXPECT_EQ(header(*s).sector, 0u);
    r.op = BlkOp::kGetId;
    s = slot_.prepare(r);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->size(), 3u);
    EXPECT_EQ((*s)[1].len, kBlkIdBytes);
    EXPECT_TRUE((*s)[1].device_writes);
}

TEST(DeviceLimits, SizeMaxForcesMoreSegmentsAndSegMaxCapsThem) {
    DeviceLimits l;
    EXPECT_EQ(*l.segments_for(65536, 1), 1);
    l.size_max = 4096;
    EXPECT_EQ(*l.segments_for(65536, 1), 16);
    EXPECT_EQ(*l.segments_for(4096, 1), 1);
    l.seg_max = 8;
    EXPECT_FALSE(l.segments_for(65536, 1));
}

// ---------------------------------------------------------------- pattern

TEST(Pattern, RoundTripsAndNamesWhatIsWrong) {
    std::vector<uint8_t> b(4096);
    fill_pattern(b, 8192, 3, 42);
    EXPECT_FALSE(check_pattern(b, 8192, 3, 42));
    auto wrong_gen = check_pattern(b, 8192, 4, 42);
    ASSERT_TRUE(wrong_gen);
    EXPECT_NE(wrong_gen->find("generation 3"), std::string::npos) << *wrong_gen;
    auto wrong_offset = check_pattern(b, 0, 3, 42);
    ASSERT_TRUE(wrong_offset);
    EXPECT_NE(wrong_offset->find("holds offset 8192"), std::string::npos) << *wrong_offset;
    EXPECT_NE(check_pattern(b, 8192, 3, 43)->find("another run"), std::string::npos);
    b[1000] ^= 1;  // a flipped bit in the second sector's body
    auto flipped = check_pattern(b, 8192, 3, 42);
    ASSERT_TRUE(flipped);
    EXPECT_NE(flipped->find("8704"), std::string::npos) << *flipped;
    std::fill(b.begin(), b.end(), 0);
    EXPECT_NE(check_pattern(b, 8192, 3, 42)->find("zeroes"), std::string::npos);
}

TEST(Pattern, DiffersBetweenOffsetsAndGenerations) {
    std::vector<uint8_t> a(512), b(512);
    fill_pattern(a, 0, 1, 1);
    fill_pattern(b, 512, 1, 1);
    EXPECT_NE(std::memcmp(a.data() + 24, b.data() + 24, 488), 0);
    fill_pattern(b, 0, 2, 1);
    EXPECT_NE(std::memcmp(a.data() + 24, b.data() + 24, 488), 0);
}

// ---------------------------------------------------------------- histogram

TEST(LatencyHistogram, BucketsAreMonotonicAndClose) {
    size_t last = 0;
    for (uint64_t v = 1; v < (uint64_t(1) << 40); v = v * 3 / 2 + 1) {
        const size_t i = LatencyHistogram::index(v);
        EXPECT_GE(i, last);
        last = i;
        const double mid = double(LatencyHistogram::middle(i));
        EXPECT_LT(std::abs(mid - double(v)) / double(v), 1.0 / 32) << v;
    }
    EXPECT_LT(LatencyHistogram::index(UINT64_MAX), size_t(64 - LatencyHistogram::kSubBits + 1) << LatencyHistogram::kSubBits);
}

TEST(LatencyHistogram, MergedPercentilesCoverBoth) {
    LatencyHistogram a, b;
    for (int i = 0; i < 99; i++) a.add(1000);
    b.add(1000000);
    a.merge(b);
    EXPECT_EQ(a.count(), 100u);
    EXPECT_EQ(a.max(), 1000000u);
    EXPECT_NEAR(double(a.percentile(0.5)), 1000, 32);
    EXPECT_NEAR(double(a.percentile(1.0)), 1000000, 1000000 / 32);
    EXPECT_NEAR(a.mean(), (99 * 1000 + 1000000) / 100.0, 1);
}

// ---------------------------------------------------------------- options, plan

std::expected<Options, std::string> parse(std::initializer_list<std::string> words) {
    std::vector<std::string> v(words);
    return parse_options(v);
}

TEST(Options, ParsesAWorkload) {
    auto o = parse({"--socket", "/s", "--rw", "randwrite", "--bs", "64k", "--iodepth", "16", "--queues", "2",
                    "--wait", "poll", "--verify", "--no-indirect", "--size", "1G"});
    ASSERT_TRUE(o) << o.error();
    EXPECT_EQ(o->rw, Rw::kRandWrite);
    EXPECT_EQ(o->bs, 65536u);
    EXPECT_EQ(o->iodepth, 16);
    EXPECT_EQ(o->wait, WaitMode::kPoll);
    EXPECT_TRUE(o->verify);
    EXPECT_FALSE(o->indirect);
    EXPECT_EQ(*o->size, uint64_t(1) << 30);
    EXPECT_EQ(*o->runtime_s, 5.0);
}

TEST(Options, ChecksAloneMeanNoWorkload) {
    auto o = parse({"--socket", "/s", "--check", "rw,flush"});
    ASSERT_TRUE(o);
    EXPECT_EQ(o->checks, unsigned(kCheckRw | kCheckFlush));
    EXPECT_EQ(*o->runtime_s, 0.0);
}

TEST(Options, RejectsNonsense) {
    EXPECT_FALSE(parse({"--rw", "read"})) << "no socket";
    EXPECT_FALSE(parse({"--socket", "/s", "--bs", "1000"}));
    EXPECT_FALSE(parse({"--socket", "/s", "--rw", "trim"}));
    EXPECT_FALSE(parse({"--socket", "/s", "--queue-size", "100"})) << "not a power of two";
    EXPECT_FALSE(parse({"--socket", "/s", "--check", "everything"}));
    EXPECT_FALSE(parse({"--socket", "/s", "--read-to", "f"})) << "no --length";
    EXPECT_FALSE(parse({"--socket", "/s", "--iodepth"})) << "no value";
    EXPECT_FALSE(parse({"--socket", "/s", "--frobnicate"}));
}

DeviceLimits disk(uint64_t bytes) {
    DeviceLimits l;
    l.capacity_bytes = bytes;
    return l;
}

TEST(Plan, QueueSizeFollowsIodepthAndDescriptorsPerRequest) {
    auto o = parse({"--socket", "/s", "--iodepth", "128"});
    auto p = make_plan(*o, disk(1 << 30), true);
    ASSERT_TRUE(p) << p.error();
    EXPECT_EQ(p->queue_size, 256) << "indirect: one descriptor per request, at least 256";
    p = make_plan(*o, disk(1 << 30), false);
    EXPECT_EQ(p->queue_size, 512) << "3 descriptors x 128";
    o = parse({"--socket", "/s", "--iodepth", "128", "--queue-size", "256"});
    EXPECT_FALSE(make_plan(*o, disk(1 << 30), false));
}

TEST(Plan, SlicesTheRangePerQueue) {
    auto o = parse({"--socket", "/s", "--queues", "2", "--offset", "1M", "--size", "10M"});
    auto p = make_plan(*o, disk(64 << 20), true);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->range_offset, 1u << 20);
    EXPECT_EQ(p->slice_blocks, 1280u);
    EXPECT_EQ(p->range_bytes, 10u << 20);
    p = make_plan(*o, disk(4 << 20), true);  // only 3 MiB after the offset
    EXPECT_EQ(p->range_bytes, 3u << 20);
    o = parse({"--socket", "/s", "--verify", "--iodepth", "16", "--size", "64k"});
    EXPECT_FALSE(make_plan(*o, disk(1 << 30), true)) << "16 blocks, iodepth 16: nothing free to verify";
    DeviceLimits ro = disk(1 << 30);
    ro.read_only = true;
    o = parse({"--socket", "/s", "--rw", "write"});
    EXPECT_FALSE(make_plan(*o, ro, true));
}

// ---------------------------------------------------------------- channel

// A scripted back end: accepts one connection and runs `script` on it.
class FakeBackend {
public:
    explicit FakeBackend(std::function<void(int)> script) {
        char tmpl[] = "/tmp/vublk-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        path_ = dir_ + "/sock";
        listen_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path_.c_str());
        EXPECT_EQ(::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(listen_, 1), 0);
        thread_ = std::thread([this, script] {
            const int c = ::accept(listen_, nullptr, nullptr);
            script(c);
            ::close(c);
        });
    }
    ~FakeBackend() {
        thread_.join();
        ::close(listen_);
        ::unlink(path_.c_str());
        ::rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }

private:
    std::string dir_, path_;
    int listen_;
    std::thread thread_;
};

// Reads one message (header + payload) and the fds that came with it.
MsgHeader read_message(int fd, std::vector<uint8_t>& payload, std::vector<int>& fds) {
    MsgHeader h{};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
    iovec iov{&h, sizeof h};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    EXPECT_EQ(::recvmsg(fd, &mh, MSG_WAITALL), ssize_t(sizeof h));
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            fds.push_back(f);
        }
    payload.resize(h.size);
    if (h.size) {
        EXPECT_EQ(::recv(fd, payload.data(), h.size, MSG_WAITALL), ssize_t(h.size));
    }
    return h;
}

void reply(int fd, uint32_t request, uint32_t flags, uint64_t value) {
    struct __attribute__((packed)) {
        MsgHeader h;
        uint64_t v;
    } m{{request, flags, 8}, value};
    EXPECT_EQ(::send(fd, &m, sizeof m, 0), ssize_t(sizeof m));
}

TEST(Channel, SendsFdsWithTheHeaderAndChecksTheAck) {
    std::atomic<uint32_t> seen_flags{0};
    std::atomic<int> fds_seen{0};
    FakeBackend backend([&](int c) {
        std::vector<uint8_t> payload;
        std::vector<int> fds;
        MsgHeader h = read_message(c, payload, fds);  // SET_VRING_KICK with an fd, needs an ack
        seen_flags = h.flags;
        fds_seen = int(fds.size());
        for (int f : fds) ::close(f);
        reply(c, h.request, kVersion | kFlagReply, 0);
        fds.clear();
        h = read_message(c, payload, fds);  // SET_OWNER: answered with a failure
        reply(c, h.request, kVersion | kFlagReply, 1);
        h = read_message(c, payload, fds);  // GET_FEATURES: answered for another request
        reply(c, uint32_t(Request::kGetProtocolFeatures), kVersion | kFlagReply, 5);
        h = read_message(c, payload, fds);  // GET_FEATURES: answered without the reply bit
        reply(c, h.request, kVersion, 5);
        h = read_message(c, payload, fds);  // GET_FEATURES: answered properly
        reply(c, h.request, kVersion | kFlagReply, 0x100000000ull);
    });
    auto ch = Channel::connect(backend.path());
    ASSERT_TRUE(ch) << ch.error();
    ch->set_timeout(std::chrono::milliseconds(5000));
    ch->set_reply_ack(true);
    Message kick = Message::with(Request::kSetVringKick, uint64_t(0));
    kick.fds = {STDIN_FILENO};
    auto r = ch->command(kick);
    EXPECT_TRUE(r) << r.error();
    EXPECT_EQ(seen_flags.load(), kVersion | kFlagNeedReply);
    EXPECT_EQ(fds_seen.load(), 1);
    r = ch->command(Message::empty(Request::kSetOwner));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("SET_OWNER"), std::string::npos) << r.error();
    auto g = ch->call(Message::empty(Request::kGetFeatures), 8);
    ASSERT_FALSE(g);
    EXPECT_NE(g.error().find("GET_PROTOCOL_FEATURES"), std::string::npos) << g.error();
    g = ch->call(Message::empty(Request::kGetFeatures), 8);
    EXPECT_FALSE(g) << "no reply bit";
    g = ch->call(Message::empty(Request::kGetFeatures), 8);
    ASSERT_TRUE(g) << g.error();
    uint64_t v;
    std::memcpy(&v, g->payload.data(), 8);
    EXPECT_EQ(v, 0x100000000ull);
}

TEST(Channel, AClosedConnectionIsAnError) {
    FakeBackend backend([](int c) {
        std::vector<uint8_t> payload;
        std::vector<int> fds;
        read_message(c, payload, fds);  // and hang up
    });
    auto ch = Channel::connect(backend.path());
    ASSERT_TRUE(ch);
    auto g = ch->call(Message::empty(Request::kGetFeatures), 8);
    ASSERT_FALSE(g);
    EXPECT_NE(g.error().find("closed"), std::string::npos) << g.error();
}

}  // namespace
}  // namespace ioplane::vublk
