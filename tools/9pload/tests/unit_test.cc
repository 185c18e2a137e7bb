// ioplane-9pload's pure parts: the encoders checked against the server's
// decoder (fs9p::decode_request), the reply decoders, the histogram, the
// options, and the connection's batching over a unix socket pair.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "codec.h"
#include "connection.h"
#include "workloads.h"  // Histogram
#include "options.h"

namespace ioplane::load9p {
namespace {

using namespace fs9p;

template <class T>
T decoded(const std::vector<uint8_t>& bytes, uint8_t type, uint16_t tag) {
    auto r = decode_request(bytes);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().describe());
    EXPECT_EQ(r->type, type);
    EXPECT_EQ(r->tag, tag);
    return std::get<T>(r->body);
}

TEST(Encoders, MatchTheServersDecoder) {
    std::vector<uint8_t> b;
    put_version(b, 65536, "9P2000.L");
    auto v = decoded<Version>(b, Tversion, kNoTag);
    EXPECT_EQ(v.msize, 65536u);
    EXPECT_EQ(v.version, "9P2000.L");

    b.clear();
    put_attach(b, 1, 7, "root", "/srv", 0);
    auto a = decoded<Attach>(b, Tattach, 1);
    EXPECT_EQ(a.fid, 7u);
    EXPECT_EQ(a.afid, kNoFid);
    EXPECT_EQ(a.uname, "root");
    EXPECT_EQ(a.aname, "/srv");
    EXPECT_EQ(a.n_uname, 0u);

    b.clear();
    const std::string_view names[] = {"a", "bc"};
    put_walk(b, 2, 1, 9, names);
    auto w = decoded<Walk>(b, Twalk, 2);
    EXPECT_EQ(w.fid, 1u);
    EXPECT_EQ(w.newfid, 9u);
    ASSERT_EQ(w.names.size(), 2u);
    EXPECT_EQ(w.names[1], "bc");

    b.clear();
    put_lcreate(b, 3, 4, "x", O_WRONLY | O_CREAT, 0644, 0);
    auto c = decoded<Lcreate>(b, Tlcreate, 3);
    EXPECT_EQ(c.name, "x");
    EXPECT_EQ(c.flags, uint32_t(O_WRONLY | O_CREAT));
    EXPECT_EQ(c.mode, 0644u);

    b.clear();
    put_read(b, 4, 5, 1ull << 40, 4096);
    auto rd = decoded<Read>(b, Tread, 4);
    EXPECT_EQ(rd.offset, 1ull << 40);
    EXPECT_EQ(rd.count, 4096u);

    // A Twrite's header followed by its data makes one whole message.
    b.clear();
    put_write_header(b, 5, 6, 8192, 3);
    b.insert(b.end(), {1, 2, 3});
    auto wr = decoded<Write>(b, Twrite, 5);
    EXPECT_EQ(wr.offset, 8192u);
    ASSERT_EQ(wr.data.size(), 3u);
    EXPECT_EQ(wr.data[2], 3);

    b.clear();
    put_readdir(b, 6, 7, 99, 1000);
    auto rdd = decoded<Readdir>(b, Treaddir, 6);
    EXPECT_EQ(rdd.offset, 99u);
    EXPECT_EQ(rdd.count, 1000u);

    b.clear();
    put_unlinkat(b, 7, 1, "gone", AT_REMOVEDIR);
    auto u = decoded<Unlinkat>(b, Tunlinkat, 7);
    EXPECT_EQ(u.name, "gone");
    EXPECT_EQ(u.flags, uint32_t(AT_REMOVEDIR));

    b.clear();
    put_mkdir(b, 8, 1, "d", 0755, 0);
    EXPECT_EQ(decoded<Mkdir>(b, Tmkdir, 8).name, "d");
    b.clear();
    put_getattr(b, 9, 2, kGetattrBasic);
    EXPECT_EQ(decoded<Getattr>(b, Tgetattr, 9).mask, kGetattrBasic);
    b.clear();
    put_lopen(b, 10, 2, O_RDONLY);
    EXPECT_EQ(decoded<Lopen>(b, Tlopen, 10).fid, 2u);
    b.clear();
    put_clunk(b, 11, 2);
    EXPECT_EQ(decoded<Clunk>(b, Tclunk, 11).fid, 2u);
}

// A reply body built with the project's writer (header stripped).
std::vector<uint8_t> body(auto fill) {
    std::vector<uint8_t> b;
    WireWriter w(b);
    fill(w);
    return b;
}

TEST(Decoders, AcceptWholeBodiesOnly) {
    auto open = body([](WireWriter& w) { w.qid({kQtFile, 1, 42}); w.u32(4096); });
    auto o = get_open(open);
    ASSERT_TRUE(o);
    EXPECT_EQ(o->qid.path, 42u);
    EXPECT_EQ(o->iounit, 4096u);
    open.push_back(0);
    EXPECT_FALSE(get_open(open));  // trailing byte
    open.resize(10);
    EXPECT_FALSE(get_open(open));  // truncated

    auto walk = body([](WireWriter& w) { w.u16(2); w.qid({}); w.qid({}); });
    EXPECT_EQ(get_walk(walk), 2);
    walk.resize(walk.size() - 1);
    EXPECT_FALSE(get_walk(walk));

    auto data = body([](WireWriter& w) { w.u32(3); w.u8(7); w.u8(8); w.u8(9); });
    ASSERT_TRUE(get_data(data));
    EXPECT_EQ(get_data(data)->size(), 3u);
    data.pop_back();
    EXPECT_FALSE(get_data(data));

    auto attr = body([](WireWriter& w) {
        w.u64(kGetattrBasic);
        w.qid({kQtFile, 0, 5});
        w.u32(0100644); w.u32(0); w.u32(0);
        for (int i = 0; i < 3; i++) w.u64(0);  // nlink rdev size
        for (int i = 0; i < 12; i++) w.u64(0);
    });
    EXPECT_EQ(attr.size(), 153u);  // valid qid mode uid gid, 15 u64s
    ASSERT_TRUE(get_getattr(attr));
    EXPECT_EQ(get_getattr(attr)->mode, 0100644u);

    EXPECT_EQ(get_lerror(body([](WireWriter& w) { w.u32(ENOENT); })), uint32_t(ENOENT));
    EXPECT_TRUE(get_empty({}));
    EXPECT_FALSE(get_empty(data));
}

TEST(Decoders, DirectoryEntries) {
    auto data = body([](WireWriter& w) {
        w.qid({kQtDir, 0, 1}); w.u64(1); w.u8(4); w.str(".");
        w.qid({kQtFile, 0, 2}); w.u64(2); w.u8(8); w.str("file");
    });
    std::vector<std::string> names;
    uint64_t last = 0;
    EXPECT_TRUE(for_each_entry(data, [&](const DirEntry& e) { names.emplace_back(e.name); last = e.offset; }));
    EXPECT_EQ(names, (std::vector<std::string>{".", "file"}));
    EXPECT_EQ(last, 2u);
    data.pop_back();
    EXPECT_FALSE(for_each_entry(data, [](const DirEntry&) {}));
}

TEST(Histogram, BucketsAreMonotonicAndTight) {
    size_t prev = 0;
    for (uint64_t v = 0; v < (1u << 20); v += 1 + v / 97) {
        const size_t i = Histogram::index(v);
        EXPECT_GE(i, prev);
        prev = i;
        const uint64_t m = Histogram::middle(i);
        EXPECT_LE(double(m > v ? m - v : v - m), double(v) / 64 + 1) << v;
    }
    EXPECT_LT(Histogram::index(UINT64_MAX), (64 - Histogram::kSubBits + 1) << Histogram::kSubBits);
}

TEST(Histogram, Percentiles) {
    Histogram h;
    for (uint64_t v = 1; v <= 1000; v++) h.add(v * 1000);
    EXPECT_EQ(h.count(), 1000u);
    EXPECT_NEAR(h.mean(), 500500.0, 1e-6);
    EXPECT_NEAR(double(h.percentile(0.5)), 500000.0, 500000.0 / 64);
    EXPECT_NEAR(double(h.percentile(0.99)), 990000.0, 990000.0 / 64);
    EXPECT_EQ(h.percentile(1.0), 1000000u);
    EXPECT_EQ(h.max(), 1000000u);
}

std::expected<Options, std::string> parse(std::vector<std::string> args) { return parse_options(args); }

TEST(Options, Parse) {
    auto o = parse({"--tcp", "127.0.0.1:564", "--workload", "read1m", "--concurrency", "16", "--msize", "64k",
                    "--duration", "0.5", "--server-pid", "42", "--keep"});
    ASSERT_TRUE(o) << o.error();
    EXPECT_EQ(o->kind, WorkloadKind::kRead);
    EXPECT_EQ(o->block_size, 1u << 20);
    EXPECT_EQ(o->concurrency, 16u);
    EXPECT_EQ(o->msize, 65536u);
    EXPECT_EQ(o->duration_s, 0.5);
    EXPECT_EQ(o->server_pid, 42);
    EXPECT_TRUE(o->keep);
    EXPECT_EQ(o->msize, 64u * 1024);

    EXPECT_FALSE(parse({"--workload", "getattr"}));  // no address
    EXPECT_FALSE(parse({"--tcp", "h:1", "--unix", "/s", "--workload", "getattr"}));
    EXPECT_FALSE(parse({"--tcp", "h:1"}));  // no workload
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload", "nope"}));
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload", "open", "--concurrency", "0"}));
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload", "open", "--duration", "-1"}));
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload", "open", "--dir", "a/b"}));
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload", "read1m", "--file-size", "4k"}));
    EXPECT_FALSE(parse({"--tcp", "h:1", "--workload"}));
    EXPECT_TRUE(parse({"--help"})->help);

    EXPECT_EQ(parse_size("4k"), 4096u);
    EXPECT_EQ(parse_size("1G"), 1u << 30);
    EXPECT_EQ(parse_size("12"), 12u);
    EXPECT_FALSE(parse_size("1x"));
    EXPECT_FALSE(parse_size(""));
}

// Messages with external data go out in order; replies split across reads
// come back whole.
TEST(Connection, BatchesAndSplits) {
    char dir[] = "/tmp/9pload-test-XXXXXX";
    ASSERT_TRUE(::mkdtemp(dir));
    const std::string path = std::string(dir) + "/s";
    int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(lfd, 1), 0);
    auto conn = Connection::connect_unix(path);
    ASSERT_TRUE(conn) << conn.error().describe();
    int peer = ::accept(lfd, nullptr, nullptr);
    ASSERT_GE(peer, 0);
    conn->set_max_message(1 << 16);

