// libFuzzer target over the qcow2 driver: the input is an image file. It is
// put in an in-memory file node and opened as a qcow2 node the way the
// daemon opens one (BlockGraph::open, "file" naming the node, no backing
// file); if the header and tables are accepted, a fixed set of requests runs
// through a BlockBackend: reads at the start, middle and end and across
// clusters, writes (small, part of a cluster, several clusters), write
// zeroes, discard, block status over the image, a flush, the reads again;
// then (read-write) several such requests at once around one cluster; and
// the close that writes back the caches. Failed requests are fine (a
// corrupt image fails them); crashes, sanitizer reports, hangs and huge
// allocations are bugs.
//
// The input's last 8 bytes (zero-padded when shorter) also choose, without
// being taken out of the image: byte 0 the mode (bit 0 read-only, bit 1
// minimal caches, bit 2 discard=unmap, bit 3 write zeroes may unmap, bit 4
// FUA writes, bit 5 the file yields to the loop on every request, so that
// the requests of the concurrent phase interleave at each metadata access),
// bytes 1-7 where the requests go.
//
// IOPLANE_FUZZ_VERBOSE=1 prints why the open or a request failed (to see
// what a reproducer reaches).
#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/block/node.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "qcow2/qcow2.h"

using namespace ioplane;
using namespace ioplane::block;

namespace {

// The most the image file may grow to: fuzzed metadata can make every write
// allocate far out in the file.
constexpr uint64_t kMaxFileBytes = 64u << 20;
// The most one request moves (a multi-cluster write with 2 MiB clusters).
constexpr uint64_t kMaxRequestBytes = 4u << 20;
// Block-status calls over the image, at most.
constexpr int kMaxStatusCalls = 64;

// An image file in memory: grows on truncate (up to kMaxFileBytes). With
// `yield`, every request first lets the loop run others (as a real file's
// requests would, completing later).
class MemFile final : public Driver {
public:
    MemFile(std::vector<uint8_t> data, bool yield) : data_(std::move(data)), yield_(yield) {}
    const char* format_name() const override { return "mem"; }
    std::string filename() const override { return "mem://"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        // The request path has checked the bounds.
        (void)bytes;
        if (yield_) co_await yield_now();
        for (const iovec& v : iov) {
            std::memcpy(v.iov_base, data_.data() + offset, v.iov_len);
            offset += v.iov_len;
        }
        co_return Result<void>{};
    }
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t) override {
        (void)bytes;
        if (yield_) co_await yield_now();
        for (const iovec& v : iov) {
            std::memcpy(data_.data() + offset, v.iov_base, v.iov_len);
            offset += v.iov_len;
        }
        co_return Result<void>{};
    }
    Task<Result<void>> co_flush() override {
        if (yield_) co_await yield_now();
        co_return Result<void>{};
    }
    Task<Result<void>> co_truncate(uint64_t size) override {
        if (size > kMaxFileBytes) co_return fail(ENOSPC, "mem: file would exceed the fuzzer's limit");
        data_.resize(size);
        co_return Result<void>{};
    }
    uint64_t length() const override { return data_.size(); }
    DriverCaps caps() const override { return {.can_fua = false, .can_truncate = true}; }

private:
    std::vector<uint8_t> data_;
    const bool yield_;
};

struct Control {
    uint8_t mode = 0;
    uint8_t pick[7] = {};
    bool read_only() const { return mode & 1; }
    bool small_caches() const { return mode & 2; }
    bool unmap() const { return mode & 4; }
    bool zero_may_unmap() const { return mode & 8; }
    bool fua() const { return mode & 16; }
    bool yield() const { return mode & 32; }
};

Control control_of(const uint8_t* data, size_t size) {
    uint8_t tail[8] = {};
    const size_t n = std::min<size_t>(size, 8);
    std::memcpy(tail, data + size - n, n);
    Control c;
    c.mode = tail[0];
    std::memcpy(c.pick, tail + 1, 7);
    return c;
}

const bool verbose = std::getenv("IOPLANE_FUZZ_VERBOSE") != nullptr;

template <class T>
void note(const char* what, uint64_t offset, uint64_t bytes, const Result<T>& r) {
    if (verbose && !r)
        std::fprintf(stderr, "%s %llu+%llu: %s\n", what, (unsigned long long)offset, (unsigned long long)bytes,
                     r.error().describe().c_str());
}

