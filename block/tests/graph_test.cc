// The block layer's middle: edges and permissions, the request path
// (alignment, read-modify-write, splitting, FUA, tracked requests), drained
// sections across a graph, block status down a chain, reopen, child
// replacement and node-names of children.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "ioplane/block/backend.h"
#include "ioplane/block/chain.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"
#include "test_drivers.h"
#include "test_io.h"

namespace ioplane::block {
namespace {

using nlohmann::json;
using testing::CowDriver;
using testing::MemDriver;
using testing::MemLimits;

// Passes requests to its one child. As a "file" child it is a format with
// QEMU's default permissions for one (write when writable, shares no
// write); as a "filtered" child, a filter. No native FUA.
class FormatDriver final : public Driver {
public:
    const char* format_name() const override { return "fmt"; }
    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        return below().co_preadv(offset, bytes, iov);
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov,
                                  uint32_t flags) override {
        return below().co_pwritev(offset, bytes, iov, flags);
    }
    Task<Result<void>> co_flush() override { co_return Result<void>{}; }
    uint64_t length() const override { return below().child().driver().length(); }
    DriverCaps caps() const override { return {.can_fua = false}; }

private:
    BlockEdge& below() const { return *node().children().front(); }
};

class GraphTest : public ::testing::Test {
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
                                   AioContext* ctx = nullptr, MemDriver** driver = nullptr) {
        auto d = std::make_unique<MemDriver>(size, limits);
        if (driver) *driver = d.get();
        auto node = std::make_shared<BlockNode>(name, std::move(d), ctx ? *ctx : main(), false);
        node->refresh_limits();
        return node;
    }
    std::shared_ptr<BlockNode> format_over(const std::string& name, std::shared_ptr<BlockNode> file,
                                           bool read_only = false) {
        auto node = std::make_shared<BlockNode>(name, std::make_unique<FormatDriver>(), file->ctx(), read_only);
        auto edge = node->attach_child(ChildRole::file, std::move(file));
        EXPECT_TRUE(edge) << (edge ? "" : edge.error().describe());
        node->refresh_limits();
        return node;
    }
    std::shared_ptr<BlockNode> cow(const std::string& name, uint64_t size, std::shared_ptr<BlockNode> backing) {
        auto node = std::make_shared<BlockNode>(name, std::make_unique<CowDriver>(size), main(), false);
        if (backing) {
            EXPECT_TRUE(node->attach_child(ChildRole::backing, std::move(backing)));
        }
        node->refresh_limits();
        return node;
    }

    std::unique_ptr<MainLoop> loop_;
};

using testing::read_bytes;
using testing::write_bytes;

// --- Permissions -----------------------------------------------------------

TEST_F(GraphTest, AWriterOnAFormatsFileConflictsNamingBothUsers) {
    auto file = mem("f", 1 << 20);
    auto fmt = format_over("q", file);
    // The format takes write on its file and shares none.
    auto r = BlockBackend::can_attach(*file, true, "export 'e1'");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPERM);
    for (const char* needle : {"Permission conflict on node 'f'", "'write", "export 'e1'", "node 'q'", "'file' child"})
        EXPECT_NE(r.error().message.find(needle), std::string::npos) << needle << " in " << r.error().message;
    // Reading beside it is fine, and so is writing through the format.
    EXPECT_TRUE(BlockBackend::can_attach(*file, false, "export 'e2'"));
    EXPECT_TRUE(BlockBackend::can_attach(*fmt, true, "export 'e3'"));
}

TEST_F(GraphTest, AFormatCannotTakeAFileAWriterUses) {
    auto file = mem("f", 1 << 20);
    BlockBackend writer(file, true, "export 'e0'");
    auto fmt = std::make_shared<BlockNode>("q", std::make_unique<FormatDriver>(), main(), false);
    auto r = fmt->attach_child(ChildRole::file, file);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("export 'e0'"), std::string::npos) << r.error().message;
    EXPECT_TRUE(file->parents().size() == 1);  // the failed edge is gone
    // A read-only format takes no write and fits beside the writer... but
    // does not share write either, and the writer holds it: still refused.
    auto ro = std::make_shared<BlockNode>("q2", std::make_unique<FormatDriver>(), main(), true);
    EXPECT_FALSE(ro->attach_child(ChildRole::file, file));
}