    const std::vector<uint8_t> data(50000, 0xab);
    put_write_header(conn->out(), 1, 2, 0, uint32_t(data.size()));
    conn->append_external(data);
    put_clunk(conn->out(), 2, 2);

    // The peer reads the two requests, then answers in two pieces.
    std::vector<uint8_t> got;
    std::thread server([&] {
        const size_t want = 23 + data.size() + 11;
        uint8_t buf[65536];
        while (got.size() < want) {
            ssize_t n = ::read(peer, buf, sizeof buf);
            if (n <= 0) break;
            got.insert(got.end(), buf, buf + n);
        }
        std::vector<uint8_t> replies;
        WireWriter w(replies);
        w.begin(Rwrite, 1); w.u32(uint32_t(data.size())); w.finish();
        w.begin(Rclunk, 2); w.finish();
        (void)!::write(peer, replies.data(), 9);
        usleep(20000);
        (void)!::write(peer, replies.data() + 9, replies.size() - 9);
    });
    std::vector<Message> replies;
    std::vector<std::vector<uint8_t>> bodies;
    while (replies.size() < 2) {
        auto x = conn->exchange();
        ASSERT_TRUE(x) << x.error().describe();
        for (;;) {
            auto m = conn->next();
            ASSERT_TRUE(m);
            if (!*m) break;
            replies.push_back(**m);
            bodies.emplace_back((*m)->body.begin(), (*m)->body.end());
        }
    }
    server.join();
    ASSERT_EQ(got.size(), 23 + data.size() + 11);
    auto first = decode_request(std::span(got).first(23 + data.size()));
    ASSERT_TRUE(first);
    EXPECT_EQ(std::get<Write>(first->body).data.size(), data.size());
    EXPECT_EQ(decode_request(std::span(got).subspan(23 + data.size()))->type, Tclunk);
    EXPECT_EQ(replies[0].type, Rwrite);
    EXPECT_EQ(get_write(bodies[0]), uint32_t(data.size()));
    EXPECT_EQ(replies[1].type, Rclunk);
    EXPECT_EQ(replies[1].tag, 2);
    EXPECT_FALSE(conn->output_pending());
    ::close(peer);
    ::close(lfd);
    ::unlink(path.c_str());
    ::rmdir(dir);
}

}  // namespace
}  // namespace ioplane::load9p
