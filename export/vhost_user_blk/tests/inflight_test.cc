// Unit tests of in-flight tracking (inflight.h): the shared area, and a back
// end killed at each point of taking and completing requests, then replaced
// by a new one over the same guest memory and area.
#include "inflight.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "test_memory.h"

namespace ioplane::vhost_user {
namespace {

using test::DriverRing;
using test::FakeGuest;

InflightDescription new_area(uint16_t queues, uint16_t size, UniqueFd& fd) {
    InflightDescription d;
    auto r = InflightArea::create(queues, size, d, fd);
    EXPECT_TRUE(r) << r.error().message;
    return d;
}

std::shared_ptr<InflightArea> map_new_area(uint16_t queues, uint16_t size) {
    UniqueFd fd;
    const InflightDescription d = new_area(queues, size, fd);
    auto area = InflightArea::map(d, fd);
    EXPECT_TRUE(area) << area.error().message;
    return area ? *area : nullptr;
}

// QueueRegionSplit's fields, for tests that look at or spoil the region.
template <class T>
T field(const uint8_t* region, size_t offset) {
    T v;
    std::memcpy(&v, region + offset, sizeof v);
    return v;
}
template <class T>
void set_field(uint8_t* region, size_t offset, T v) {
    std::memcpy(region + offset, &v, sizeof v);
}
constexpr size_t kAtVersion = 8, kAtDescNum = 10, kAtLastBatchHead = 12, kAtUsedIdx = 14;
size_t desc_inflight(uint16_t i) { return 16 + 16 * size_t(i); }

TEST(InflightArea, RegionsFollowLibvhostUsersSpacing) {
    EXPECT_EQ(InflightArea::region_size(128), 2112u);  // 16 * 128 + 2, rounded up to 64
    EXPECT_EQ(InflightArea::region_size(1), 64u);
    for (uint32_t n = 1; n <= 32768; n++) EXPECT_GE(InflightArea::region_size(uint16_t(n)), 16 + 16ull * n) << n;
}

TEST(InflightArea, CreateMakesASealedZeroedMemfdOfTheWholeSize) {
    UniqueFd fd;
    const InflightDescription d = new_area(2, 128, fd);
    EXPECT_EQ(d.mmap_size, 2 * 2112u);
    EXPECT_EQ(d.mmap_offset, 0u);
    EXPECT_EQ(d.num_queues, 2);
    EXPECT_EQ(d.queue_size, 128);
    EXPECT_EQ(lseek(fd.get(), 0, SEEK_END), off_t(d.mmap_size));
    const int seals = fcntl(fd.get(), F_GET_SEALS);
    EXPECT_TRUE(seals & F_SEAL_SHRINK);
    EXPECT_NE(ftruncate(fd.get(), 16), 0) << "the area must not shrink under the mapping";
    auto area = InflightArea::map(d, fd);
    ASSERT_TRUE(area);
    EXPECT_EQ((*area)->region(1) - (*area)->region(0), 2112);
    for (size_t i = 0; i < d.mmap_size; i++) ASSERT_EQ((*area)->region(0)[i], 0) << i;
}

TEST(InflightArea, MapRefusesDescriptionsTheFileCannotHold) {
    UniqueFd fd;
    const InflightDescription good = new_area(2, 64, fd);
    auto expect_refused = [&](InflightDescription d, const char* what) {
        auto r = InflightArea::map(d, fd);
        EXPECT_FALSE(r) << what;
        if (!r) {
            EXPECT_EQ(r.error().code, EPROTO) << what;
        }
    };
    InflightDescription d = good;
    d.num_queues = 0;
    expect_refused(d, "no queues");
    d = good;
    d.queue_size = 0;
    expect_refused(d, "queues of no descriptors");
    d = good;
    d.mmap_size = good.mmap_size - 1;
    expect_refused(d, "smaller than its regions");
    d = good;
    d.num_queues = 3;
    d.mmap_size = 3 * InflightArea::region_size(64);
    expect_refused(d, "past the end of the file");
    d = good;
    d.mmap_offset = 100;
    expect_refused(d, "offset not page-aligned");
    d = good;
    d.mmap_offset = ~0ull & ~4095ull;
    expect_refused(d, "offset that wraps");
    auto pipe_fds = std::array<int, 2>{};
    ASSERT_EQ(pipe(pipe_fds.data()), 0);
    UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
    EXPECT_FALSE(InflightArea::map(good, r)) << "not a file";
    EXPECT_TRUE(InflightArea::map(good, fd));
}

// A back end over a FakeGuest ring and a queue region: pops, completes, and
// can be "killed" (dropped) and replaced at any step.
class InflightBackendTest : public ::testing::Test {
protected:
    static constexpr uint32_t kRing = 8;
    static constexpr size_t kData = 0x40000;