TEST_F(GraphTest, PermissionsPassThroughAFilterAndAreGivenBackWhenAUserGoes) {
    auto file = mem("f", 1 << 20);
    auto top = std::make_shared<BlockNode>("t", std::make_unique<FormatDriver>(), main(), false);
    ASSERT_TRUE(top->attach_child(ChildRole::filtered, file));
    const BlockEdge& edge = *top->children().front();
    EXPECT_EQ(edge.perm(), 0u);  // nobody uses the filter yet
    {
        BlockBackend writer(top, true, "export 'e0'");
        EXPECT_EQ(edge.perm(), kPermConsistentRead | kPermWrite);
        EXPECT_FALSE(top->attach_child(ChildRole::backing, top));  // no cycles
    }
    EXPECT_EQ(edge.perm(), 0u);
}

TEST_F(GraphTest, ReadOnlyNodeRefusesWritersAndReopenReadWriteAllowsThem) {
    auto file = mem("f", 1 << 20);
    auto fmt = format_over("q", file, /*read_only=*/true);
    EXPECT_FALSE(BlockBackend::can_attach(*fmt, true, "export 'e0'"));
    {
        DrainedSection drained(*fmt);
        ASSERT_TRUE(fmt->set_read_only(false));
    }
    EXPECT_FALSE(fmt->read_only());
    EXPECT_TRUE(fmt->children().front()->perm() & kPermWrite);  // metadata writes
    BlockBackend writer(fmt, true, "export 'e0'");
    ASSERT_TRUE(run(write_bytes(writer, 0, std::vector<char>(512, 'w'))));
    // Going read-only again is refused while a writer is attached.
    DrainedSection drained(*fmt);
    auto r = fmt->set_read_only(true);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("export 'e0'"), std::string::npos) << r.error().message;
    EXPECT_FALSE(fmt->read_only());
}

// --- The request path ------------------------------------------------------

TEST_F(GraphTest, UnalignedRequestsReachTheDriverAlignedAndReadBackExactly) {
    MemDriver* d;
    auto node = mem("m", 64 << 10, {.request_alignment = 4096, .memory_alignment = 512}, nullptr, &d);
    BlockBackend blk(node, true);
    std::vector<char> expect(64 << 10, 0);
    std::mt19937 rng(7);
    for (int i = 0; i < 200; i++) {
        const uint64_t off = rng() % (60 << 10), len = 1 + rng() % 4000;
        std::vector<char> data(len, char('a' + i % 26));
        ASSERT_TRUE(run(write_bytes(blk, off, data)));
        std::copy(data.begin(), data.end(), expect.begin() + off);
    }
    auto all = run(read_bytes(blk, 0, 64 << 10));
    ASSERT_TRUE(all);
    EXPECT_TRUE(*all == expect);
    auto part = run(read_bytes(blk, 1001, 3333));  // unaligned read, unaligned buffer
    ASSERT_TRUE(part);
    EXPECT_TRUE(std::equal(part->begin(), part->end(), expect.begin() + 1001));
    EXPECT_TRUE(d->misuse.empty()) << d->misuse.front();
}

TEST_F(GraphTest, ZeroingAndDiscardOfUnalignedRangesKeepTheEdges) {
    auto node = mem("m", 16 << 10, {.request_alignment = 4096});
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_bytes(blk, 0, std::vector<char>(16 << 10, 'x'))));
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(1000, 9000, 0)));
    ASSERT_TRUE(run(blk.co_pdiscard(100, 200)));  // inside one block: nothing to do
    auto all = run(read_bytes(blk, 0, 16 << 10));
    ASSERT_TRUE(all);
    for (uint64_t i = 0; i < all->size(); i++)
        ASSERT_EQ((*all)[i], i >= 1000 && i < 10000 ? 0 : 'x') << "byte " << i;
    // A fast zero that would need a read-modify-write is refused instead.
    auto fast = run(blk.co_pwrite_zeroes(100, 512, kNoFallback));
    ASSERT_FALSE(fast);
    EXPECT_EQ(fast.error().code, ENOTSUP);
}

