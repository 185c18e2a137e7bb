#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"
#include "test_io.h"

namespace ioplane::block {
namespace {

using nlohmann::json;

class BlockTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
        char tmpl[] = "/tmp/ioplane-block-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    AioContext& main() { return loop_->ctx(); }
    std::string make_file(const std::string& name, uint64_t size) {
        std::string path = dir_ + "/" + name;
        int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, off_t(size)), 0);
        ::close(fd);
        return path;
    }
    // Option trees as --blockdev's keyval form gives them (string values).
    static OptionTree keyval(const json& options) { return OptionTree{options, OptionSyntax::keyval}; }
    std::shared_ptr<BlockNode> open(const json& options) {
        auto node = graph_.open(keyval(options), main());
        EXPECT_TRUE(node) << (node ? "" : node.error().describe());
        return node ? *node : nullptr;
    }
    template <class T>
    T run(Task<T> task) {
        return block_on(main(), std::move(task));
    }

    std::unique_ptr<MainLoop> loop_;
    std::string dir_;
    BlockGraph graph_;
};

using testing::read_bytes;
using testing::write_pattern;

TEST_F(BlockTest, NullReadsZeroes) {
    auto node = open({{"driver", "null-co"}, {"node-name", "n0"}, {"size", "1M"}, {"read-zeroes", "on"}});
    ASSERT_TRUE(node);
    EXPECT_EQ(node->driver().length(), 1u << 20);
    BlockBackend blk(node, true);
    auto data = run(read_bytes(blk, 4096, 4096));
    ASSERT_TRUE(data);
    EXPECT_EQ(*data, std::vector<char>(4096, 0));
    EXPECT_TRUE(run(write_pattern(blk, 0, 512, 'x')));
    auto st = run(blk.co_block_status(0, 1 << 20));
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->zero);
}

TEST_F(BlockTest, FileWritesReadBackAndReachTheFile) {
    std::string path = make_file("a.img", 1 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "f0"}, {"filename", path}});
    ASSERT_TRUE(node);
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 8192, 4096, 'A')));
    ASSERT_TRUE(run(write_pattern(blk, 12288, 100, 'B', kWriteFua)));
    ASSERT_TRUE(run(blk.co_flush()));
    auto data = run(read_bytes(blk, 8192, 4196));
    ASSERT_TRUE(data);
    EXPECT_EQ(std::string(data->begin(), data->begin() + 4096), std::string(4096, 'A'));
    EXPECT_EQ(std::string(data->begin() + 4096, data->end()), std::string(100, 'B'));
    // The bytes are in the file, at the same offsets.
    int fd = ::open(path.c_str(), O_RDONLY);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 12288 + 99), 1);
    EXPECT_EQ(c, 'B');
    ::close(fd);
}

// Buffered reads of data in memory are served in place (core page_cache); a read that
// runs past the end of a file shrunk behind our back is short there and must
// fall back to the path that zero-fills, in every I/O mode.
TEST_F(BlockTest, FileReadsPastAShrunkEndReadZeroesInEveryMode) {
    for (const char* aio : {"io_uring", "threads"}) {
        std::string path = make_file(std::string("s-") + aio + ".img", 64 * 1024);
        auto node = open({{"driver", "file"}, {"node-name", std::string("s-") + aio}, {"filename", path}, {"aio", aio}});
        ASSERT_TRUE(node);
        BlockBackend blk(node, true);
        ASSERT_TRUE(run(write_pattern(blk, 0, 64 * 1024, 'D')));
        auto cached = run(read_bytes(blk, 4096, 8192));  // in the page cache
        ASSERT_TRUE(cached);
        EXPECT_EQ(*cached, std::vector<char>(8192, 'D')) << aio;
        ASSERT_EQ(::truncate(path.c_str(), 6000), 0);
        auto data = run(read_bytes(blk, 4096, 8192));
        ASSERT_TRUE(data) << aio;
        EXPECT_EQ(std::string(data->begin(), data->begin() + 1904), std::string(1904, 'D')) << aio;
        EXPECT_EQ(std::string(data->begin() + 1904, data->end()), std::string(8192 - 1904, '\0')) << aio;
    }
}

