// vublk_reference_backend: the least a vhost-user-blk back end can do, as a
// floor for bench/vublk_bench.sh (the vhost-user-blk counterpart of
// nbd_reference_responder and 9p_reference_responder). It listens on a unix
// socket and serves one front end at a time: the control channel is a plain
// blocking loop in the main thread, and each virtqueue, once started, gets
// one thread that, per loop: one blocking read() of the kick eventfd, pops
// every available request and completes it on the spot (no back end: reads
// get zero-filled buffers, writes and flushes just succeed), publishes the
// used elements, writes the call eventfd once if the driver asked for an
// interrupt, and looks at the avail ring once more before sleeping again.
// No event loop, no coroutines, no polling: what is left is what the kernel
// and the front end cost, so its CPU time per I/O is this machine's floor for
// the same load.
//
//   vublk_reference_backend SOCKET_PATH [SIZE_BYTES]     (default 1 GiB)
//
// Offers VERSION_1, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES and the
// virtio-blk features SEG_MAX (126), BLK_SIZE (512), FLUSH (writeback 1) and
// MQ (16 queues); protocol features MQ, REPLY_ACK, CONFIG, RESET_DEVICE.
// Handles GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER,
// RESET_OWNER, RESET_DEVICE, GET_QUEUE_NUM, GET_CONFIG, SET_MEM_TABLE,
// SET_VRING_NUM/ADDR/BASE/KICK/CALL/ERR/ENABLE and GET_VRING_BASE, with an
// ack for every need_reply; anything else is nacked (SET_CONFIG included: the
// config is read-only). Requests: IN (zeroes), OUT and FLUSH (OK), GET_ID (a
// fixed id); anything else UNSUPP; a sector range past the capacity IOERR.
//
// What it omits, and why that is fair for a floor: the front end is trusted
// more than ioplane's daemon trusts it (no check that fds are eventfds; a
// SET_VRING_KICK without an fd, i.e. polling, ends the session); the
// project's decoders (protocol.h), guest memory (guest_memory.h) and ring
// code (split_ring.h) still check every message, address and descriptor, as
// they cost no system call. No discard or write zeroes, no inflight tracking,
// no logging, no config changes. A running queue's kick fd is switched to
// blocking (the flag is shared with the front end) and back when the queue
// stops; if this process is SIGKILLed meanwhile it stays blocking, which a
// QEMU that reads it afterwards would not expect. Prints one line once it
// listens; runs until SIGTERM/SIGINT.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fd_passing.h"
#include "reference_server.h"
#include "guest_memory.h"
#include "protocol.h"
#include "split_ring.h"
#include "virtio_blk_defs.h"

namespace {

using namespace ioplane;
using namespace ioplane::vhost_user;

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x requests and config are little-endian: read and written here as native values");

constexpr uint64_t kFeatures =
    kFVersion1 | kFRingIndirectDesc | kFRingEventIdx | kFProtocolFeatures | kBlkFSegMax | kBlkFBlkSize | kBlkFFlush |
    kBlkFMq;
constexpr uint64_t kProtocolFeatures = kPfMq | kPfReplyAck | kPfConfig | kPfResetDevice;

// More queues than any benchmark drives: a front end uses as many as it
// likes up to this (QEMU writes its own num-queues into the guest's config).
constexpr uint32_t kNumQueues = 16;
constexpr uint32_t kSegMax = 126;          // as qemu-storage-daemon and ioplane offer
constexpr uint32_t kBlockSize = 512;
constexpr size_t kConfigSpace = 256;       // what GET_CONFIG may address
constexpr char kBlkId[kBlkIdBytes] = "vublk-reference";  // NUL-padded

uint64_t g_size = 1ull << 30;
using bench::g_stop;

// ---------------------------------------------------------------- requests

struct BlkHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(BlkHeader) == kBlkHeaderSize);

// Copies the first `n` bytes of the buffers into `dst`; false if they are shorter.
bool gather(const std::vector<iovec>& iov, void* dst, size_t n) {
    auto* p = static_cast<uint8_t*>(dst);
    for (const iovec& v : iov) {
        const size_t k = std::min(n, v.iov_len);
        std::memcpy(p, v.iov_base, k);
        p += k;
        n -= k;
        if (n == 0) return true;
    }
    return n == 0;
}

// Writes `n` bytes of `src` (or zeroes if null) at the start of the buffers.
void scatter(const std::vector<iovec>& iov, const void* src, size_t n) {
    auto* s = static_cast<const uint8_t*>(src);
    for (const iovec& v : iov) {
        const size_t k = std::min(n, v.iov_len);
        if (s) {
            std::memcpy(v.iov_base, s, k);
            s += k;
        } else {
            std::memset(v.iov_base, 0, k);
        }
        n -= k;
        if (n == 0) return;
    }
}