TEST_F(GraphTest, LargeRequestsAreSplitAtTheMaximumTransfer) {
    MemDriver* d;
    auto node = mem("m", 1 << 20, {.max_transfer = 4096}, nullptr, &d);
    BlockBackend blk(node, true);
    std::vector<char> data(20000);
    for (size_t i = 0; i < data.size(); i++) data[i] = char(i * 7);
    ASSERT_TRUE(run(write_bytes(blk, 100, data)));
    auto back = run(read_bytes(blk, 100, data.size()));
    ASSERT_TRUE(back);
    EXPECT_TRUE(*back == data);
    EXPECT_TRUE(d->misuse.empty()) << d->misuse.front();
    EXPECT_EQ(d->log.size(), 10u);  // 5 pieces each way
    EXPECT_EQ(d->log.front(), "write 100 4096");
    EXPECT_EQ(d->log[4], "write 16484 3616");
}

TEST_F(GraphTest, FuaWithoutNativeSupportIsAWriteThenAFlushDownTheGraph) {
    MemDriver* d;
    auto file = mem("f", 1 << 20, {.fua = false}, nullptr, &d);
    auto fmt = format_over("q", file);
    BlockBackend blk(fmt, true);
    ASSERT_TRUE(run(write_bytes(blk, 0, std::vector<char>(512, 'f'), kWriteFua)));
    EXPECT_EQ(d->log, (std::vector<std::string>{"write 0 512", "flush"}));
    d->log.clear();
    ASSERT_TRUE(run(blk.co_flush()));  // the format's flush reaches its file
    EXPECT_EQ(d->log, std::vector<std::string>{"flush"});
}