TEST_F(BlockTest, FileBlockStatusSeesHolesAndDiscardMakesThem) {
    std::string path = make_file("holes.img", 4 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "f0"}, {"filename", path}, {"discard", "unmap"}});
    ASSERT_TRUE(node);
    BlockBackend blk(node, true);
    auto st = run(blk.co_block_status(0, 4 << 20));
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->data);  // a new sparse file is one hole
    EXPECT_TRUE(st->zero);
    ASSERT_TRUE(run(write_pattern(blk, 1 << 20, 1 << 20, 'D')));
    st = run(blk.co_block_status(1 << 20, 3 << 20));
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->data);
    EXPECT_EQ(st->bytes, 1u << 20);
    ASSERT_TRUE(run(blk.co_pdiscard(1 << 20, 1 << 20)));
    st = run(blk.co_block_status(1 << 20, 1 << 20));
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->data);
    auto data = run(read_bytes(blk, 1 << 20, 4096));
    ASSERT_TRUE(data);
    EXPECT_EQ(*data, std::vector<char>(4096, 0));
}

// QEMU's default, discard=ignore: discards do nothing, zeroes stay allocated.
TEST_F(BlockTest, WithoutDiscardUnmapDiscardsDoNothingAndZeroesStayAllocated) {
    std::string path = make_file("keep.img", 2 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "f0"}, {"filename", path}});
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 0, 2 << 20, 'K')));
    ASSERT_TRUE(run(blk.co_pdiscard(0, 1 << 20)));
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(1 << 20, 1 << 20, kMayUnmap)));
    auto data = run(read_bytes(blk, 0, 2 << 20));
    ASSERT_TRUE(data);
    EXPECT_EQ(std::count(data->begin(), data->end(), 'K'), 1 << 20);  // the discarded half kept its data
    EXPECT_EQ(std::count(data->begin(), data->end(), 0), 1 << 20);    // the zeroed half reads zeroes
    auto st = run(blk.co_block_status(1 << 20, 1 << 20));
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->data);  // and is still allocated
}

TEST_F(BlockTest, WriteZeroesWithUnmapLeavesAHoleWithoutItZeroes) {
    std::string path = make_file("z.img", 2 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "f0"}, {"filename", path}, {"discard", "unmap"}});
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 0, 2 << 20, 'Z')));
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(0, 1 << 20, kMayUnmap)));
    ASSERT_TRUE(run(blk.co_pwrite_zeroes(1 << 20, 1 << 20, 0)));
    auto data = run(read_bytes(blk, 0, 2 << 20));
    ASSERT_TRUE(data);
    EXPECT_EQ(*data, std::vector<char>(2 << 20, 0));
    auto st = run(blk.co_block_status(0, 2 << 20));
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->data);  // the unmapped half is a hole
}

TEST_F(BlockTest, RawWindowShiftsAndBoundsRequests) {
    std::string path = make_file("raw.img", 1 << 20);
    auto node = open({{"driver", "raw"},
                      {"node-name", "r0"},
                      {"offset", "65536"},
                      {"size", "131072"},
                      {"file", {{"driver", "file"}, {"filename", path}}}});
    ASSERT_TRUE(node);
    EXPECT_EQ(node->driver().length(), 131072u);
    BlockBackend blk(node, true);
    ASSERT_TRUE(run(write_pattern(blk, 0, 512, 'R')));
    int fd = ::open(path.c_str(), O_RDONLY);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 65536), 1);
    EXPECT_EQ(c, 'R');
    ::close(fd);
    auto past = run(read_bytes(blk, 131072 - 100, 200));
    ASSERT_FALSE(past);
    EXPECT_EQ(past.error().code, EINVAL);
    auto wpast = run(write_pattern(blk, 131072, 1, 'x'));
    ASSERT_FALSE(wpast);
    EXPECT_EQ(wpast.error().code, ENOSPC);
    auto overflow = run(read_bytes(blk, UINT64_MAX - 10, 20));
    EXPECT_FALSE(overflow);
}

