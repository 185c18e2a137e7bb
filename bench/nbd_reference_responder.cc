// nbd_reference_responder: the least an NBD server can do, as a floor for
// bench/nbd_bench.sh. It listens on a unix socket, does the fixed newstyle
// handshake well enough for libnbd (fio's nbd engine, nbdinfo), and then runs
// one thread per connection that, per loop: one blocking read() of whatever
// request bytes are pending, parses every complete request, builds all the
// replies (simple reply header; zero-filled data for reads; write payloads
// are consumed and dropped) and sends them with one writev(). No back end,
// no event loop, no coroutines: it is what the kernel and the client cost.
//
//   nbd_reference_responder SOCKET_PATH [SIZE_BYTES]
//
// Handshake: NBD_OPT_STRUCTURED_REPLY and every other option but GO, INFO,
// EXPORT_NAME, ABORT are answered NBD_REP_ERR_UNSUP, so the client uses simple
// replies. GO/INFO get NBD_REP_INFO (NBD_INFO_EXPORT: size, flags
// HAS_FLAGS|SEND_FLUSH|CAN_MULTI_CONN) then NBD_REP_ACK. Any export name is
// accepted. Prints one line once it listens; runs until SIGTERM/SIGINT.
#include <endian.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "reference_server.h"

namespace {

constexpr uint64_t NBDMAGIC = 0x4e42444d41474943;
constexpr uint64_t IHAVEOPT = 0x49484156454F5054;
constexpr uint64_t NBD_REP_MAGIC = 0x3e889045565a9;
constexpr uint32_t NBD_REQUEST_MAGIC = 0x25609513;
constexpr uint32_t NBD_SIMPLE_REPLY_MAGIC = 0x67446698;

constexpr uint16_t NBD_FLAG_FIXED_NEWSTYLE = 1u << 0;
constexpr uint16_t NBD_FLAG_NO_ZEROES = 1u << 1;
constexpr uint32_t NBD_FLAG_C_NO_ZEROES = 1u << 1;
constexpr uint16_t NBD_FLAG_HAS_FLAGS = 1u << 0;
constexpr uint16_t NBD_FLAG_SEND_FLUSH = 1u << 2;
constexpr uint16_t NBD_FLAG_CAN_MULTI_CONN = 1u << 8;

constexpr uint32_t NBD_OPT_EXPORT_NAME = 1;
constexpr uint32_t NBD_OPT_ABORT = 2;
constexpr uint32_t NBD_OPT_INFO = 6;
constexpr uint32_t NBD_OPT_GO = 7;
constexpr uint32_t NBD_REP_ACK = 1;
constexpr uint32_t NBD_REP_INFO = 3;
constexpr uint32_t NBD_REP_ERR_UNSUP = (1u << 31) + 1;
constexpr uint16_t NBD_INFO_EXPORT = 0;

constexpr uint16_t NBD_CMD_READ = 0;
constexpr uint16_t NBD_CMD_WRITE = 1;
constexpr uint16_t NBD_CMD_DISC = 2;
constexpr uint16_t NBD_CMD_FLUSH = 3;
constexpr uint32_t NBD_EINVAL = 22;

constexpr size_t kRequestSize = 28;
constexpr size_t kReplySize = 16;
constexpr uint32_t kMaxPayload = 32u << 20;  // the spec's customary maximum

constexpr uint16_t kTransmissionFlags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;

uint64_t g_size = 1ull << 30;
const char* g_zeroes = nullptr;  // kMaxPayload bytes of shared zero pages

bool read_full(int fd, void* buf, size_t n) {
    auto* p = static_cast<char*>(buf);
    while (n > 0) {
        ssize_t r = ::read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

bool write_full(int fd, const void* buf, size_t n) {
    auto* p = static_cast<const char*>(buf);
    while (n > 0) {
        ssize_t r = ::write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

// writev() of all of iov, resuming after partial writes.
bool writev_full(int fd, iovec* iov, size_t cnt) {
    while (cnt > 0) {
        int batch = cnt > IOV_MAX ? IOV_MAX : static_cast<int>(cnt);
        ssize_t r = ::writev(fd, iov, batch);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        auto done = static_cast<size_t>(r);
        while (cnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            ++iov;
            --cnt;
        }
        if (cnt > 0) {
            iov->iov_base = static_cast<char*>(iov->iov_base) + done;
            iov->iov_len -= done;
        }
    }
    return true;
}

void put16(std::string& s, uint16_t v) { v = htobe16(v); s.append(reinterpret_cast<char*>(&v), 2); }
void put32(std::string& s, uint32_t v) { v = htobe32(v); s.append(reinterpret_cast<char*>(&v), 4); }
void put64(std::string& s, uint64_t v) { v = htobe64(v); s.append(reinterpret_cast<char*>(&v), 8); }
uint16_t get16(const char* p) { uint16_t v; std::memcpy(&v, p, 2); return be16toh(v); }
uint32_t get32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return be32toh(v); }
uint64_t get64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return be64toh(v); }

bool option_reply(int fd, uint32_t option, uint32_t type, const std::string& data) {
    std::string s;
    put64(s, NBD_REP_MAGIC);
    put32(s, option);
    put32(s, type);
    put32(s, static_cast<uint32_t>(data.size()));
    s += data;
    return write_full(fd, s.data(), s.size());
}

// Fixed newstyle handshake. True when the client entered transmission.
bool handshake(int fd) {
    std::string greet;
    put64(greet, NBDMAGIC);
    put64(greet, IHAVEOPT);
    put16(greet, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (!write_full(fd, greet.data(), greet.size())) return false;
    char cf[4];
    if (!read_full(fd, cf, 4)) return false;
    const bool no_zeroes = get32(cf) & NBD_FLAG_C_NO_ZEROES;
    for (;;) {
        char hdr[16];
        if (!read_full(fd, hdr, 16) || get64(hdr) != IHAVEOPT) return false;
        const uint32_t option = get32(hdr + 8);
        const uint32_t len = get32(hdr + 12);
        if (len > 65536) return false;
        std::string data(len, '\0');
        if (len > 0 && !read_full(fd, data.data(), len)) return false;
        switch (option) {
        case NBD_OPT_EXPORT_NAME: {
            std::string s;
            put64(s, g_size);
            put16(s, kTransmissionFlags);
            if (!no_zeroes) s.append(124, '\0');
            return write_full(fd, s.data(), s.size());
        }
        case NBD_OPT_ABORT:
            option_reply(fd, option, NBD_REP_ACK, {});
            return false;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            std::string info;
            put16(info, NBD_INFO_EXPORT);
            put64(info, g_size);
            put16(info, kTransmissionFlags);
            if (!option_reply(fd, option, NBD_REP_INFO, info)) return false;
            if (!option_reply(fd, option, NBD_REP_ACK, {})) return false;
            if (option == NBD_OPT_GO) return true;
            break;
        }
        default:  // STRUCTURED_REPLY, LIST, meta contexts, STARTTLS, ...
            if (!option_reply(fd, option, NBD_REP_ERR_UNSUP, {})) return false;
            break;
        }
    }
}

struct Reply {
    char header[kReplySize];
};

void transmission(int fd) {
    // Big enough for many requests and for the largest write payload.
    std::vector<char> buf(kMaxPayload + (1u << 20));
    size_t have = 0;  // bytes in buf[0, have)
    std::vector<Reply> replies;
    std::vector<iovec> iov;
    replies.reserve(4096);
    iov.reserve(8192);
    for (;;) {
        ssize_t r = ::read(fd, buf.data() + have, buf.size() - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        have += static_cast<size_t>(r);

        // Parse every complete request; replies[] must not reallocate while
        // iov[] points into it, so size it first.
        replies.clear();
        iov.clear();
        if (replies.capacity() < have / kRequestSize) replies.reserve(have / kRequestSize);
        size_t pos = 0;
        bool disconnect = false;
        while (have - pos >= kRequestSize) {
            const char* q = buf.data() + pos;
            if (get32(q) != NBD_REQUEST_MAGIC) return;  // protocol error: hang up
            const uint16_t type = get16(q + 6);
            const uint32_t len = get32(q + 24);
            size_t need = kRequestSize;
            if (type == NBD_CMD_WRITE) {
                if (len > kMaxPayload) return;
                need += len;
            }
            if (have - pos < need) break;  // the rest comes with the next read()
            if (type == NBD_CMD_DISC) {
                disconnect = true;
                pos += need;
                break;
            }
            uint32_t error = 0;
            if (type == NBD_CMD_READ && len > kMaxPayload) error = NBD_EINVAL;
            else if (type != NBD_CMD_READ && type != NBD_CMD_WRITE && type != NBD_CMD_FLUSH) error = NBD_EINVAL;
            Reply& rep = replies.emplace_back();
            const uint32_t magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
            const uint32_t err = htobe32(error);
            std::memcpy(rep.header, &magic, 4);
            std::memcpy(rep.header + 4, &err, 4);
            std::memcpy(rep.header + 8, q + 8, 8);  // cookie, as sent
            iov.push_back({rep.header, kReplySize});
            if (type == NBD_CMD_READ && error == 0 && len > 0)
                iov.push_back({const_cast<char*>(g_zeroes), len});
            pos += need;
        }
        if (!iov.empty() && !writev_full(fd, iov.data(), iov.size())) return;
        if (disconnect) return;
        if (pos > 0) {
            std::memmove(buf.data(), buf.data() + pos, have - pos);
            have -= pos;
        }
    }
}

void serve(int fd) {
    if (handshake(fd)) transmission(fd);
    ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    const char* path;
    if (!ioplane::bench::parse_socket_and_size(argc, argv, path, g_size)) return 2;
    void* z = ::mmap(nullptr, kMaxPayload, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (z == MAP_FAILED) { std::perror("mmap"); return 1; }
    g_zeroes = static_cast<const char*>(z);

    ioplane::bench::install_stop_signals();  // accept() returns EINTR
    const ioplane::ListenAddress addr{.path = path};
    const int lfd = ioplane::bench::listen_blocking(addr, "nbd_reference_responder");
    if (lfd < 0) return 1;
    std::printf("nbd_reference_responder: listening on %s\n", path);  // the bench waits for this line
    std::fflush(stdout);
    ioplane::bench::accept_until_stopped(addr, lfd, [](int fd) {
        // Connection threads block the stop signals so that they reach the
        // main thread and interrupt accept().
        sigset_t stop, old;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, &old);
        std::thread(serve, fd).detach();
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    });
    return 0;
}