// Racing unaligned writes, each a read-modify-write of whole blocks, end as
// if they ran one after the other in the order they arrived (each waits for
// the older overlapping ones). Without serialising, a write's read of its
// edges can miss a neighbour's data, and the neighbour's bytes are lost.
TEST_F(GraphTest, RacingUnalignedWritesEndAsTheirSequentialOrder) {
    MemDriver* d;
    auto node = mem("m", 8192, {.request_alignment = 512, .max_delay_ns = 200'000}, nullptr, &d);
    BlockBackend blk(node, true);
    std::vector<char> expect(8192, 0);
    std::mt19937 rng(11);
    int done = 0;
    for (int round = 0; round < 20; round++) {
        std::vector<Task<void>> tasks;
        for (int i = 0; i < 12; i++) {
            const uint64_t off = rng() % 8000;
            uint64_t len = 1 + rng() % std::min<uint64_t>(700, 8192 - off);
            if (off % 512 == 0 && len % 512 == 0) len--;  // every one a read-modify-write
            std::vector<char> data(len, char(1 + (round * 12 + i) % 250));
            std::copy(data.begin(), data.end(), expect.begin() + off);  // in arrival order
            spawn(main(), [](BlockBackend& blk, uint64_t off, std::vector<char> data, int& done) -> Task<void> {
                EXPECT_TRUE(co_await write_bytes(blk, off, std::move(data)));
                done++;
            }(blk, off, std::move(data), done));
        }
        const int target = (round + 1) * 12;
        while (done < target) main().poll(true);
    }
    EXPECT_TRUE(d->data() == expect);
    EXPECT_EQ(node->in_flight(), 0u);
}

TEST_F(GraphTest, RequestsPastTheEndAndWritesWithoutPermissionAreRefused) {
    auto node = mem("m", 4096);
    BlockBackend reader(node, false);
    EXPECT_EQ(run(read_bytes(reader, 4000, 200)).error().code, EINVAL);
    auto w = run(write_bytes(reader, 0, std::vector<char>(10, 'x')));
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code, EPERM);
    BlockBackend writer(node, true);
    EXPECT_EQ(run(write_bytes(writer, 4090, std::vector<char>(10, 'x'))).error().code, ENOSPC);
}

// --- Drained sections ------------------------------------------------------

// Users of a format and of its file, in an IOThread: draining the file
// quiesces the format's user too (its requests reach the file), nests with a
// section on the format, and resumes both at the end.
TEST_F(GraphTest, DrainReachesParentsAndChildrenNestedAcrossIOThreads) {
    auto io = IOThread::start({.id = "io-graph"});
    ASSERT_TRUE(io);
    MemDriver* d;
    auto file = mem("f", 1 << 20, {.max_delay_ns = 2'000'000}, &(*io)->ctx(), &d);
    auto fmt = format_over("q", file, /*read_only=*/false);
    BlockBackend top(fmt, true, "export 'top'");
    BlockBackend side(file, false, "export 'side'");
    std::atomic<int> done{0}, finished{0};
    std::atomic<bool> stop{false};
    auto loop = [](BlockBackend& blk, std::atomic<int>& done, std::atomic<bool>& stop,
                   std::atomic<int>& finished) -> Task<void> {
        while (!stop) {
            // Counted as an export counts (the drain covers done++ too).
            co_await blk.co_begin_request();
            EXPECT_TRUE(co_await read_bytes(blk, 4096, 4096));
            done++;
            blk.end_request();
        }
        finished++;
    };
    top.disable_request_queuing();
    side.disable_request_queuing();
    for (int i = 0; i < 4; i++) {
        spawn((*io)->ctx(), loop(top, done, stop, finished));
        spawn((*io)->ctx(), loop(side, done, stop, finished));
    }
    while (done < 20) std::this_thread::yield();
    drained_begin(*file);
    EXPECT_EQ(top.in_flight() + side.in_flight() + fmt->in_flight() + file->in_flight(), 0u);
    const int frozen = done;
    drained_begin(*fmt);
    drained_end(*file);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_EQ(done, frozen);  // still drained by the section on the format
    EXPECT_TRUE(file->quiesced() && fmt->quiesced());
    drained_end(*fmt);
    const int64_t deadline = now_ns() + 5'000'000'000;
    while (done < frozen + 20 && now_ns() < deadline) std::this_thread::yield();
    EXPECT_GE(done, frozen + 20);
    stop = true;
    while (finished < 8) std::this_thread::yield();
    EXPECT_TRUE(d->misuse.empty());
}

TEST_F(GraphTest, ReplacingAChildInADrainedSectionRedirectsRequests) {
    auto a = mem("a", 4096), b = mem("b", 4096);
    static_cast<MemDriver&>(b->driver()).data().assign(4096, 'b');
    auto top = std::make_shared<BlockNode>("t", std::make_unique<FormatDriver>(), main(), false);
    ASSERT_TRUE(top->attach_child(ChildRole::filtered, a));
    top->refresh_limits();
    BlockBackend blk(top, true);
    EXPECT_EQ((*run(read_bytes(blk, 0, 1)))[0], 0);
    {
        DrainedSection da(*top), db(*b);
        ASSERT_TRUE(top->replace_child(*top->children().front(), b));
    }
    EXPECT_EQ((*run(read_bytes(blk, 0, 1)))[0], 'b');
    EXPECT_TRUE(a->parents().empty());
    EXPECT_EQ(b->parents().size(), 1u);
    EXPECT_FALSE(a->quiesced() || b->quiesced() || top->quiesced());
}

// --- Block status down a chain ---------------------------------------------

// base (data everywhere) <- mid (block 2 written) <- top (block 1 written).
TEST_F(GraphTest, BlockStatusWalksTheChainAndCountsDepth) {
    auto base = mem("base", 8 * 512);
    auto mid = cow("mid", 8 * 512, base);
    auto top = cow("top", 8 * 512, mid);
    BlockBackend mid_user(mid, true), top_user(top, true);
    ASSERT_TRUE(run(write_bytes(mid_user, 2 * 512, std::vector<char>(512, 'm'))));
    ASSERT_TRUE(run(write_bytes(top_user, 1 * 512, std::vector<char>(512, 't'))));
    auto status = [&](uint64_t offset, const BlockNode* below, unsigned& depth) {
        return run([](BlockBackend& blk, const BlockNode* below, uint64_t offset, unsigned& depth) -> Task<Result<BlockStatus>> {
            co_await blk.co_begin_request();
            // The user's edge is the top of the chain.
            auto st = co_await co_block_status_above(blk.root_edge(), below, offset, 8 * 512 - offset, &depth);
            blk.end_request();
            co_return st;
        }(top_user, below, offset, depth));
    };
    unsigned depth = 99;
    auto st = status(512, nullptr, depth);
    ASSERT_TRUE(st);
    EXPECT_EQ(depth, 1u);
    EXPECT_EQ(st->bytes, 512u);
    EXPECT_EQ(st->file, top.get());
    st = status(1024, nullptr, depth);
    EXPECT_EQ(depth, 2u);
    EXPECT_EQ(st->file, mid.get());
    st = status(1536, nullptr, depth);  // from the base, which has data everywhere
    EXPECT_EQ(depth, 3u);
    EXPECT_EQ(st->file, base.get());
    EXPECT_EQ(st->bytes, 8 * 512 - 1536u);
    st = status(1536, base.get(), depth);  // above the base: not allocated
    EXPECT_EQ(depth, 0u);
    EXPECT_FALSE(st->allocated);
    EXPECT_FALSE(st->zero);  // the base decides
    st = status(0, mid.get(), depth);
    EXPECT_EQ(depth, 0u);
    EXPECT_EQ(st->bytes, 512u);  // block 1 is the top's
    // Without a backing file, an unallocated range reads as zeroes.
    auto lone = cow("lone", 4 * 512, nullptr);
    BlockBackend lone_user(lone, false);
    auto z = run(lone_user.co_block_status(0, 2048));
    ASSERT_TRUE(z);
    EXPECT_FALSE(z->allocated);
    EXPECT_TRUE(z->zero);
}

// --- Node-names of children ------------------------------------------------

TEST_F(GraphTest, ChildrenOpenedInlineAreRegisteredByTheirNames) {
    BlockGraph graph;
    char tmpl[] = "/tmp/ioplane-graph-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string path = std::string(tmpl) + "/disk.img";
    { std::ofstream create(path); }
    std::filesystem::resize_file(path, 1 << 20);
    {
        auto raw = graph.open(OptionTree{json{{"driver", "raw"}, {"node-name", "r0"},
                                              {"file", {{"driver", "file"}, {"filename", path}, {"node-name", "f0"}}}},
                                         OptionSyntax::keyval},
                              main());
        ASSERT_TRUE(raw) << raw.error().describe();
        auto f0 = graph.find("f0");
        ASSERT_TRUE(f0);
        EXPECT_EQ(&(*raw)->children().front()->child(), f0.get());
        // Exportable: a reader beside the raw node.
        EXPECT_TRUE(BlockBackend::can_attach(*f0, false, "export 'e0'"));
    }
    // Not the monitor's: blockdev-del refuses it, and takes it with its parent.
    auto own = graph.remove("f0");
    ASSERT_FALSE(own);
    EXPECT_NE(own.error().message.find("not owned by the monitor"), std::string::npos);
    EXPECT_TRUE(graph.remove("r0"));
    EXPECT_EQ(graph.find("f0"), nullptr);
    // Its name is in use while it lives.
    auto again = graph.open(OptionTree{json{{"driver", "null-co"}, {"node-name", "f0"}}, OptionSyntax::keyval}, main());
    EXPECT_TRUE(again);
    auto dup = graph.open(OptionTree{json{{"driver", "raw"}, {"node-name", "r1"},
                                          {"file", {{"driver", "null-co"}, {"node-name", "f0"}}}},
                                     OptionSyntax::keyval},
                          main());
    ASSERT_FALSE(dup);
    EXPECT_NE(dup.error().message.find("duplicate"), std::string::npos);
    std::filesystem::remove_all(tmpl);
}


// --- Filters ---------------------------------------------------------------

class FilterTest : public GraphTest {
protected:
    Result<std::shared_ptr<BlockNode>> open_json(const json& options) {
        return graph_.open(OptionTree{options, OptionSyntax::json}, main());
    }
    BlockGraph graph_;
};

TEST_F(FilterTest, BlkdebugFailsTheChosenRequestOnceAndPassesTheRest) {
    auto node = open_json({{"driver", "blkdebug"},
                           {"node-name", "dbg"},
                           {"image", {{"driver", "null-co"}, {"size", 1 << 20}, {"read-zeroes", true}}},
                           {"inject-error",
                            {{{"event", "write_aio"}, {"sector", 8}, {"errno", ENOSPC}, {"once", true}},
                             {{"event", "read_aio"}, {"iotype", "read"}, {"sector", 16}}}}});
    ASSERT_TRUE(node) << node.error().describe();
    BlockBackend blk(*node, true);
    EXPECT_TRUE(run(write_bytes(blk, 0, std::vector<char>(4096, 'a'))));  // sector 8 is at 4096
    auto failed = run(write_bytes(blk, 4096, std::vector<char>(512, 'a')));
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().code, ENOSPC);
    EXPECT_TRUE(run(write_bytes(blk, 4096, std::vector<char>(512, 'a'))));  // once
    EXPECT_TRUE(run(read_bytes(blk, 0, 8192)));
    for (int i = 0; i < 2; i++) EXPECT_EQ(run(read_bytes(blk, 8192, 512)).error().code, EIO);  // always
    EXPECT_TRUE(run(write_bytes(blk, 8192, std::vector<char>(512, 'a'))));  // reads only
    EXPECT_TRUE(run(blk.co_flush()));
}