MainLoop& main_loop() {
    static std::unique_ptr<MainLoop> loop = [] {
        log::set_level(log::Level::error);
        auto l = MainLoop::create();
        if (!l) std::abort();
        return std::move(*l);
    }();
    return *loop;
}

// A range [offset, offset + bytes) clipped to the image; empty if nothing is
// left.
struct Range {
    uint64_t offset, bytes;
};
Range clip(uint64_t offset, uint64_t bytes, uint64_t size) {
    if (offset >= size) return {0, 0};
    return {offset, std::min({bytes, size - offset, kMaxRequestBytes})};
}

Task<void> co_read(BlockBackend& blk, Range r) {
    if (r.bytes == 0) co_return;
    std::vector<char> buf(r.bytes);
    iovec iov{buf.data(), buf.size()};
    note("read", r.offset, r.bytes, co_await blk.co_preadv(r.offset, r.bytes, std::span(&iov, 1)));
}

Task<void> co_write(BlockBackend& blk, Range r, char pattern, uint32_t flags) {
    if (r.bytes == 0) co_return;
    std::vector<char> buf(r.bytes, pattern);
    // Two buffers, so that the driver's paths over several iovecs run too.
    const size_t half = r.bytes / 2;
    iovec iov[2] = {{buf.data(), half}, {buf.data() + half, r.bytes - half}};
    Result<void> res;
    if (half == 0) res = co_await blk.co_pwritev(r.offset, r.bytes, std::span(iov + 1, 1), flags);
    else res = co_await blk.co_pwritev(r.offset, r.bytes, std::span(iov, 2), flags);
    note("write", r.offset, r.bytes, res);
}

Task<void> co_exercise(BlockBackend& blk, const Control& c, uint64_t cluster) {
    const uint64_t size = blk.length();
    if (size == 0) co_return;
    const uint64_t clusters = std::max<uint64_t>(1, size / cluster);
    // A cluster picked by a control byte: spread over the image's clusters.
    auto cluster_at = [&](uint8_t p) { return (clusters * p / 256) * cluster; };
    const uint64_t small = std::min<uint64_t>(cluster, 4096);

    const std::vector<Range> reads = {
        clip(0, std::min<uint64_t>(2 * cluster, 256 << 10), size),
        clip(size / 2 / cluster * cluster, small, size),
        clip(size - std::min(size, small), small, size),
        clip(cluster_at(c.pick[0]) + cluster - std::min<uint64_t>(cluster, 300), 600, size),  // across clusters
        clip(cluster_at(c.pick[1]) + c.pick[2] * 7u % cluster, cluster + 1000, size),
    };
    for (const Range& r : reads) co_await co_read(blk, r);
    if (blk.writable()) {
        const uint32_t flags = c.fua() ? kWriteFua : 0;
        co_await co_write(blk, clip(cluster_at(c.pick[3]) + 512 * (c.pick[4] % 8) % cluster, 512, size), 'a', flags);
        co_await co_write(blk, clip(cluster_at(c.pick[4]) + cluster / 4 + 3, cluster / 2, size), 'b', flags);
        co_await co_write(blk, clip(cluster_at(c.pick[5]) + cluster / 2, 2 * cluster + 1000, size), 'c', flags);
        co_await co_write(blk, clip(size - std::min(size, small / 2), small / 2, size), 'd', flags);
        const Range z = clip(cluster_at(c.pick[6]) + cluster / 3, 2 * cluster, size);
        if (z.bytes)
            note("write zeroes", z.offset, z.bytes,
                 co_await blk.co_pwrite_zeroes(z.offset, z.bytes, c.zero_may_unmap() ? kMayUnmap : 0));
        const Range d = clip(cluster_at(c.pick[0] ^ c.pick[6]), 3 * cluster, size);
        if (d.bytes) note("discard", d.offset, d.bytes, co_await blk.co_pdiscard(d.offset, d.bytes));
        // The whole image's end (zeroing and discarding treat it specially).
        const Range tail = clip(size - std::min(size, cluster + 17), cluster + 17, size);
        if (c.pick[2] & 1)
            note("write zeroes", tail.offset, tail.bytes, co_await blk.co_pwrite_zeroes(tail.offset, tail.bytes, 0));
        else
            note("discard", tail.offset, tail.bytes, co_await blk.co_pdiscard(tail.offset, tail.bytes));
    }
    uint64_t at = 0;
    for (int i = 0; i < kMaxStatusCalls && at < size; i++) {
        auto st = co_await blk.co_block_status(at, size - at);
        note("block status", at, size - at, st);
        if (!st) break;
        at += st->bytes;
    }
    note("flush", 0, 0, co_await blk.co_flush());
    for (const Range& r : reads) co_await co_read(blk, r);
}

