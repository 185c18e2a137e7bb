// A node's dirty bitmaps: what the request path marks (writes, write-zeroes
// and discards through an edge, failed ones too; reads never; disabled
// bitmaps never), read-only bitmaps refusing writes, truncates resizing,
// nodes of a chain each marking their own, an IOThread marking while the
// main thread reads, and the list's rules (names, granularities, merge
// checks) with QEMU's messages.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"
#include "test_drivers.h"
#include "test_io.h"

namespace ioplane::block {
namespace {

using testing::MemDriver;
using testing::MemLimits;
using testing::read_bytes;
using testing::write_pattern;

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

// Stores nothing and reads zeroes; can be told to fail writes, reports a
// cluster size, truncates, and may claim a size no memory could hold.
class SizedDriver final : public Driver {
public:
    SizedDriver(uint64_t size, uint64_t cluster) : size_(size), cluster_(cluster) {}
    const char* format_name() const override { return "sized"; }
    Task<Result<void>> co_preadv(uint64_t, uint64_t, std::span<const iovec> iov) override {
        for (const iovec& v : iov) std::memset(v.iov_base, 0, v.iov_len);
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwritev(uint64_t, uint64_t, std::span<const iovec>, uint32_t) override {
        if (fail_writes) co_return fail(EIO, "injected");
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) override {
        if (fail_writes) co_return fail(EIO, "injected");
        co_return Result<void>{};
    }
    Task<Result<void>> co_pdiscard(uint64_t, uint64_t) override { co_return Result<void>{}; }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    Task<Result<void>> co_truncate(uint64_t size) override {
        size_ = size;
        co_return Result<void>{};
    }
    uint64_t length() const override { return size_; }
    uint64_t cluster_size() const override { return cluster_; }
    DriverCaps caps() const override { return {.can_discard = true, .can_write_zeroes = true, .can_truncate = true}; }

    bool fail_writes = false;

private:
    uint64_t size_;
    const uint64_t cluster_;
};

// Passes everything to its one child ("filtered" role), as a filter does.
class PassDriver final : public Driver {
public:
    const char* format_name() const override { return "pass"; }
    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return below().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        return below().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
        return below().co_pwrite_zeroes(offset, bytes, flags);
    }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    uint64_t length() const override { return below().child().driver().length(); }
    uint64_t cluster_size() const override { return below().child().driver().cluster_size(); }
    DriverCaps caps() const override { return {.can_fua = true}; }

private:
    BlockEdge& below() const { return *node().children().front(); }
};

class DirtyBitmapTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
    }
    AioContext& main() { return loop_->ctx(); }
    template <class T>
    T run(Task<T> task) {
        return block_on(main(), std::move(task));
    }
    std::shared_ptr<BlockNode> mem(const std::string& name, uint64_t size, MemLimits limits = {},
                                   AioContext* ctx = nullptr) {
        auto node = std::make_shared<BlockNode>(name, std::make_unique<MemDriver>(size, limits), ctx ? *ctx : main(),
                                                false);
        node->set_discard_and_sharing(/*unmap=*/true, false);
        node->refresh_limits();
        return node;
    }
    std::shared_ptr<BlockNode> sized(const std::string& name, uint64_t size, uint64_t cluster = 0) {
        auto node = std::make_shared<BlockNode>(name, std::make_unique<SizedDriver>(size, cluster), main(), false);
        node->set_discard_and_sharing(true, false);
        node->refresh_limits();
        return node;
    }
    // As the monitor does it: in a drained section.
    static DirtyBitmap* add(BlockNode& node, const std::string& name, uint64_t granularity = 64 * KiB) {
        DrainedSection drained(node);
        auto b = node.dirty_bitmaps().create(name, granularity);
        EXPECT_TRUE(b) << (b ? "" : b.error().message);
        return b ? *b : nullptr;
    }
    static std::string create_error(BlockNode& node, const std::string& name, uint64_t granularity) {
        DrainedSection drained(node);
        auto b = node.dirty_bitmaps().create(name, granularity);
        return b ? "" : b.error().message;
    }
    // The dirty extents, in the node's context (here: the main loop).
    static std::vector<DirtyExtent> extents(DirtyBitmap& b) {
        std::vector<DirtyExtent> out;
        uint64_t pos = 0;
        while (auto e = b.bits().next_dirty_extent(pos)) {
            out.push_back(*e);
            pos = e->offset + e->bytes;
        }
        return out;
    }