// [sector, + bytes) inside the device, without overflow.
bool in_range(uint64_t sector, uint64_t bytes) {
    return sector <= g_size / 512 && bytes <= g_size - sector * 512;
}

// Serves one request in place; returns the used element's length (the bytes
// written into the device-writable buffers). The status byte is the last
// device-writable byte.
uint32_t serve_request(const DescriptorChain& c) {
    BlkHeader h;
    if (c.in_bytes == 0 || !gather(c.out, &h, sizeof h)) return 0;  // no status byte to answer in
    const uint64_t data = c.in_bytes - 1;
    uint8_t status = kBlkSOk;
    uint64_t written = 1;
    switch (h.type) {
    case kBlkTIn:
        if (!in_range(h.sector, data)) {
            status = kBlkSIoErr;
            break;
        }
        scatter(c.in, nullptr, data);
        written += data;
        break;
    case kBlkTOut:
        if (!in_range(h.sector, c.out_bytes - sizeof h)) status = kBlkSIoErr;
        break;
    case kBlkTFlush:
        break;
    case kBlkTGetId: {
        const size_t n = std::min<uint64_t>(data, kBlkIdBytes);
        scatter(c.in, kBlkId, n);
        written += n;
        break;
    }
    default:
        status = kBlkSUnsupp;
        break;
    }
    const iovec& last = c.in.back();  // non-empty: SplitRing drops empty buffers
    static_cast<uint8_t*>(last.iov_base)[last.iov_len - 1] = status;
    return uint32_t(written);
}

// ---------------------------------------------------------------- queues