TEST_F(FilterTest, BlkdebugStatesArmRulesAndAlignmentReachesTheRequestPath) {
    auto node = open_json({{"driver", "blkdebug"},
                           {"node-name", "dbg"},
                           {"align", 4096},
                           {"max-transfer", 8192},
                           {"image", {{"driver", "null-co"}, {"size", 1 << 20}}},
                           {"set-state", {{{"event", "flush_to_disk"}, {"state", 1}, {"new_state", 2}}}},
                           {"inject-error", {{{"event", "read_aio"}, {"state", 2}}}}});
    ASSERT_TRUE(node) << node.error().describe();
    EXPECT_EQ((*node)->limits().request_alignment, 4096u);
    EXPECT_EQ((*node)->limits().max_transfer, 8192u);
    BlockBackend blk(*node, true);
    EXPECT_TRUE(run(read_bytes(blk, 100, 100)));  // state 1: the rule is not armed
    EXPECT_TRUE(run(blk.co_flush()));              // now state 2
    EXPECT_EQ(run(read_bytes(blk, 100, 100)).error().code, EIO);
}

TEST_F(FilterTest, BlkdebugRefusesWhatItCannotDo) {
    auto expect_error = [&](json extra, const std::string& needle) {
        json o = {{"driver", "blkdebug"}, {"node-name", "dbg"}, {"image", {{"driver", "null-co"}}}};
        o.update(extra);
        auto r = open_json(o);
        ASSERT_FALSE(r) << o.dump();
        EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    };
    expect_error({{"inject-error", {{{"event", "l2_load"}}}}}, "l2_load");
    expect_error({{"inject-error", {{{"event", "read_aio"}, {"iotype", "teleport"}}}}}, "teleport");
    expect_error({{"inject-error", {{{"event", "read_aio"}, {"bogus", 1}}}}}, "bogus");
    expect_error({{"align", 3000}}, "align");
    expect_error({{"config", "/etc/blkdebug.conf"}}, "config");
    expect_error({{"max-discard", 4096}}, "max-discard");
}