    std::unique_ptr<MainLoop> loop_;
};

TEST_F(DirtyBitmapTest, WritesZeroesAndDiscardsMarkReadsDoNot) {
    auto node = mem("m", MiB);
    DirtyBitmap* b = add(*node, "b");
    ASSERT_TRUE(b);
    EXPECT_TRUE(node->dirty_bitmaps().tracking());
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(read_bytes(blk, 0, 128 * KiB)));
    EXPECT_EQ(b->dirty_bytes(), 0u);
    ASSERT_TRUE(run(write_pattern(blk, 4096, 4096, 'x')));               // chunk 0
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(200 * KiB, 1, 0)));             // chunk 3
    ASSERT_TRUE(run(blk.co_pdiscard(512 * KiB, 64 * KiB)));              // chunk 8
    ASSERT_TRUE(run(write_pattern(blk, 64 * KiB - 1, 2, 'y')));          // chunks 0 and 1
    ASSERT_TRUE(run(write_pattern(blk, MiB - 1, 1, 'z', kWriteFua)));    // chunk 15
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(300 * KiB, 0, 0)));             // nothing
    EXPECT_EQ(extents(*b), (std::vector<DirtyExtent>{
                               {0, 128 * KiB}, {192 * KiB, 64 * KiB}, {512 * KiB, 64 * KiB}, {MiB - 64 * KiB, 64 * KiB}}));
    EXPECT_EQ(b->dirty_bytes(), 5 * 64 * KiB);
    // Written data is where it was written: marking did not get in the way.
    EXPECT_EQ((*run(read_bytes(blk, 4096, 1)))[0], 'x');
}

TEST_F(DirtyBitmapTest, DisabledBitmapsStayCleanAndTheFastPathComesBack) {
    auto node = mem("m", MiB);
    DirtyBitmap* on = add(*node, "on");
    DirtyBitmap* off = add(*node, "off");
    {
        DrainedSection d(*node);
        off->set_enabled(false);
    }
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 0, 4096, 'x')));
    ASSERT_TRUE(run(blk.co_pdiscard(128 * KiB, 4096)));
    EXPECT_EQ(on->dirty_bytes(), 2 * 64 * KiB);
    EXPECT_EQ(off->dirty_bytes(), 0u);
    {
        DrainedSection d(*node);
        on->set_enabled(false);
    }
    EXPECT_FALSE(node->dirty_bitmaps().tracking());  // writes take the fast path again
    ASSERT_TRUE(run(write_pattern(blk, 512 * KiB, 4096, 'x')));
    EXPECT_EQ(on->dirty_bytes(), 2 * 64 * KiB);
    {
        DrainedSection d(*node);
        off->set_enabled(true);
        node->dirty_bitmaps().release(*on);
    }
    EXPECT_TRUE(node->dirty_bitmaps().tracking());
    ASSERT_TRUE(run(write_pattern(blk, 512 * KiB, 4096, 'x')));
    EXPECT_EQ(off->dirty_bytes(), 64 * KiB);
    {
        DrainedSection d(*node);
        node->dirty_bitmaps().release(*off);
    }
    EXPECT_FALSE(node->dirty_bitmaps().tracking());
    EXPECT_TRUE(node->dirty_bitmaps().empty());
}

// QEMU marks when the write request finishes, whatever its result: the
// data may have changed in part.
TEST_F(DirtyBitmapTest, FailedWritesMarkToo) {
    auto node = sized("s", MiB);
    DirtyBitmap* b = add(*node, "b");
    static_cast<SizedDriver&>(node->driver()).fail_writes = true;
    BlockBackend blk(node, true);
    EXPECT_FALSE(run(write_pattern(blk, 0, 4096, 'x')));
    EXPECT_FALSE(run(blk.co_pwrite_zeroes(128 * KiB, 4096, 0)));
    EXPECT_EQ(b->dirty_bytes(), 2 * 64 * KiB);
    // A request refused before it reaches the driver (past the end) does not.
    EXPECT_FALSE(run(write_pattern(blk, MiB - 1, 2, 'x')));
    EXPECT_EQ(b->dirty_bytes(), 2 * 64 * KiB);
}