void signal_eventfd(int fd) {
    if (fd < 0) return;
    const uint64_t one = 1;
    // Fails only if the counter would overflow, which its reader prevents.
    [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
}

// One virtqueue: what the front end set up (written by the control thread
// only while no worker runs) and the worker serving it.
struct Vring {
    uint32_t num = 0;
    std::optional<VringAddr> addr;
    uint16_t base = 0;  // next avail index: SET_VRING_BASE's, or where the worker stopped
    UniqueFd kick, call, err;
    int kick_flags = 0;  // the kick fd's file status flags as the front end set them
    bool enabled = false;

    std::optional<SplitRing> ring;   // while running
    std::thread worker;              // joinable from start to stop (also after a broken ring)
    std::atomic<bool> stopping{false};

    bool ready() const { return num != 0 && addr && kick && enabled; }
    bool running() const { return worker.joinable(); }
    void reset_setup() {
        num = 0;
        addr.reset();
        base = 0;
        kick.reset();
        call.reset();
        err.reset();
        enabled = false;
    }
};

// Pops and completes every available request, publishes their used elements
// and calls the driver once if it asked; then turns kicks back on and looks
// again (the driver may have added requests meanwhile without a kick), until
// the ring stays empty. False if the ring broke the rules: the queue stops.
bool drain(Vring& v, DescriptorChain& chain) {
    SplitRing& ring = *v.ring;
    std::string why;
    do {
        ring.set_kick_notifications(false);  // no kicks while we are awake anyway
        SplitRing::Pop r;
        while ((r = ring.pop(chain, why)) == SplitRing::Pop::ok) ring.push(chain.head, serve_request(chain));
        if (ring.publish_used()) signal_eventfd(v.call.get());
        if (r == SplitRing::Pop::broken) {
            std::fprintf(stderr, "vublk_reference_backend: queue stopped: %s\n", why.c_str());
            signal_eventfd(v.err.get());
            return false;
        }
        // With EVENT_IDX this sets avail_event: it is a seq_cst store, so
        // ordered before has_available()'s re-read of avail->idx.
        ring.set_kick_notifications(true);
    } while (!v.stopping.load(std::memory_order_relaxed) && ring.has_available());
    return true;
}

// Blocks until the driver kicks (or stop_vring() writes the kick fd); false
// when told to stop.
bool wait_for_kick(Vring& v) {
    uint64_t count;
    for (;;) {
        const ssize_t n = ::read(v.kick.get(), &count, sizeof count);
        if (n == sizeof count) break;
        if (n < 0 && errno == EINTR) continue;
        std::perror("vublk_reference_backend: read of the kick eventfd");
        return false;
    }
    return !v.stopping.load();
}

void run_vring(Vring& v) {
    DescriptorChain chain;
    // First a look without a kick: buffers may have been made available
    // before the start (a reconnect, a restart after SET_VRING_CALL).
    if (!drain(v, chain)) return;
    while (wait_for_kick(v))
        if (!drain(v, chain)) return;
}

// Starts fn in a thread with SIGTERM/SIGINT blocked, so that they reach the
// main thread and interrupt its blocking calls.
template <class F>
std::thread spawn_worker(F fn) {
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    std::thread t(std::move(fn));
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return t;
}

// The worker sleeps in a blocking read() of the kick fd, but the file
// description, O_NONBLOCK included, is shared with the front end, which may
// read it itself once the ring is stopped (QEMU does after GET_VRING_BASE,
// until read() fails with EAGAIN): it is blocking only while a worker runs.
bool set_kick_blocking(Vring& v, bool blocking) {
    const int flags = blocking ? v.kick_flags & ~O_NONBLOCK : v.kick_flags;
    return fcntl(v.kick.get(), F_SETFL, flags) == 0;
}

void stop_vring(Vring& v) {
    if (!v.running()) return;
    v.stopping.store(true);
    signal_eventfd(v.kick.get());  // its read() returns and it sees `stopping`
    v.worker.join();
    set_kick_blocking(v, false);
    v.base = v.ring->last_avail_idx();
    v.ring.reset();
}

// ---------------------------------------------------------------- control

using Reply = std::vector<uint8_t>;

template <class T>
void put(std::array<uint8_t, kConfigSpace>& a, size_t offset, T v) {
    std::memcpy(a.data() + offset, &v, sizeof v);
}

class Device {
public:
    ~Device() { stop_all(); }
    // The reply to send (empty: none); an error ends the session.
    Result<Reply> handle(std::vector<UniqueFd>& fds, const Header& h, std::span<const uint8_t> payload);

private:
    Result<Vring*> vring(uint32_t index);
    Result<void> maybe_start(Vring& v);
    Result<void> start_all();
    void stop_all();
    Result<void> set_features(uint64_t features);
    Result<void> set_mem_table(std::span<const uint8_t> payload, std::vector<UniqueFd>& fds);
    void reset();
    Result<Reply> vring_fd(Request type, std::span<const uint8_t> payload, std::vector<UniqueFd>& fds);
    Result<Reply> vring_addr(std::span<const uint8_t> payload);
    Result<Reply> vring_state(Request type, std::span<const uint8_t> payload);

    uint64_t features_ = 0;
    std::shared_ptr<const GuestMemory> memory_;
    std::array<Vring, kNumQueues> vrings_;
};

Result<Vring*> Device::vring(uint32_t index) {
    if (index >= kNumQueues) return fail(EPROTO, "queue " + std::to_string(index) + " does not exist");
    return &vrings_[index];
}

Result<void> Device::maybe_start(Vring& v) {
    if (v.running() || !v.ready() || !memory_) return {};
    auto ring = SplitRing::create(*memory_, v.num, *v.addr, v.base, (features_ & kFRingEventIdx) != 0,
                                  (features_ & kFRingIndirectDesc) != 0);
    if (!ring) return std::unexpected(ring.error());
    if (!set_kick_blocking(v, true)) return fail_errno("kick fd");
    v.ring.emplace(std::move(*ring));
    v.stopping.store(false);
    v.worker = spawn_worker([&v] { run_vring(v); });
    return {};
}

Result<void> Device::start_all() {
    for (Vring& v : vrings_)
        if (auto r = maybe_start(v); !r) return r;
    return {};
}

void Device::stop_all() {
    for (Vring& v : vrings_) stop_vring(v);
}

// The rings' flags (EVENT_IDX, INDIRECT_DESC) are fixed when they start:
// running ones restart with the new features.
Result<void> Device::set_features(uint64_t features) {
    if (features & ~kFeatures) return fail(EPROTO, "features the device did not offer");
    stop_all();
    features_ = features;
    // Without protocol features there is no SET_VRING_ENABLE: rings are enabled.
    if (!(features & kFProtocolFeatures))
        for (Vring& v : vrings_) v.enabled = true;
    return start_all();
}

// Running rings point into the old table: they stop before it is unmapped
// and restart over the new one.
Result<void> Device::set_mem_table(std::span<const uint8_t> payload, std::vector<UniqueFd>& fds) {
    auto regions = decode_mem_table(payload, fds.size());
    if (!regions) return std::unexpected(regions.error());
    auto mem = GuestMemory::map(*regions, fds);
    if (!mem) return std::unexpected(mem.error());
    stop_all();
    memory_ = std::move(*mem);
    return start_all();
}

void Device::reset() {
    stop_all();
    for (Vring& v : vrings_) v.reset_setup();
    features_ = 0;
}

Result<Reply> Device::vring_fd(Request type, std::span<const uint8_t> payload, std::vector<UniqueFd>& fds) {
    auto f = decode_vring_fd(payload, fds.size());
    if (!f) return std::unexpected(f.error());
    auto v = vring(f->index);
    if (!v) return std::unexpected(v.error());
    UniqueFd fd = f->no_fd ? UniqueFd() : std::move(fds[0]);
    Vring& q = **v;
    stop_vring(q);  // its worker uses these fds; it restarts below
    if (type == Request::set_vring_kick) {
        if (!fd) return fail(EPROTO, "a kick without an fd (polling) is not supported");
        q.kick_flags = fcntl(fd.get(), F_GETFL);
        if (q.kick_flags < 0) return fail_errno("kick fd");
        q.kick = std::move(fd);
    } else if (type == Request::set_vring_call) {
        q.call = std::move(fd);
    } else {
        q.err = std::move(fd);
    }
    if (auto r = maybe_start(q); !r) return std::unexpected(r.error());
    return Reply{};
}

Result<Reply> Device::vring_addr(std::span<const uint8_t> payload) {
    auto a = decode_vring_addr(payload);
    if (!a) return std::unexpected(a.error());
    auto v = vring(a->index);
    if (!v) return std::unexpected(v.error());
    stop_vring(**v);
    (*v)->addr = *a;
    if (auto r = maybe_start(**v); !r) return std::unexpected(r.error());
    return Reply{};
}

Result<Reply> Device::vring_state(Request type, std::span<const uint8_t> payload) {
    auto s = decode_vring_state(payload);
    if (!s) return std::unexpected(s.error());
    auto v = vring(s->index);
    if (!v) return std::unexpected(v.error());
    Vring& q = **v;
    switch (type) {
    case Request::set_vring_num:
        stop_vring(q);
        q.num = s->num;  // SplitRing::create checks it
        break;
    case Request::set_vring_base:
        if (s->num > 0xffff) return fail(EPROTO, "vring base " + std::to_string(s->num) + " above 65535");
        stop_vring(q);
        q.base = uint16_t(s->num);
        break;
    case Request::get_vring_base:
        stop_vring(q);
        q.kick.reset();  // the front end restarts the ring with a new kick fd
        return encode_reply_vring_state(uint32_t(type), {s->index, q.base});
    default:  // set_vring_enable
        if (s->num > 1) return fail(EPROTO, "SET_VRING_ENABLE with " + std::to_string(s->num));
        q.enabled = s->num == 1;
        if (!q.enabled) stop_vring(q);
        break;
    }
    if (auto r = maybe_start(q); !r) return std::unexpected(r.error());
    return Reply{};
}

Reply get_config(const ConfigAccess& a) {
    const uint32_t request = uint32_t(Request::get_config);
    if (a.offset > kConfigSpace || a.size > kConfigSpace - a.offset) return encode_reply(request, {});  // an error
    std::array<uint8_t, kConfigSpace> space{};
    put<uint64_t>(space, 0, g_size / 512);  // capacity, in 512-byte sectors
    put<uint32_t>(space, 12, kSegMax);
    put<uint32_t>(space, 20, kBlockSize);
    space[32] = 1;  // writeback: the driver flushes (FLUSH is offered)
    put<uint16_t>(space, 34, uint16_t(kNumQueues));
    return encode_reply_config(request, a, std::span(space).subspan(a.offset, a.size));
}

Result<Reply> Device::handle(std::vector<UniqueFd>& fds, const Header& h, std::span<const uint8_t> payload) {
    const auto type = static_cast<Request>(h.request);
    switch (type) {
    case Request::get_features:
        return encode_reply_u64(h.request, kFeatures);
    case Request::set_features: {
        auto f = decode_u64(payload);
        if (!f) return std::unexpected(f.error());
        if (auto r = set_features(*f); !r) return std::unexpected(r.error());
        return Reply{};
    }
    case Request::get_protocol_features:
        return encode_reply_u64(h.request, kProtocolFeatures);
    case Request::set_protocol_features: {
        // Nothing depends on them here: acks follow each message's need_reply flag.
        auto f = decode_u64(payload);
        if (!f) return std::unexpected(f.error());
        if (*f & ~kProtocolFeatures) return fail(EPROTO, "protocol features the device did not offer");
        return Reply{};
    }
    case Request::set_owner:
        return Reply{};
    case Request::reset_owner:
    case Request::reset_device:
        reset();
        return Reply{};
    case Request::get_queue_num:
        return encode_reply_u64(h.request, kNumQueues);
    case Request::get_config: {
        auto a = decode_config(payload);
        if (!a) return std::unexpected(a.error());
        return get_config(*a);
    }
    case Request::set_mem_table:
        if (auto r = set_mem_table(payload, fds); !r) return std::unexpected(r.error());
        return Reply{};
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
        return vring_fd(type, payload, fds);
    case Request::set_vring_addr:
        return vring_addr(payload);
    case Request::set_vring_num:
    case Request::set_vring_base:
    case Request::get_vring_base:
    case Request::set_vring_enable:
        return vring_state(type, payload);
    default:
        // Not offered (SET_CONFIG: the config is read-only): a nack if asked.
        std::fprintf(stderr, "vublk_reference_backend: %s (%u) not supported\n", request_name(h.request), h.request);
        return (h.flags & kFlagNeedReply) ? encode_reply_u64(h.request, 1) : Reply{};
    }
}

// ---------------------------------------------------------------- messages

struct Message {
    Header header;
    std::vector<uint8_t> payload;
    std::vector<UniqueFd> fds;
};

// One recvmsg() into buf, collecting the fds that come with it. EINTR ends
// the wait only when a stop signal came.
Result<size_t> receive_some(int fd, uint8_t* buf, size_t len, std::vector<UniqueFd>& fds) {
    for (;;) {
        auto n = receive_with_fds(fd, buf, len, fds, 0);
        if (n || n.error().code != EINTR || g_stop) return n;
    }
}

Result<void> receive_exact(int fd, uint8_t* buf, size_t len, std::vector<UniqueFd>& fds) {
    for (size_t got = 0; got < len;) {
        auto n = receive_some(fd, buf + got, len - got, fds);
        if (!n) return std::unexpected(n.error());
        got += *n;
    }
    return {};
}

Result<Message> receive_message(int fd) {
    Message m;
    std::array<uint8_t, kHeaderSize> header;
    if (auto r = receive_exact(fd, header.data(), header.size(), m.fds); !r) return std::unexpected(r.error());
    auto h = decode_header(header);
    if (!h) return std::unexpected(h.error());
    m.header = *h;
    m.payload.resize(h->size);
    if (auto r = receive_exact(fd, m.payload.data(), m.payload.size(), m.fds); !r) return std::unexpected(r.error());
    return m;
}

bool send_all(int fd, const Reply& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sent += size_t(n);
    }
    return true;
}