TEST_F(FilterTest, ThrottleHoldsRequestsToTheGroupsLimitAndDrainsAtOnce) {
    OptionTree group_options{json{{"limits", {{"iops-total", 100}}}}, OptionSyntax::json};
    OptionReader group_reader(group_options);
    ASSERT_TRUE(graph_.throttle_groups().add("g", group_reader));
    auto node = open_json({{"driver", "throttle"},
                           {"node-name", "thr"},
                           {"throttle-group", "g"},
                           {"file", {{"driver", "null-co"}}}});
    ASSERT_TRUE(node) << node.error().describe();
    EXPECT_EQ(graph_.throttle_groups().remove("g").error().code, EBUSY);
    BlockBackend blk(*node, false);
    // A tenth of a second's worth goes at once (the bucket), then one per 10 ms.
    const int64_t start = now_ns();
    for (int i = 0; i < 30; i++) ASSERT_TRUE(run(read_bytes(blk, 0, 512)));
    const int64_t elapsed = now_ns() - start;
    EXPECT_GE(elapsed, 150'000'000);  // at least 20 waited 10 ms each (minus slack)
    // New limits apply to the next request; unknown keys are refused.
    auto group = graph_.throttle_groups().find("g");
    OptionTree bad{json{{"iops-totl", 5}}, OptionSyntax::json};
    OptionReader bad_reader(bad);
    EXPECT_FALSE(group->set_limits(bad_reader));
    OptionTree off{json{{"iops-total", 0}}, OptionSyntax::json};
    OptionReader off_reader(off);
    ASSERT_TRUE(group->set_limits(off_reader));
    EXPECT_EQ(group->limits_json()["iops-total"], 0);
    const int64_t unlimited = now_ns();
    for (int i = 0; i < 100; i++) ASSERT_TRUE(run(read_bytes(blk, 0, 512)));
    EXPECT_LT(now_ns() - unlimited, 150'000'000);
}