// An unaligned write is padded to the driver's alignment, but only the
// bytes it was asked to write count as changed.
TEST_F(DirtyBitmapTest, UnalignedWritesMarkTheirOwnRange) {
    auto node = mem("m", MiB, {.request_alignment = 4096});
    DirtyBitmap* b = add(*node, "b", 512);
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 1000, 100, 'x')));
    EXPECT_EQ(extents(*b), (std::vector<DirtyExtent>{{512, 1024}}));
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(8192 + 10, 5000, 0)));  // head, aligned middle, tail
    EXPECT_EQ(extents(*b), (std::vector<DirtyExtent>{{512, 1024}, {8192, 5120}}));
}

TEST_F(DirtyBitmapTest, WithoutDiscardUnmapDiscardsDoNothingAndMarkNothing) {
    auto node = mem("m", MiB);
    node->set_discard_and_sharing(false, false);
    DirtyBitmap* b = add(*node, "b");
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(blk.co_pdiscard(0, MiB)));
    EXPECT_EQ(b->dirty_bytes(), 0u);
}

TEST_F(DirtyBitmapTest, ReadOnlyBitmapRefusesWritesButNotReads) {
    auto node = mem("m", MiB);
    DirtyBitmap* b = add(*node, "b");
    {
        DrainedSection d(*node);
        b->set_enabled(false);
        b->set_readonly(true);
    }
    EXPECT_TRUE(node->dirty_bitmaps().tracking());
    BlockBackend blk(node, true);
    for (auto r : {run(write_pattern(blk, 0, 4096, 'x')), run(blk.co_pwrite_zeroes(0, 4096, 0)),
                   run(blk.co_pdiscard(0, 4096))}) {
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, EPERM);
        EXPECT_EQ(r.error().message, "node 'm': a read-only dirty bitmap forbids writes");
    }
    EXPECT_TRUE(run(read_bytes(blk, 0, 4096)));
    EXPECT_EQ(b->check(kBitmapDefault).error().message, "Bitmap 'b' is readonly and cannot be modified");
    EXPECT_TRUE(b->check(kBitmapAllowReadOnly));
}

// Each node records the writes that pass through its own request path: a
// filter's and its child's bitmaps both see a write through the filter; a
// write to the child alone marks only the child's.
TEST_F(DirtyBitmapTest, EachNodeOfAChainMarksItsOwn) {
    auto file = mem("f", MiB);
    auto top = std::make_shared<BlockNode>("t", std::make_unique<PassDriver>(), main(), false);
    ASSERT_TRUE(top->attach_child(ChildRole::filtered, file));
    top->refresh_limits();
    DirtyBitmap* bt = add(*top, "b");
    DirtyBitmap* bf = add(*file, "b");  // the same name on another node
    BlockBackend blk(top, true);
    ASSERT_TRUE(run(write_pattern(blk, 0, 4096, 'x')));
    EXPECT_EQ(bt->dirty_bytes(), 64 * KiB);
    EXPECT_EQ(bf->dirty_bytes(), 64 * KiB);
    {
        BlockBackend side(file, true, "side", false);
        ASSERT_TRUE(run(write_pattern(side, 256 * KiB, 4096, 'y')));
    }
    EXPECT_EQ(bt->dirty_bytes(), 64 * KiB);
    EXPECT_EQ(bf->dirty_bytes(), 2 * 64 * KiB);
}