bool has_own_reply(Request r) {
    return r == Request::get_features || r == Request::get_protocol_features || r == Request::get_vring_base ||
           r == Request::get_queue_num || r == Request::get_config;
}

// The control channel of one front end, until it disconnects, breaks the
// protocol or a stop signal comes. The device (its queues' threads, the
// mapped memory) goes with it.
void serve_front_end(int fd) {
    Device device;
    for (;;) {
        auto m = receive_message(fd);
        if (!m) {
            if (m.error().code != ECONNRESET && !g_stop)
                std::fprintf(stderr, "vublk_reference_backend: %s\n", m.error().describe().c_str());
            return;
        }
        const uint32_t request = m->header.request;
        const bool need_reply = m->header.flags & kFlagNeedReply;
        auto reply = device.handle(m->fds, m->header, m->payload);
        if (!reply) {
            std::fprintf(stderr, "vublk_reference_backend: %s: %s; disconnecting\n", request_name(request),
                         reply.error().describe().c_str());
            if (need_reply && !has_own_reply(static_cast<Request>(request)))
                send_all(fd, encode_reply_u64(request, 1));
            return;
        }
        if (reply->empty() && need_reply) *reply = encode_reply_u64(request, 0);
        if (!reply->empty() && !send_all(fd, *reply)) return;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const char* path;
    if (!bench::parse_socket_and_size(argc, argv, path, g_size)) return 2;
    g_size = g_size / 512 * 512;

    bench::install_stop_signals();  // accept() and recvmsg() return EINTR
    const ListenAddress addr{.path = path};
    const int lfd = bench::listen_blocking(addr, "vublk_reference_backend");
    if (lfd < 0) return 1;
    std::printf("vublk_reference_backend: listening on %s\n", path);  // the bench waits for this line
    std::fflush(stdout);
    // One front end at a time: the next waits in the listen backlog.
    bench::accept_until_stopped(addr, lfd, [](int fd) {
        serve_front_end(fd);
        ::close(fd);
    });
    return 0;
}
