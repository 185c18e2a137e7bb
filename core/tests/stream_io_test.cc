// AsyncFd, BufferedReader and BatchedWriter over real socket pairs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "harness.h"
#include "ioplane/core/batched_writer.h"
#include "ioplane/core/buffered_reader.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/stream_io.h"

namespace ioplane {
namespace {

using test::make_context;
using test::run_until_idle;

struct SocketPair {
    int ours = -1, peer = -1;
    explicit SocketPair(int type = SOCK_STREAM) {
        int fds[2];
        EXPECT_EQ(socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        ours = fds[0];
        peer = fds[1];
    }
    ~SocketPair() {
        if (ours >= 0) close(ours);
        if (peer >= 0) close(peer);
    }
    void send_peer(const std::string& s) const { ASSERT_EQ(write(peer, s.data(), s.size()), ssize_t(s.size())); }
    std::string recv_peer(size_t max = 1 << 20) const {
        std::string out(max, '\0');
        ssize_t n = read(peer, out.data(), out.size());
        out.resize(n > 0 ? size_t(n) : 0);
        return out;
    }
    void close_peer() {
        close(peer);
        peer = -1;
    }
};

std::unique_ptr<AsyncFd> make_afd(AioContext& ctx, int fd) {
    auto afd = AsyncFd::create(ctx, fd);
    EXPECT_TRUE(afd) << afd.error().describe();
    return afd ? std::move(*afd) : nullptr;
}

TEST(AsyncFd, UnreadDataWithNobodyWaitingDoesNotSpinTheLoop) {
    auto ctx = make_context("t");
    SocketPair sp;
    auto afd = make_afd(*ctx, sp.ours);
    bool woken = false;
    spawn(*ctx, [](AsyncFd& a, bool& w) -> Task<void> { w = co_await a.readable(); }(*afd, woken));
    run_until_idle({ctx.get()});
    sp.send_peer("x");
    ctx->poll(true);
    EXPECT_TRUE(woken);
    // Nobody reads: the level-triggered report comes at most once more (read
    // interest is dropped lazily), then the loop is idle.
    sp.send_peer("y");
    ctx->poll(false);
    EXPECT_FALSE(ctx->poll(false));
    EXPECT_FALSE(ctx->poll(false));
    // A new waiter re-arms the fd and sees the data already there.
    woken = false;
    spawn(*ctx, [](AsyncFd& a, bool& w) -> Task<void> { w = co_await a.readable(); }(*afd, woken));
    EXPECT_TRUE(test::poll_until(*ctx, [&] { return woken; }));
}

// write_all() records since when the peer has not been reading: set when a
// write finds the socket full, kept across waits that make no progress,
// cleared once bytes go out again.
TEST(AsyncFd, WriteStalledSinceTracksAPeerThatDoesNotRead) {
    auto ctx = make_context("t");
    SocketPair sp;
    auto afd = make_afd(*ctx, sp.ours);
    EXPECT_EQ(afd->write_stalled_since_ns(), 0);
    std::vector<char> big(4 << 20, 'w');  // more than the socket pair buffers
    bool done = false;
    spawn(*ctx, [](AsyncFd& a, std::vector<char>& b, bool& d) -> Task<void> {
        iovec iov{b.data(), b.size()};
        auto r = co_await write_all(a, std::span(&iov, 1));
        EXPECT_TRUE(r);
        d = true;
    }(*afd, big, done));
    run_until_idle({ctx.get()});
    const int64_t since = afd->write_stalled_since_ns();
    EXPECT_GT(since, 0);
    EXPECT_LE(since, now_ns());
    sp.send_peer("a spurious wake-up: readable, still no room");
    ctx->poll(false);
    EXPECT_EQ(afd->write_stalled_since_ns(), since);
    size_t received = 0;
    while (!done) {
        received += sp.recv_peer().size();
        ctx->poll(false);
    }
    received += sp.recv_peer().size();
    EXPECT_EQ(received, big.size());
    EXPECT_EQ(afd->write_stalled_since_ns(), 0);
}

TEST(BufferedReader, SplitsAndJoinsMessagesAcrossReads) {
    auto ctx = make_context("t");
    SocketPair sp;
    auto afd = make_afd(*ctx, sp.ours);
    BufferedReader reader(*afd, 16);
    std::vector<std::string> got;
    bool done = false;
    spawn(*ctx, [](BufferedReader& r, std::vector<std::string>& out, bool& d) -> Task<void> {
        for (size_t len : {3, 5, 20, 4}) {  // 20 > half the buffer: read directly
            std::string s(len, '\0');
            auto res = co_await r.read_exact(s.data(), len);
            if (!res) break;
            out.push_back(s);
        }
        auto end = co_await r.read_exact(nullptr, 0);
        EXPECT_TRUE(end);
        char c;
        auto eof = co_await r.read_exact(&c, 1);
        EXPECT_FALSE(eof);
        if (!eof) {
            EXPECT_EQ(eof.error().code, ECONNRESET);
        }
        d = true;
    }(reader, got, done));
    run_until_idle({ctx.get()});
    sp.send_peer("abcde");  // one read brings the first message and part of the second
    ctx->poll(true);
    sp.send_peer("fgh");
    ctx->poll(true);
    sp.send_peer(std::string(20, 'z') + "wxyz");
    sp.close_peer();
    EXPECT_TRUE(test::poll_until(*ctx, [&] { return done; }));
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(got[0], "abc");
    EXPECT_EQ(got[1], "defgh");
    EXPECT_EQ(got[2], std::string(20, 'z'));
    EXPECT_EQ(got[3], "wxyz");
}

TEST(BufferedReader, SkipDropsBytesThenReadsOn) {
    auto ctx = make_context("t");
    SocketPair sp;
    auto afd = make_afd(*ctx, sp.ours);
    BufferedReader reader(*afd, 8);
    std::string after(2, '\0');
    bool done = false;
    spawn(*ctx, [](BufferedReader& r, std::string& out, bool& d) -> Task<void> {
        EXPECT_TRUE(co_await r.skip(21));
        EXPECT_TRUE(co_await r.read_exact(out.data(), out.size()));
        d = true;
    }(reader, after, done));
    sp.send_peer(std::string(21, '-') + "ok");
    EXPECT_TRUE(test::poll_until(*ctx, [&] { return done; }));
    EXPECT_EQ(after, "ok");
}

Task<void> write_message(BatchedWriter& w, std::string msg, int& ok, int& failed) {
    iovec iov{msg.data(), msg.size()};
    auto r = co_await w.write(std::span(&iov, 1));
    (r ? ok : failed)++;
}

// A SOCK_SEQPACKET pair keeps each sendmsg as one record: the peer's record
// count is the writer's system-call count.
TEST(BatchedWriter, MessagesOfOneIterationLeaveInOneSyscallInOrder) {
    auto ctx = make_context("t");
    SocketPair sp(SOCK_SEQPACKET);
    auto afd = make_afd(*ctx, sp.ours);
    BatchedWriter writer(*afd);
    int ok = 0, failed = 0;
    for (int i = 0; i < 8; i++) spawn(*ctx, write_message(writer, "m" + std::to_string(i) + ";", ok, failed));
    run_until_idle({ctx.get()});
    EXPECT_EQ(ok, 8);
    EXPECT_EQ(sp.recv_peer(), "m0;m1;m2;m3;m4;m5;m6;m7;");
    EXPECT_EQ(sp.recv_peer(), "");  // no second record
    // A later batch is a new system call.
    spawn(*ctx, write_message(writer, "late", ok, failed));
    run_until_idle({ctx.get()});
    EXPECT_EQ(sp.recv_peer(), "late");
}

// Messages larger than the socket buffer: partial writes, EAGAIN, and writers
// joining while the flusher waits. Every message arrives whole and in order.
TEST(BatchedWriter, LargeMessagesStayWholeAndOrderedAcrossPartialWrites) {
    auto ctx = make_context("t");
    SocketPair sp;
    int small = 4096;
    ASSERT_EQ(setsockopt(sp.ours, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    auto afd = make_afd(*ctx, sp.ours);
    BatchedWriter writer(*afd);
    int ok = 0, failed = 0;
    std::string expected;
    for (int i = 0; i < 6; i++) {
        std::string msg(100'000 + i, char('a' + i));
        expected += msg;
        spawn(*ctx, write_message(writer, msg, ok, failed));
    }
    std::string got;
    bool joined = false;
    while (got.size() < expected.size()) {
        ctx->poll(false);
        got += sp.recv_peer();
        if (!joined && !got.empty()) {  // the flush is under way: join it
            joined = true;
            std::string late(5000, 'z');
            expected += late;
            spawn(*ctx, write_message(writer, late, ok, failed));
        }
    }
    run_until_idle({ctx.get()});
    EXPECT_EQ(ok, 7);
    EXPECT_EQ(failed, 0);
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected);
}

TEST(BatchedWriter, FailureReachesEveryWriterAndLaterOnesFailAtOnce) {
    auto ctx = make_context("t");
    SocketPair sp;
    auto afd = make_afd(*ctx, sp.ours);
    BatchedWriter writer(*afd);
    sp.close_peer();
    int ok = 0, failed = 0;
    for (int i = 0; i < 4; i++) spawn(*ctx, write_message(writer, "x", ok, failed));
    run_until_idle({ctx.get()});
    EXPECT_EQ(ok, 0);
    EXPECT_EQ(failed, 4);
    spawn(*ctx, write_message(writer, "y", ok, failed));
    run_until_idle({ctx.get()});
    EXPECT_EQ(failed, 5);
}

}  // namespace
}  // namespace ioplane
