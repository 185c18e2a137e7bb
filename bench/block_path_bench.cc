// The block layer's own cost per request, without a client or a kernel in
// the way: one coroutine issues 4 KiB reads or writes to a null-co node
// through a BlockBackend, counted as an export counts them
// (co_begin_request / end_request), and the driver completes each at once.
// The CPU time per request is what the block path adds to every I/O an
// export serves; build the same file at two commits to compare them (the
// end-to-end rows of bench/block_ab.sh vary by more than such a change).
//
//   block_path_bench [ROUNDS [BITMAPS]]   prints "read NS write NS" (medians, ns per request)
//
// BITMAPS (default 0): enabled dirty bitmaps (64 KiB) on the node, which
// every write then marks (the write's slower path); 0 keeps the fast path.
#include <sys/uio.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"

using namespace ioplane;

namespace {

constexpr int kRequests = 1'000'000;

int64_t cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Task<double> run(block::BlockBackend& blk, bool write) {
    alignas(4096) static char buf[4096];
    iovec iov{buf, sizeof buf};
    const int64_t start = cpu_ns();
    for (int i = 0; i < kRequests; i++) {
        co_await blk.co_begin_request();
        const uint64_t offset = uint64_t(i % 4096) * 4096;
        auto r = write ? co_await blk.co_pwritev(offset, 4096, std::span(&iov, 1), 0)
                       : co_await blk.co_preadv(offset, 4096, std::span(&iov, 1));
        blk.end_request();
        if (!r) std::abort();
    }
    co_return double(cpu_ns() - start) / kRequests;
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 9;
    auto loop = MainLoop::create();
    if (!loop) return 1;
    block::BlockGraph graph;
    auto node = graph.open(OptionTree{{{"driver", "null-co"}, {"node-name", "n"}, {"size", "1G"}}, OptionSyntax::keyval},
                           (*loop)->ctx());
    if (!node) return 1;
    const int bitmaps = argc > 2 ? std::atoi(argv[2]) : 0;
    for (int i = 0; i < bitmaps; i++) {
        block::DrainedSection drained(**node);
        if (!(*node)->dirty_bitmaps().create("b" + std::to_string(i), 65536)) return 1;
    }
    block::BlockBackend blk(*node, true);
    blk.disable_request_queuing();
    std::vector<double> reads, writes;
    for (int i = 0; i < rounds; i++) {
        reads.push_back(block_on((*loop)->ctx(), run(blk, false)));
        writes.push_back(block_on((*loop)->ctx(), run(blk, true)));
    }
    std::sort(reads.begin(), reads.end());
    std::sort(writes.begin(), writes.end());
    std::printf("read %.1f write %.1f\n", reads[reads.size() / 2], writes[writes.size() / 2]);
    return 0;
}