TEST_F(DirtyBitmapTest, TruncateResizesBitmapsAndTheNewBytesAreClean) {
    auto node = sized("s", MiB);
    DirtyBitmap* b = add(*node, "b");
    BlockBackend blk(node, true, "resizer", /*resize=*/true);
    ASSERT_TRUE(run(write_pattern(blk, MiB - 1, 1, 'x')));
    ASSERT_TRUE(run(blk.co_truncate(2 * MiB + 100)));
    EXPECT_EQ(b->bits().length(), 2 * MiB + 100);
    EXPECT_EQ(extents(*b), (std::vector<DirtyExtent>{{MiB - 64 * KiB, 64 * KiB}}));
    ASSERT_TRUE(run(write_pattern(blk, 2 * MiB + 99, 1, 'x')));  // the new partial chunk
    EXPECT_EQ(b->dirty_bytes(), 2 * 64 * KiB);
    ASSERT_TRUE(run(blk.co_truncate(MiB / 2)));
    EXPECT_EQ(b->dirty_bytes(), 0u);
    EXPECT_EQ(b->bits().chunks(), 8u);
}

TEST_F(DirtyBitmapTest, NamesGranularitiesAndMemoryAreCheckedWithQemusMessages) {
    auto node = sized("s", MiB);
    ASSERT_TRUE(add(*node, "a"));
    EXPECT_EQ(create_error(*node, "a", 64 * KiB), "Bitmap already exists: a");
    EXPECT_EQ(create_error(*node, std::string(1024, 'n'), 64 * KiB), "Bitmap name too long: " + std::string(1024, 'n'));
    EXPECT_EQ(create_error(*node, std::string(1023, 'n'), 64 * KiB), "");
    for (uint64_t g : {uint64_t{0}, uint64_t{256}, uint64_t{3000}, uint64_t{1} << 32})
        EXPECT_EQ(create_error(*node, "g", g), "Granularity must be power of 2 and at least 512") << g;
    EXPECT_EQ(create_error(*node, "g", uint64_t{1} << 31), "");
    // Anonymous bitmaps: any number, never found by name.
    DirtyBitmap* anon1 = add(*node, "");
    DirtyBitmap* anon2 = add(*node, "");
    ASSERT_TRUE(anon1 && anon2 && anon1 != anon2);
    EXPECT_EQ(node->dirty_bitmaps().find(""), nullptr);
    EXPECT_EQ(node->dirty_bitmaps().find("a")->name(), "a");
    EXPECT_EQ(node->dirty_bitmaps().list().front().get(), anon2);  // newest first
    // A node whose bits would not fit.
    auto huge = sized("huge", uint64_t{1} << 60);
    EXPECT_TRUE(create_error(*huge, "b", 512).starts_with("A dirty bitmap of node 'huge' with granularity 512 would take"));
    EXPECT_EQ(create_error(*huge, "b", uint64_t{1} << 31), "");
}

TEST_F(DirtyBitmapTest, DefaultGranularityIsTheClusterSizeClamped) {
    for (auto [cluster, want] : std::map<uint64_t, uint64_t>{
             {0, 64 * KiB}, {512, 4 * KiB}, {4 * KiB, 4 * KiB}, {32 * KiB, 32 * KiB}, {2 * MiB, 64 * KiB}}) {
        auto node = sized("s", MiB, cluster);
        EXPECT_EQ(node->dirty_bitmaps().default_granularity(), want) << cluster;
        // Through a filter: its child's.
        auto top = std::make_shared<BlockNode>("t", std::make_unique<PassDriver>(), main(), false);
        ASSERT_TRUE(top->attach_child(ChildRole::filtered, node));
        EXPECT_EQ(top->dirty_bitmaps().default_granularity(), want) << cluster;
    }
    // No format here stores persistent bitmaps.
    auto node = sized("s", MiB);
    auto r = node->dirty_bitmaps().can_store("p", 64 * KiB);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ENOTSUP);
    EXPECT_EQ(r.error().message, "Can't store persistent bitmaps to s: Operation not supported");
}