    void SetUp() override {
        area_ = map_new_area(1, kRing);
        ASSERT_TRUE(area_);
        for (uint16_t h = 0; h < kRing; h++) ring_.set_desc(h, g_.gpa(kData + 64 * h), 16, 0);
    }
    uint8_t* region() { return area_->region(0); }

    // A new back end: a ring built at the front end's `base` and a tracker
    // recovering from the region. Returns what recovery resubmits.
    std::vector<uint16_t> start_backend(uint16_t base) {
        auto ring = SplitRing::create(g_.mem(), kRing, ring_.addr(), base, false, false);
        EXPECT_TRUE(ring) << ring.error().message;
        backend_.emplace(std::move(*ring));
        tracker_.emplace(region(), kRing);
        auto rec = tracker_->recover(backend_->used_idx(), kRing);
        EXPECT_TRUE(rec) << rec.error().message;
        if (!rec || !rec->in_use) return {};
        backend_->resume_at(uint16_t(backend_->used_idx() + rec->heads.size()));
        for (uint16_t h : rec->heads) {
            std::string why;
            EXPECT_EQ(backend_->pop_head(h, chain_, why), SplitRing::Pop::ok) << why;
        }
        return rec->heads;
    }
    uint16_t take() {
        std::string why;
        EXPECT_EQ(backend_->pop(chain_, why), SplitRing::Pop::ok) << why;
        tracker_->fetched(chain_.head);
        return chain_.head;
    }
    void complete(uint16_t head) {
        tracker_->publishing(head);
        backend_->push(head, 1);
        backend_->publish_used();
        tracker_->published(head, backend_->used_idx());
    }
    // The used ring's ids, oldest first.
    std::vector<uint32_t> used_ids() {
        std::vector<uint32_t> ids;
        for (uint16_t i = 0; i != ring_.used_idx(); i++) ids.push_back(ring_.used_id(i));
        return ids;
    }