// Two members of one group: one with 8 reads in flight, one reading one at a
// time. The members take turns.
TEST_F(FilterTest, ThrottleGroupMembersTakeTurns) {
    OptionTree group_options{json{{"limits", {{"iops-total", 40}}}}, OptionSyntax::json};
    OptionReader group_reader(group_options);
    ASSERT_TRUE(graph_.throttle_groups().add("g", group_reader));
    auto member = [&](const char* name) {
        auto node = open_json({{"driver", "throttle"},
                               {"node-name", name},
                               {"throttle-group", "g"},
                               {"file", {{"driver", "null-co"}}}});
        EXPECT_TRUE(node) << node.error().describe();
        return *node;
    };
    BlockBackend busy(member("busy"), false), calm(member("calm"), false);
    std::vector<char> order;  // 'b' or 'c' as reads complete
    int busy_done = 0;
    for (int i = 0; i < 8; i++)
        spawn(main(), [](BlockBackend& blk, std::vector<char>& order, int& done) -> Task<void> {
            EXPECT_TRUE(co_await read_bytes(blk, 0, 512));
            order.push_back('b');
            done++;
        }(busy, order, busy_done));
    bool calm_done = false;
    spawn(main(), [](BlockBackend& blk, std::vector<char>& order, bool& done) -> Task<void> {
        for (int i = 0; i < 4; i++) {
            EXPECT_TRUE(co_await read_bytes(blk, 0, 512));
            order.push_back('c');
        }
        done = true;
    }(calm, order, calm_done));
    while (!calm_done || busy_done < 8) main().poll(true);
    // The first reads go at once (the bucket's burst); from the calm one's
    // first read on, the two alternate while both wait (in arrival order
    // the calm reads would all come after the busy ones).
    const std::string seen(order.begin(), order.end());
    const size_t first_calm = seen.find('c');
    ASSERT_LT(first_calm, 8u) << seen;
    EXPECT_EQ(seen.find("bb", first_calm), std::string::npos) << seen;
}