TEST_F(BlockTest, ReadOnlyRefusesWrites) {
    std::string path = make_file("ro.img", 1 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "f0"}, {"filename", path}, {"read-only", "on"}});
    // A writer cannot attach (QEMU: "Block node is read-only").
    auto attach = BlockBackend::can_attach(*node, true, "export 'e0'");
    ASSERT_FALSE(attach);
    EXPECT_EQ(attach.error().code, EPERM);
    EXPECT_NE(attach.error().message.find("read-only"), std::string::npos) << attach.error().message;
    EXPECT_NE(attach.error().message.find("export 'e0'"), std::string::npos) << attach.error().message;
    // A reader that writes anyway is refused.
    BlockBackend ro_user(node, false);
    EXPECT_EQ(run(write_pattern(ro_user, 0, 512, 'x')).error().code, EPERM);
    EXPECT_EQ(run(ro_user.co_pdiscard(0, 512)).error().code, EPERM);
}

TEST_F(BlockTest, BadOptionsGiveErrorsNamingTheProblem) {
    auto expect_error = [&](const json& o, const std::string& needle) {
        auto r = graph_.open(keyval(o), main());
        ASSERT_FALSE(r) << o.dump();
        EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    };
    expect_error({{"driver", "qcow9"}, {"node-name", "a"}}, "qcow9");
    expect_error({{"driver", "null-co"}, {"node-name", "a"}, {"szie", "1M"}}, "szie");
    expect_error({{"driver", "null-co"}, {"node-name", "a"}, {"size", "12Q"}}, "size");
    expect_error({{"driver", "file"}, {"node-name", "a"}}, "filename");
    expect_error({{"driver", "file"}, {"node-name", "a"}, {"filename", dir_ + "/missing"}}, "missing");
    expect_error({{"driver", "null-co"}, {"node-name", "9bad"}}, "node-name");
    expect_error({{"driver", "null-co"}}, "node-name");
    expect_error({{"driver", "file"}, {"node-name", "a"}, {"filename", dir_}}, dir_);  // EISDIR
    // JSON syntax requires JSON types, as QEMU does.
    auto typed = graph_.open(OptionTree{{{"driver", "null-co"}, {"node-name", "j"}, {"size", "1M"}}, OptionSyntax::json}, main());
    ASSERT_FALSE(typed);
    EXPECT_NE(typed.error().message.find("size"), std::string::npos);
    EXPECT_TRUE(graph_.open(OptionTree{{{"driver", "null-co"}, {"node-name", "j"}, {"size", 1048576}}, OptionSyntax::json}, main()));
    ASSERT_TRUE(open({{"driver", "null-co"}, {"node-name", "dup"}}));
    expect_error({{"driver", "null-co"}, {"node-name", "dup"}}, "duplicate");
}

TEST_F(BlockTest, NodeInUseCannotBeRemoved) {
    auto node = open({{"driver", "null-co"}, {"node-name", "n0"}});
    {
        BlockBackend blk(node, false);
        auto r = graph_.remove("n0");
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, EBUSY);
    }
    EXPECT_TRUE(graph_.remove("n0"));
    EXPECT_EQ(graph_.find("n0"), nullptr);
}