    FakeGuest g_{1 << 20};
    DriverRing ring_{g_, kRing};
    std::shared_ptr<InflightArea> area_;
    std::optional<SplitRing> backend_;
    std::optional<InflightTracker> tracker_;
    DescriptorChain chain_;
};

TEST_F(InflightBackendTest, ANewRegionIsInitializedAndTheRingStartsAtTheFrontEndsBase) {
    ring_.set_used_idx(5);
    auto ring = SplitRing::create(g_.mem(), kRing, ring_.addr(), 5, false, false);
    ASSERT_TRUE(ring);
    InflightTracker t(region(), kRing);
    auto rec = t.recover(5, kRing);
    ASSERT_TRUE(rec);
    EXPECT_FALSE(rec->in_use);
    EXPECT_TRUE(rec->heads.empty());
    EXPECT_EQ(field<uint16_t>(region(), kAtVersion), 1);
    EXPECT_EQ(field<uint16_t>(region(), kAtDescNum), kRing);
    EXPECT_EQ(field<uint16_t>(region(), kAtUsedIdx), 5);
}

TEST_F(InflightBackendTest, KilledWithRequestsCompletedOutOfOrderTheNextBackEndResubmitsExactlyTheOthers) {
    start_backend(0);
    for (uint16_t h : {0, 1, 2, 3}) ring_.make_available(h);
    EXPECT_EQ(take(), 0);
    EXPECT_EQ(take(), 1);
    EXPECT_EQ(take(), 2);
    complete(1);  // 0 and 2 still in flight; 3 not taken
    // Killed. QEMU got no GET_VRING_BASE answer and restarts the ring at the
    // used index, 1: by the rings alone head 1 would run again and 0 never.
    EXPECT_EQ(start_backend(ring_.used_idx()), (std::vector<uint16_t>{0, 2}));
    EXPECT_EQ(backend_->last_avail_idx(), 3);
    EXPECT_EQ(take(), 3);
    std::string why;
    EXPECT_EQ(backend_->pop(chain_, why), SplitRing::Pop::empty);
    complete(2);
    complete(3);
    complete(0);
    EXPECT_EQ(used_ids(), (std::vector<uint32_t>{1, 2, 3, 0})) << "each request completed once";
    // Killed again with nothing in flight: nothing to resubmit.
    EXPECT_TRUE(start_backend(ring_.used_idx()).empty());
    EXPECT_EQ(backend_->last_avail_idx(), 4);
}

TEST_F(InflightBackendTest, ResubmissionFollowsTheOrderOfFetchingNotOfHeads) {
    start_backend(0);
    for (uint16_t h : {6, 2, 4}) ring_.make_available(h);
    take();
    take();
    take();
    EXPECT_EQ(start_backend(0), (std::vector<uint16_t>{6, 2, 4}));
    // And the counter goes on after the oldest resubmitted ones.
    ring_.make_available(1);
    EXPECT_EQ(take(), 1);
    EXPECT_EQ(start_backend(0), (std::vector<uint16_t>{6, 2, 4, 1}));
}

TEST_F(InflightBackendTest, KilledAfterPublishingBeforeClearingTheFlagTheBatchListFinishesIt) {
    start_backend(0);
    ring_.make_available(3);
    ring_.make_available(5);
    take();
    take();
    // complete(5) up to the used index, then killed.
    tracker_->publishing(5);
    backend_->push(5, 1);
    backend_->publish_used();
    EXPECT_EQ(field<uint8_t>(region(), desc_inflight(5)), 1);
    EXPECT_EQ(start_backend(ring_.used_idx()), (std::vector<uint16_t>{3}));
    EXPECT_EQ(field<uint8_t>(region(), desc_inflight(5)), 0);
    EXPECT_EQ(field<uint16_t>(region(), kAtUsedIdx), 1);
    EXPECT_EQ(backend_->last_avail_idx(), 2);
}

TEST_F(InflightBackendTest, KilledBeforeTheUsedIndexMovedTheRequestRunsAgain) {
    start_backend(0);
    ring_.make_available(4);
    take();
    tracker_->publishing(4);
    backend_->push(4, 1);  // written, not published
    EXPECT_EQ(start_backend(ring_.used_idx()), (std::vector<uint16_t>{4}));
    EXPECT_EQ(backend_->last_avail_idx(), 1);
}

TEST_F(InflightBackendTest, RegionsNoBackEndCouldLeaveAreRefused) {
    start_backend(0);
    ring_.make_available(1);
    take();
    std::vector<uint8_t> saved(region(), region() + InflightArea::region_size(kRing));
    auto expect_refused = [&](const char* what, auto spoil, uint32_t ring_size = kRing) {
        std::memcpy(region(), saved.data(), saved.size());
        spoil();
        InflightTracker t(region(), kRing);
        auto rec = t.recover(ring_.used_idx(), ring_size);
        EXPECT_FALSE(rec) << what;
        if (!rec) {
            EXPECT_EQ(rec.error().code, EPROTO) << what;
        }
    };
    expect_refused("version 7", [&] { set_field<uint16_t>(region(), kAtVersion, 7); });
    expect_refused("another descriptor count", [&] { set_field<uint16_t>(region(), kAtDescNum, 16); });
    expect_refused("a flag of 2", [&] { set_field<uint8_t>(region(), desc_inflight(1), 2); });
    expect_refused("a head beyond the ring", [&] {}, 1);
    expect_refused("used index far ahead", [&] { set_field<uint16_t>(region(), kAtUsedIdx, 60000); });
    expect_refused("batch list out of the ring", [&] {
        set_field<uint16_t>(region(), kAtUsedIdx, uint16_t(ring_.used_idx() - 1));
        set_field<uint16_t>(region(), kAtLastBatchHead, 9);
    });
    InflightTracker t(region(), kRing);
    EXPECT_FALSE(t.recover(0, 16)) << "a ring larger than the region";
    // A batch list that loops is walked only as far as the batch goes.
    std::memcpy(region(), saved.data(), saved.size());
    set_field<uint16_t>(region(), kAtUsedIdx, uint16_t(ring_.used_idx() - 3));
    set_field<uint16_t>(region(), kAtLastBatchHead, 1);
    set_field<uint16_t>(region(), desc_inflight(1) + 6, 1);  // next = itself
    auto rec = t.recover(ring_.used_idx(), kRing);
    ASSERT_TRUE(rec) << rec.error().message;
    EXPECT_TRUE(rec->heads.empty());
}

TEST_F(InflightBackendTest, PopHeadRefusesHeadsOutOfRangeOrInFlight) {
    start_backend(0);
    std::string why;
    EXPECT_EQ(backend_->pop_head(8, chain_, why), SplitRing::Pop::broken);
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(backend_->pop_head(2, chain_, why), SplitRing::Pop::ok) << why;
    EXPECT_EQ(chain_.head, 2);
    EXPECT_EQ(backend_->last_avail_idx(), 0) << "not taken from the avail ring";
    EXPECT_EQ(backend_->pop_head(2, chain_, why), SplitRing::Pop::broken);
}

}  // namespace
}  // namespace ioplane::vhost_user