// base (data 'b' everywhere) <- mid (block 2 'm') <- top (block 1 't'),
// read through copy-on-read filters: afterwards the top holds what it read
// (from every layer, or, with bottom=mid, from the layers down to mid).
TEST_F(FilterTest, CopyOnReadCopiesWhatTheChainSuppliesIntoTheTop) {
    for (bool with_bottom : {false, true}) {
        BlockGraph graph;
        auto base = mem("base", 8 * 512);
        static_cast<MemDriver&>(base->driver()).data().assign(8 * 512, 'b');
        auto mid = cow("mid", 8 * 512, base);
        auto top = cow("top", 8 * 512, mid);
        {
            BlockBackend mid_writer(mid, true), top_writer(top, true);
            ASSERT_TRUE(run(write_bytes(mid_writer, 1024, std::vector<char>(512, 'm'))));
            ASSERT_TRUE(run(write_bytes(top_writer, 512, std::vector<char>(512, 't'))));
        }
        for (auto& n : {base, mid, top}) graph.add_child_node(n);
        json options = {{"driver", "copy-on-read"}, {"node-name", "cor"}, {"file", "top"}};
        if (with_bottom) options["bottom"] = "mid";
        auto cor = graph.open(OptionTree{options, OptionSyntax::json}, main());
        ASSERT_TRUE(cor) << cor.error().describe();
        BlockBackend reader(*cor, false);
        auto data = run(read_bytes(reader, 300, 3000));  // unaligned: blocks 0..6
        ASSERT_TRUE(data);
        for (uint64_t i = 0; i < data->size(); i++) {
            const uint64_t block = (300 + i) / 512;
            ASSERT_EQ((*data)[i], block == 1 ? 't' : block == 2 ? 'm' : 'b') << "byte " << 300 + i;
        }
        // What the top allocates now, block by block.
        BlockBackend top_reader(top, false);
        std::string allocated;
        for (uint64_t b = 0; b < 8; b++) {
            auto st = run(top_reader.co_block_status(b * 512, 512));
            ASSERT_TRUE(st);
            allocated += st->allocated ? 'A' : '-';
        }
        EXPECT_EQ(allocated, with_bottom ? "-AA-----" : "AAAAAAA-") << (with_bottom ? "bottom=mid" : "no bottom");
        auto top_data = run(read_bytes(top_reader, 0, 8 * 512));
        ASSERT_TRUE(top_data);
        EXPECT_EQ((*top_data)[1024], 'm');
    }
}

// blockdev-reopen compares by meaning: keyval strings from the command line
// equal the JSON values QMP sends; a child may be named instead of repeated;
// a changed option is refused, and then no node of the list changes.
TEST_F(FilterTest, ReopenChangesReadOnlyAndRefusesOtherChanges) {
    auto kv = [&](const json& o) { return graph_.open(OptionTree{o, OptionSyntax::keyval}, main()); };
    ASSERT_TRUE(kv({{"driver", "null-co"}, {"node-name", "n0"}, {"size", "1M"}, {"read-zeroes", "on"}, {"read-only", "on"}}));
    ASSERT_TRUE(kv({{"driver", "raw"}, {"node-name", "r0"}, {"read-only", "on"},
                    {"file", {{"driver", "null-co"}, {"node-name", "n1"}, {"size", "1M"}}}}));
    auto reopen = [&](std::vector<json> list) {
        std::vector<OptionTree> trees;
        for (json& o : list) trees.push_back(OptionTree{std::move(o), OptionSyntax::json});
        return graph_.reopen(trees);
    };
    const json n0 = {{"driver", "null-co"}, {"node-name", "n0"}, {"size", 1 << 20}, {"read-zeroes", true}};
    const json r0 = {{"driver", "raw"}, {"node-name", "r0"}, {"file", "n1"}};
    // One bad element: nothing changes.
    json bad = r0;
    bad["file"] = "n0";
    auto r = reopen({n0, bad});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("Cannot change the option 'file'"), std::string::npos) << r.error().message;
    EXPECT_TRUE(graph_.find("n0")->read_only());
    json resized = n0;
    resized["size"] = 2 << 20;
    r = reopen({resized});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("'size'"), std::string::npos) << r.error().message;
    // The same options, read-only absent (QEMU: read-write): both change,
    // the raw node's file child with it.
    ASSERT_TRUE(reopen({n0, r0}));
    EXPECT_FALSE(graph_.find("n0")->read_only());
    EXPECT_FALSE(graph_.find("r0")->read_only());
    EXPECT_FALSE(graph_.find("n1")->read_only());
    json ro = r0;
    ro["read-only"] = true;
    ASSERT_TRUE(reopen({ro}));
    EXPECT_TRUE(graph_.find("r0")->read_only() && graph_.find("n1")->read_only());
    json wrong_driver = n0;
    wrong_driver["driver"] = "file";
    EXPECT_FALSE(reopen({wrong_driver}));
    json unknown = n0;
    unknown["node-name"] = "nope";
    EXPECT_EQ(reopen({unknown}).error().code, ENOENT);
}

}  // namespace
}  // namespace ioplane::block