// Requests in flight in an IOThread finish before drained_begin returns;
// requests issued during the section wait until it ends.
TEST_F(BlockTest, DrainedSectionWaitsForInFlightAndParksNewRequests) {
    auto io = IOThread::start({.id = "io-drain"});
    ASSERT_TRUE(io);
    auto node = graph_.open(keyval({{"driver", "null-co"}, {"node-name", "slow"}, {"latency-ns", "20000000"}}), (*io)->ctx());
    ASSERT_TRUE(node);
    BlockBackend blk(*node, true);
    // Counted as an export counts: from admission until its work is done, so
    // that the drain covers `done++` too.
    blk.disable_request_queuing();
    std::atomic<int> done{0};
    auto request = [](BlockBackend& blk, std::atomic<int>& done) -> Task<void> {
        co_await blk.co_begin_request();
        char b[512];
        iovec iov{b, sizeof b};
        auto r = co_await blk.co_preadv(0, 512, std::span(&iov, 1));
        EXPECT_TRUE(r);
        done++;
        blk.end_request();
    };
    for (int i = 0; i < 4; i++) spawn((*io)->ctx(), request(blk, done));
    while (blk.in_flight() < 4) std::this_thread::yield();  // 4 admitted
    drained_begin(**node);
    EXPECT_EQ(done, 4);
    EXPECT_EQ(blk.in_flight(), 0u);
    EXPECT_EQ((*node)->in_flight(), 0u);
    spawn((*io)->ctx(), request(blk, done));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(done, 4);  // parked
    drained_end(**node);
    const int64_t deadline = now_ns() + 5'000'000'000;
    while (done < 5 && now_ns() < deadline) main().poll(false);
    EXPECT_EQ(done, 5);
}

struct RecordingOwner : BlockBackend::Owner {
    std::vector<std::string> events;  // context moves
    std::vector<std::string> drains;  // drained sections
    void drained_begin() override { drains.push_back("begin"); }
    void drained_end() override { drains.push_back("end"); }
    void detach_aio_context() override { events.push_back("detach"); }
    void attach_aio_context(AioContext& ctx) override { events.push_back("attach " + ctx.name()); }
};

// Users of every node in the drained subtree are told once per outermost
// section, the begin before the wait for their requests.
TEST_F(BlockTest, ListenersToldOfOutermostDrainedSection) {
    auto file = open({{"driver", "null-co"}, {"node-name", "child"}});
    ASSERT_TRUE(file);
    auto fmt = open({{"driver", "raw"}, {"node-name", "parent"}, {"file", "child"}});
    ASSERT_TRUE(fmt);
    BlockBackend top(fmt, true), below(file, true);
    RecordingOwner top_l, below_l;
    top.set_owner(&top_l);
    below.set_owner(&below_l);
    drained_begin(*fmt);
    drained_begin(*file);  // nested, on the child: it covers the parent too
    EXPECT_EQ(top_l.drains, std::vector<std::string>{"begin"});
    EXPECT_EQ(below_l.drains, std::vector<std::string>{"begin"});
    drained_end(*fmt);
    // Still drained by the inner section: I/O into the child could come
    // from the parent's users.
    EXPECT_EQ(top_l.drains, std::vector<std::string>{"begin"});
    EXPECT_EQ(below_l.drains, std::vector<std::string>{"begin"});
    drained_end(*file);
    EXPECT_EQ(top_l.drains, (std::vector<std::string>{"begin", "end"}));
    EXPECT_EQ(below_l.drains, (std::vector<std::string>{"begin", "end"}));
    EXPECT_TRUE(top_l.events.empty() && below_l.events.empty());
}