// Requests at once, around one picked cluster: allocating writes into the
// same and neighbouring clusters (they wait for each other's allocations),
// zeroes, a discard, a read and a flush among them.
void run_concurrently(AioContext& ctx, BlockBackend& blk, const Control& c, uint64_t cluster) {
    const uint64_t size = blk.length();
    const uint64_t clusters = std::max<uint64_t>(1, size / cluster);
    const uint64_t base = (clusters * c.pick[1] / 256) * cluster;
    std::vector<Task<void>> tasks;
    tasks.push_back(co_write(blk, clip(base + 100, cluster, size), 'e', 0));
    tasks.push_back(co_write(blk, clip(base + cluster / 2, cluster, size), 'f', 0));
    tasks.push_back(co_read(blk, clip(base, 2 * cluster, size)));
    tasks.push_back(co_write(blk, clip(base + 2 * cluster, 512, size), 'g', 0));
    tasks.push_back([](BlockBackend& blk, Range z) -> Task<void> {
        if (z.bytes) note("write zeroes", z.offset, z.bytes, co_await blk.co_pwrite_zeroes(z.offset, z.bytes, 0));
    }(blk, clip(base + cluster, 2 * cluster, size)));
    tasks.push_back([](BlockBackend& blk) -> Task<void> { note("flush", 0, 0, co_await blk.co_flush()); }(blk));
    tasks.push_back([](BlockBackend& blk, Range d) -> Task<void> {
        if (d.bytes) note("discard", d.offset, d.bytes, co_await blk.co_pdiscard(d.offset, d.bytes));
    }(blk, clip(base + 3 * cluster, cluster, size)));
    size_t left = tasks.size();
    for (Task<void>& t : tasks)
        spawn(ctx, [](Task<void> t, size_t& left) -> Task<void> {
            co_await std::move(t);
            left--;
        }(std::move(t), left));
    // A request that never ends is a bug (the fuzzer's timeout reports it).
    while (left > 0) ctx.poll(true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    MainLoop& loop = main_loop();
    AioContext& ctx = loop.ctx();
    const Control c = control_of(data, size);

    BlockGraph graph;
    auto file = std::make_shared<BlockNode>(
        "img", std::make_unique<MemFile>(std::vector<uint8_t>(data, data + size), c.yield()), ctx, false);
    file->refresh_limits();
    graph.add_child_node(file);

    nlohmann::json options = {{"driver", "qcow2"}, {"node-name", "q"}, {"file", "img"}, {"backing", nullptr}};
    if (c.read_only()) options["read-only"] = true;
    if (c.unmap()) options["discard"] = "unmap";
    if (c.small_caches()) {
        // The smallest caches (two L2 tables, four refcount blocks): tables
        // are evicted and written back all the time.
        options["l2-cache-size"] = 1;
        options["refcount-cache-size"] = 1;
    }
    auto node = graph.open(OptionTree{options, OptionSyntax::json}, ctx);
    if (verbose)
        std::fprintf(stderr, "open %s: %s\n", options.dump().c_str(), node ? "ok" : node.error().describe().c_str());
    if (!node) return 0;
    const uint64_t cluster = static_cast<const qcow2::Qcow2Driver&>((*node)->driver()).header().cluster_size();
    {
        BlockBackend blk(*node, !c.read_only(), "fuzzer");
        block_on(ctx, co_exercise(blk, c, cluster));
        if (blk.writable()) run_concurrently(ctx, blk, c, cluster);
    }
    // The close (the graph's node going away) writes the caches back.
    node->reset();
    (void)graph.remove("q");
    return 0;
}
