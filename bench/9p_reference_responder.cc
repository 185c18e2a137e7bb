// 9p_reference_responder: the least a 9P2000.L server can do, as a floor for
// bench/9p_bench.sh (the 9P counterpart of nbd_reference_responder). It
// listens on TCP 127.0.0.1:PORT and runs one thread per connection that, per
// loop: one blocking read() of whatever request bytes are pending, answers
// every complete message with a canned reply of the right type, and sends all
// the replies with one write(). No file system, no event loop, no
// coroutines: what is left is what the kernel and the client cost, so its CPU
// time per operation is this machine's floor for the same load.
//
//   9p_reference_responder PORT
//
// Replies (enough for every ioplane-9pload workload, which checks each one):
// Tversion -> Rversion (the client's msize, at most 1 MiB, "9P2000.L");
// Tattach/Tmkdir -> a directory qid; Twalk -> one file qid per name;
// Tlopen/Tlcreate -> a file qid, iounit 0; Tgetattr -> a fixed regular file;
// Tread -> COUNT zero bytes (capped by msize); Twrite -> COUNT;
// Treaddir -> no entries; Tclunk, Tremove, Tunlinkat, Tflush -> empty;
// anything else -> Rlerror EOPNOTSUPP. A message whose size field is below
// the header or above msize ends the connection. Prints one line once it
// listens; runs until SIGTERM/SIGINT.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "messages.h"
#include "reference_server.h"
#include "wire.h"

namespace {

using namespace ioplane::fs9p;

constexpr uint32_t kMaxMsize = 1u << 20;
constexpr Qid kDirQid{kQtDir, 0, 1};
constexpr Qid kFileQid{kQtFile, 0, 2};

// Appends the reply to one whole message to `out`; false ends the connection.
bool answer(std::span<const uint8_t> msg, uint32_t& msize, std::vector<uint8_t>& out) {
    WireReader r(msg);
    r.u32();  // size, checked by the caller
    const uint8_t type = r.u8();
    const uint16_t tag = r.u16();
    WireWriter w(out);
    switch (type) {
        case Tversion: {
            const uint32_t asked = r.u32();
            msize = std::clamp<uint32_t>(asked, 4096, kMaxMsize);
            w.begin(Rversion, tag);
            w.u32(msize);
            w.str("9P2000.L");
            break;
        }
        case Tattach:
        case Tmkdir:
            w.begin(uint8_t(type + 1), tag);
            w.qid(kDirQid);
            break;
        case Twalk: {
            r.u32();  // fid
            r.u32();  // newfid
            const uint16_t n = r.u16();
            if (n > kMaxWalkNames) return false;
            w.begin(Rwalk, tag);
            w.u16(n);
            for (uint16_t i = 0; i < n; i++) w.qid(kFileQid);
            break;
        }
        case Tlopen:
        case Tlcreate:
            w.begin(uint8_t(type + 1), tag);
            w.qid(kFileQid);
            w.u32(0);  // iounit
            break;
        case Tgetattr:
            w.begin(Rgetattr, tag);
            w.u64(kGetattrBasic);
            w.qid(kFileQid);
            w.u32(0100644);  // mode
            w.u32(0);        // uid
            w.u32(0);        // gid
            w.u64(1);        // nlink
            w.u64(0);        // rdev
            w.u64(4096);     // size
            w.u64(4096);     // blksize
            w.u64(8);        // blocks
            for (int i = 0; i < 10; i++) w.u64(0);  // a/m/c/btime, gen, data_version
            break;
        case Tread: {
            r.u32();  // fid
            r.u64();  // offset
            const uint32_t count = std::min<uint32_t>(r.u32(), msize - kIoHeaderSize);
            w.begin(Rread, tag);
            w.u32(count);
            out.resize(out.size() + count);  // zeros
            break;
        }
        case Twrite: {
            r.u32();  // fid
            r.u64();  // offset
            const uint32_t count = r.u32();
            w.begin(Rwrite, tag);
            w.u32(count);
            break;
        }
        case Treaddir:
            w.begin(Rreaddir, tag);
            w.u32(0);
            break;
        case Tclunk:
        case Tremove:
        case Tunlinkat:
        case Tflush:
            w.begin(uint8_t(type + 1), tag);
            break;
        default:
            w.begin(Rlerror, tag);
            w.u32(EOPNOTSUPP);
            break;
    }
    w.finish();
    return true;
}

void serve(int fd) {
    std::vector<uint8_t> in(2 * kMaxMsize);
    std::vector<uint8_t> out;
    size_t have = 0;
    uint32_t msize = 8192;  // until Tversion: room for it
    for (;;) {
        const ssize_t n = ::read(fd, in.data() + have, in.size() - have);
        if (n <= 0) break;
        have += size_t(n);
        size_t used = 0;
        out.clear();
        bool ok = true;
        while (ok && have - used >= 4) {
            const uint8_t* p = in.data() + used;
            const uint32_t size = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
            if (size < kHeaderSize || size > msize) {
                ok = false;
                break;
            }
            if (have - used < size) break;
            ok = answer(std::span(p, size), msize, out);
            used += size;
        }
        if (!ok) break;
        std::memmove(in.data(), in.data() + used, have - used);
        have -= used;
        for (size_t sent = 0; sent < out.size();) {
            const ssize_t m = ::write(fd, out.data() + sent, out.size() - sent);
            if (m <= 0) {
                ::close(fd);
                return;
            }
            sent += size_t(m);
        }
    }
    ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    const ioplane::ListenAddress addr{.type = ioplane::ListenAddress::Type::inet, .host = "127.0.0.1", .port = argv[1]};
    const int lfd = ioplane::bench::listen_blocking(addr, "9p_reference_responder");
    if (lfd < 0) return 1;
    const int one = 1;
    std::printf("9p_reference_responder listening on 127.0.0.1:%s\n", argv[1]);
    std::fflush(stdout);
    for (;;) {
        const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
            return 1;
        }
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::thread(serve, fd).detach();
    }
}