// The node moves between two IOThreads and back while coroutines keep issuing
// requests; every request succeeds and runs in the node's current context.
TEST_F(BlockTest, ChangeAioContextUnderLoad) {
    auto io0 = IOThread::start({.id = "io0"});
    auto io1 = IOThread::start({.id = "io1"});
    ASSERT_TRUE(io0 && io1);
    auto node = graph_.open(keyval({{"driver", "null-co"}, {"node-name", "mv"}, {"read-zeroes", "on"}}), (*io0)->ctx());
    ASSERT_TRUE(node);
    BlockBackend blk(*node, true);
    RecordingOwner listener;
    blk.set_owner(&listener);
    std::atomic<bool> stop{false};
    // BlockBackend asserts (Checked builds) that each request runs in the
    // node's current context while it is in flight.
    std::atomic<int> ok{0}, failed{0}, finished{0};
    auto worker = [&](BlockBackend& blk) -> Task<void> {
        char b[4096];
        iovec iov{b, sizeof b};
        while (!stop) {
            auto r = co_await blk.co_preadv(0, sizeof b, std::span(&iov, 1));
            (r ? ok : failed)++;
            co_await yield_now();
        }
        finished++;
    };
    for (int i = 0; i < 8; i++) spawn((*io0)->ctx(), worker(blk));
    for (int i = 0; i < 20; i++) {
        ASSERT_TRUE(change_aio_context(**node, (i % 2 ? *io0 : *io1)->ctx()));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    stop = true;
    const int64_t deadline = now_ns() + 10'000'000'000;
    while (finished < 8 && now_ns() < deadline) main().poll(false);
    EXPECT_EQ(finished, 8);
    EXPECT_GT(ok, 0);
    EXPECT_EQ(failed, 0);
    ASSERT_EQ(listener.events.size(), 40u);
    EXPECT_EQ(listener.events[0], "detach");
    EXPECT_EQ(listener.events[1], "attach io1");
    // A worker in one IOThread may still be inside the other context's
    // notify() after queuing a request there: join both threads before either
    // context is destroyed.
    (*io0)->stop();
    (*io1)->stop();
}

// Both I/O paths of the file driver see each other's data.
TEST_F(BlockTest, FileIoUringAndThreadsAgree) {
    std::string path = make_file("both.img", 1 << 20);
    auto uring = open({{"driver", "file"}, {"node-name", "u"}, {"filename", path}, {"aio", "io_uring"}});
    auto threads = open({{"driver", "file"}, {"node-name", "t"}, {"filename", path}, {"aio", "threads"}});
    ASSERT_TRUE(uring && threads);
    BlockBackend bu(uring, true), bt(threads, true);
    ASSERT_TRUE(run(write_pattern(bu, 0, 65536, 'U', kWriteFua)));
    ASSERT_TRUE(run(write_pattern(bt, 65536, 65536, 'T')));
    ASSERT_TRUE(run(bu.co_flush()));
    auto a = run(read_bytes(bt, 0, 65536));
    auto b = run(read_bytes(bu, 65536, 65536));
    ASSERT_TRUE(a && b);
    EXPECT_EQ(*a, std::vector<char>(65536, 'U'));
    EXPECT_EQ(*b, std::vector<char>(65536, 'T'));
    auto short_read = run(read_bytes(bu, (1 << 20) - 512, 512));  // last sector
    EXPECT_TRUE(short_read);
    auto bad = graph_.open(keyval({{"driver", "file"}, {"node-name", "x"}, {"filename", path}, {"aio", "posix"}}), main());
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("aio"), std::string::npos);
}

// The ring's completions follow the node: I/O keeps working after moves.
TEST_F(BlockTest, FileNodeWithIoUringMovesBetweenIOThreads) {
    auto io0 = IOThread::start({.id = "f0"});
    auto io1 = IOThread::start({.id = "f1"});
    ASSERT_TRUE(io0 && io1);
    std::string path = make_file("mv.img", 1 << 20);
    auto node = open({{"driver", "file"}, {"node-name", "fm"}, {"filename", path}});
    ASSERT_TRUE(node);
    BlockBackend blk(node, true);
    for (int i = 0; i < 6; i++) {
        AioContext& target = (i % 3 == 2) ? main() : (i % 2 ? *io1 : *io0)->ctx();
        ASSERT_TRUE(change_aio_context(*node, target));
        std::atomic<bool> done{false};
        std::atomic<bool> ok{false};
        spawn(target, [](BlockBackend& blk, int i, std::atomic<bool>& ok, std::atomic<bool>& done) -> Task<void> {
            auto w = co_await write_pattern(blk, uint64_t(i) * 4096, 4096, char('a' + i), kWriteFua);
            auto r = co_await read_bytes(blk, uint64_t(i) * 4096, 4096);
            ok = w && r && *r == std::vector<char>(4096, char('a' + i));
            done = true;
            aio_wait_kick();
        }(blk, i, ok, done));
        aio_wait_while(target, [&] { return !done.load(); });
        EXPECT_TRUE(ok) << "after move " << i;
    }
    ASSERT_TRUE(change_aio_context(*node, main()));
}

}  // namespace
}  // namespace ioplane::block