TEST_F(DirtyBitmapTest, MergeChecksBothBitmapsAndKeepsTheTargetOnError) {
    auto node = sized("s", MiB), other = sized("o", 2 * MiB);
    DirtyBitmap* target = add(*node, "t", 64 * KiB);
    DirtyBitmap* fine = add(*node, "f", 4 * KiB);
    DirtyBitmap* big = add(*other, "big");
    BlockBackend blk(node, true);
    {
        DrainedSection d(*node);
        target->set_enabled(false);  // only `fine` sees the write
    }
    ASSERT_TRUE(run(write_pattern(blk, 5000, 1, 'x')));
    DrainedSection d1(*node), d2(*other);
    ASSERT_TRUE(target->merge_from(*fine));  // different granularities
    EXPECT_EQ(extents(*target), (std::vector<DirtyExtent>{{0, 64 * KiB}}));
    EXPECT_EQ(target->merge_from(*big).error().message,
              "Bitmaps are of different sizes (destination size is 1048576, source size is 2097152) and can't be "
              "merged");
    target->set_busy(true);
    EXPECT_EQ(target->merge_from(*fine).error().message,
              "Bitmap 't' is currently in use by another operation and cannot be used");
    target->set_busy(false);
    fine->set_busy(true);
    EXPECT_EQ(target->merge_from(*fine).error().message,
              "Bitmap 'f' is currently in use by another operation and cannot be used");
    fine->set_busy(false);
    fine->set_readonly(true);  // a read-only source may be read
    EXPECT_TRUE(target->merge_from(*fine));
    fine->set_readonly(false);
    fine->set_persistent(true);
    fine->set_inconsistent();
    EXPECT_FALSE(fine->enabled());
    EXPECT_EQ(target->merge_from(*fine).error().message, "Bitmap 'f' is inconsistent and cannot be used");
    EXPECT_EQ(extents(*target), (std::vector<DirtyExtent>{{0, 64 * KiB}}));
}

// A node in an IOThread: its writes mark there, the main thread reads the
// count at any time and the bits in a drained section.
TEST_F(DirtyBitmapTest, AnIOThreadMarksWhileTheMainThreadReads) {
    auto io = IOThread::start({.id = "io-bitmap"});
    ASSERT_TRUE(io);
    auto node = mem("m", 16 * MiB, {.max_delay_ns = 200'000}, &(*io)->ctx());
    DirtyBitmap* b = add(*node, "b", 4 * KiB);
    BlockBackend blk(node, true);
    std::atomic<int> finished{0};
    auto writer = [](BlockBackend& blk, int lane, std::atomic<int>& finished) -> Task<void> {
        for (uint64_t i = 0; i < 256; i++) {
            // Every fourth 4 KiB block of this lane's quarter.
            auto r = co_await write_pattern(blk, uint64_t(lane) * 4 * MiB + i * 16 * KiB, 4096, 'w');
            EXPECT_TRUE(r);
        }
        finished++;
    };
    for (int lane = 0; lane < 4; lane++) spawn((*io)->ctx(), writer(blk, lane, finished));
    uint64_t last = 0;
    while (finished < 4) {
        const uint64_t now = b->dirty_bytes();  // any thread
        EXPECT_GE(now, last);
        last = now;
        {
            DrainedSection d(*node);
            EXPECT_EQ(b->bits().dirty_bytes(), b->dirty_bytes());
        }
        std::this_thread::yield();
    }
    EXPECT_EQ(b->dirty_bytes(), 4u * 256 * 4 * KiB);
    DrainedSection d(*node);
    const std::vector<DirtyExtent> all = extents(*b);
    for (const DirtyExtent& e : all) {
        EXPECT_EQ(e.bytes, 4 * KiB);
        EXPECT_EQ(e.offset % (16 * KiB), 0u);
    }
    const size_t n = all.size();
    EXPECT_EQ(n, 1024u);
}

// Bitmaps go with their node (leak checkers would see any left).
TEST_F(DirtyBitmapTest, BitmapsGoWithTheirNode) {
    BlockGraph graph;
    auto node = graph.open(OptionTree{{{"driver", "null-co"}, {"node-name", "n"}, {"size", "1M"}}, OptionSyntax::keyval},
                           main());
    ASSERT_TRUE(node);
    ASSERT_TRUE(add(**node, "b"));
    std::weak_ptr<BlockNode> weak = *node;
    node->reset();
    ASSERT_TRUE(graph.remove("n"));
    EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace ioplane::block
