#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "pattern.h"

namespace vubbad {

using Clock = std::chrono::steady_clock;

Env& env() {
    static Env e;
    return e;
}

void fail(const std::string& what) { throw Failure{what}; }

void note(const std::string& text) { std::printf("    %s\n", text.c_str()); }

// ---- file descriptors ----

Fd& Fd::operator=(Fd&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.release();
    }
    return *this;
}

Fd::~Fd() {
    if (fd_ >= 0) ::close(fd_);
}

Fd make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    check(fd >= 0, std::string("eventfd: ") + std::strerror(errno));
    return Fd(fd);
}

Fd make_memfd(uint64_t size) {
    const int fd = ::memfd_create(kMemfdName, MFD_CLOEXEC);
    check(fd >= 0, std::string("memfd_create: ") + std::strerror(errno));
    check(::ftruncate(fd, off_t(size)) == 0, std::string("ftruncate: ") + std::strerror(errno));
    return Fd(fd);
}

std::pair<Fd, Fd> make_pipe() {
    int p[2];
    check(::pipe2(p, O_CLOEXEC) == 0, std::string("pipe: ") + std::strerror(errno));
    return {Fd(p[0]), Fd(p[1])};
}

Fd make_regular_file(uint64_t size) {
    char path[] = "/tmp/vhost-bad-input-XXXXXX";
    const int fd = ::mkostemp(path, O_CLOEXEC);
    check(fd >= 0, std::string("mkostemp: ") + std::strerror(errno));
    ::unlink(path);
    check(::ftruncate(fd, off_t(size)) == 0, std::string("ftruncate: ") + std::strerror(errno));
    return Fd(fd);
}

// ---- the daemon process ----

bool daemon_alive() {
    if (!env().daemon_pid) return true;
    // A dead child of the script that started it is a zombie until reaped.
    std::ifstream stat("/proc/" + std::to_string(env().daemon_pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    const size_t paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

int daemon_fd_count() {
    if (!env().daemon_pid) return -1;
    DIR* d = ::opendir(("/proc/" + std::to_string(env().daemon_pid) + "/fd").c_str());
    if (!d) return -1;
    int n = 0;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') n++;
    ::closedir(d);
    return n;
}

int daemon_map_count(std::string_view containing) {
    if (!env().daemon_pid) return -1;
    std::ifstream maps("/proc/" + std::to_string(env().daemon_pid) + "/maps");
    int n = 0;
    for (std::string line; std::getline(maps, line);)
        if (line.find(containing) != std::string::npos) n++;
    return n;
}

uint64_t daemon_rss_kib() {
    if (!env().daemon_pid) return 0;
    std::ifstream status("/proc/" + std::to_string(env().daemon_pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    return 0;
}

uint64_t log_size() {
    if (env().log_path.empty()) return 0;
    std::ifstream f(env().log_path, std::ios::binary | std::ios::ate);
    return f ? uint64_t(f.tellg()) : 0;
}

std::string log_line_since(uint64_t offset, const std::string& text) {
    if (env().log_path.empty()) return "";
    const auto deadline = Clock::now() + kTimeout;
    for (;;) {
        std::ifstream f(env().log_path, std::ios::binary);
        f.seekg(std::streamoff(offset));
        std::string line;
        while (std::getline(f, line))
            if (line.find(text) != std::string::npos) return line;
        if (Clock::now() > deadline) return "";
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

bool log_has_since(uint64_t offset, const std::string& text) {
    return env().log_path.empty() || !log_line_since(offset, text).empty();
}

// ---- connections and messages ----

std::unique_ptr<Frontend> connect_served(uint16_t queues, bool config_wce, bool inflight) {
    FrontendOptions o;
    o.socket = env().socket;
    o.queues = queues;
    o.config_wce = config_wce;
    o.inflight = inflight;
    o.timeout = kTimeout;
    const auto deadline = Clock::now() + kTimeout;
    std::string last;
    while (Clock::now() < deadline) {
        auto fe = Frontend::connect(o);
        if (fe) {
            auto r = (*fe)->channel().call(Message::empty(Request::kGetFeatures), sizeof(uint64_t));
            if (r) return std::move(*fe);
            last = r.error();
        } else {
            last = fe.error();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    fail("no connection served within " + std::to_string(kTimeout.count()) + " ms: " + last);
}

std::unique_ptr<Frontend> connect_negotiated(uint16_t queues, bool config_wce) {
    auto fe = connect_served(queues, config_wce);
    need(fe->negotiate(), "negotiation");
    return fe;
}

Message msg_u64(Request r, uint64_t value) { return Message::with(r, value); }

Message msg_state(Request r, uint32_t index, uint32_t num) { return Message::with(r, VringState{index, num}); }

Message msg_raw(uint32_t request, std::vector<uint8_t> payload) {
    Message m;
    m.request = request;
    m.payload = std::move(payload);
    return m;
}

void send_bytes(int fd, const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (len > 0) {
        const ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the daemon closed: what a case expects next
        p += n;
        len -= size_t(n);
    }
}

namespace {

bool is_closed_error(const std::string& e) {
    return e.find("closed the connection") != std::string::npos || e.find("reset by peer") != std::string::npos ||
           e.find("Broken pipe") != std::string::npos;
}

std::string describe(const Message& m) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s (flags 0x%x, %zu payload bytes)", request_name(m.request), m.flags,
                  m.payload.size());
    std::string s = buf;
    if (m.payload.size() == 8) {
        uint64_t v;
        std::memcpy(&v, m.payload.data(), 8);
        s += " u64 " + std::to_string(v);
    }
    for (int f : m.fds) ::close(f);
    return s;
}

// The u64 of a REPLY_ACK answer to `request`, or a failure.
uint64_t ack_value(const Message& reply, uint32_t request, const std::string& what) {
    if (reply.request != request || !(reply.flags & kFlagReply) || reply.payload.size() != 8)
        fail(what + ": unexpected message instead of an ack: " + describe(reply));
    uint64_t v;
    std::memcpy(&v, reply.payload.data(), 8);
    return v;
}

}  // namespace

const char* refusal_name(Refusal r) { return r == Refusal::nacked ? "nack" : "disconnect"; }

Refusal expect_refused(Channel& ch, Message m, const std::string& what) {
    m.flags |= kFlagNeedReply;
    const uint32_t request = m.request;
    if (auto s = ch.send(m); !s) {
        if (is_closed_error(s.error())) return Refusal::disconnected;
        fail(what + ": " + s.error());
    }
    auto reply = ch.receive();
    if (!reply) {
        if (is_closed_error(reply.error())) return Refusal::disconnected;
        fail(what + ": no answer (" + reply.error() + ")");
    }
    for (int f : reply->fds) ::close(f);
    if (ack_value(*reply, request, what) == 0) fail(what + ": accepted (ack 0)");
    return Refusal::nacked;
}

void expect_refused_in(Channel& ch, std::vector<Message> seq, const std::string& what) {
    for (Message& m : seq) {
        m.flags |= kFlagNeedReply;
        const uint32_t request = m.request;
        if (auto s = ch.send(m); !s) {
            if (is_closed_error(s.error())) return;
            fail(what + ": " + s.error());
        }
        auto reply = ch.receive();
        if (!reply) {
            if (is_closed_error(reply.error())) return;
            fail(what + ": no answer to " + request_name(request) + " (" + reply.error() + ")");
        }
        if (ack_value(*reply, request, what) != 0) return;
    }
    fail(what + ": every message of the setup was accepted (ack 0)");
}

void expect_closed(Channel& ch, const std::string& what) {
    for (;;) {
        auto m = ch.receive();
        if (!m) {
            if (is_closed_error(m.error())) return;
            fail(what + ": the daemon did not close the connection (" + m.error() + ")");
        }
        if (!(m->flags & kFlagReply) || m->payload.size() != 8 || ack_value(*m, m->request, what) == 0)
            fail(what + ": got " + describe(*m) + " instead of the connection closed");
    }
}

void expect_session_alive(Channel& ch, const std::string& what) {
    auto r = ch.call(Message::empty(Request::kGetFeatures), sizeof(uint64_t));
    if (!r) fail(what + ": the session no longer answers GET_FEATURES: " + r.error());
}

SharedRegion::SharedRegion(uint64_t sz, uint64_t g) : fd(make_memfd(sz)), size(sz), gpa(g) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    check(p != MAP_FAILED, std::string("mmap: ") + std::strerror(errno));
    host = static_cast<uint8_t*>(p);
}

SharedRegion::~SharedRegion() {
    if (host) ::munmap(host, size);
}

Message mem_table(const std::vector<MemRegion>& regions, const std::vector<int>& fds, int count) {
    Message m = Message::empty(Request::kSetMemTable);
    const MemTableHeader h{count >= 0 ? uint32_t(count) : uint32_t(regions.size()), 0};
    m.payload.resize(sizeof h + sizeof(MemRegion) * regions.size());
    std::memcpy(m.payload.data(), &h, sizeof h);
    if (!regions.empty()) std::memcpy(m.payload.data() + sizeof h, regions.data(), sizeof(MemRegion) * regions.size());
    m.fds = fds;
    return m;
}

// ---- a started device ----

GuestBuffer Device::alloc(uint64_t size, uint64_t align) { return need(mem().allocate(size, align), "allocate"); }

Device start_device(const DeviceOptions& o) {
    Device d;
    d.fe = connect_served(o.queues, false, o.inflight);
    need(d.fe->negotiate(), "negotiation");
    check(d.fe->negotiation().has_protocol(kPfReplyAck), "REPLY_ACK not negotiated");
    check(!o.inflight || d.fe->negotiation().has_protocol(kPfInflightShmfd), "INFLIGHT_SHMFD not negotiated");
    need(d.fe->start(o.queue_size, o.mem_size), "device setup");
    d.indirect = o.indirect && d.fe->negotiation().has(kFIndirectDesc);
    d.capacity = d.fe->capacity_bytes().value_or(0);
    for (uint32_t i = 0; i < o.queues; i++) {
        d.err.push_back(make_eventfd());
        Message m = msg_u64(Request::kSetVringErr, i);
        m.fds = {d.err.back().get()};
        need(d.ch().command(m), "SET_VRING_ERR");
        d.slots.push_back(need(BlkSlot::allocate(d.mem(), 64 << 10), "request slot"));
    }
    return d;
}

Completion1 wait_used(Device& d, unsigned qi, const std::string& what) {
    const auto deadline = Clock::now() + kTimeout;
    for (;;) {
        auto e = d.vq(qi).next_used();
        if (!e) fail(what + ": " + e.error());
        if (*e) return {(*e)->id, (*e)->len};
        if (Clock::now() > deadline)
            fail(what + ": no used element within " + std::to_string(kTimeout.count()) + " ms (used idx " +
                 std::to_string(d.vq(qi).raw_used_idx()) + ", avail idx " + std::to_string(d.vq(qi).avail_idx()) +
                 ")");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

uint8_t run_request(Device& d, unsigned qi, const BlkRequest& r, const std::string& what) {
    return run_request(d, qi, d.slots[qi], r, what);
}

uint8_t run_request(Device& d, unsigned qi, BlkSlot& slot, const BlkRequest& r, const std::string& what) {
    auto segs = need(slot.prepare(r), what);
    Virtqueue& vq = d.vq(qi);
    const uint16_t head = d.indirect ? need(vq.add_indirect(segs, slot.indirect()), what)
                                     : need(vq.add_chain(segs), what);
    vq.make_available(head);
    publish_and_kick(d, qi);
    const Completion1 c = wait_used(d, qi, what);
    check(c.id == head, what + ": used element for head " + std::to_string(c.id) + ", expected " + std::to_string(head));
    return slot.status();
}

void write_read_verify(Device& d, unsigned qi, uint64_t sector, uint32_t generation) {
    constexpr uint32_t kBytes = 8192;
    const uint32_t seed = 0xbad1;
    const std::string where = "queue " + std::to_string(qi) + " sector " + std::to_string(sector);
    BlkSlot& slot = d.slots[qi];
    fill_pattern({slot.data(), kBytes}, sector * kSectorSize, generation, seed);
    BlkRequest w{.op = BlkOp::kWrite, .sector = sector, .bytes = kBytes, .data_segments = 2};
    const uint8_t ws = run_request(d, qi, w, "write at " + where);
    check(ws == kBlkSOk, "write at " + where + ": status " + status_name(ws));
    std::memset(slot.data(), 0, kBytes);
    BlkRequest r{.op = BlkOp::kRead, .sector = sector, .bytes = kBytes, .data_segments = 2};
    const uint8_t rs = run_request(d, qi, r, "read at " + where);
    check(rs == kBlkSOk, "read at " + where + ": status " + status_name(rs));
    if (auto bad = check_pattern({slot.data(), kBytes}, sector * kSectorSize, generation, seed))
        fail("read back at " + where + ": " + *bad);
}

// ---- hand-made chains ----

uint16_t put_chain(Device& d, unsigned qi, const std::vector<RawDesc>& descs) {
    Virtqueue& vq = d.vq(qi);
    std::vector<uint16_t> idx;
    for (size_t i = 0; i < descs.size(); i++) {
        auto t = vq.take_descriptor();
        check(t.has_value(), "no free descriptor for a hand-made chain");
        idx.push_back(*t);
    }
    auto table = vq.raw_descriptors();
    for (size_t i = 0; i < descs.size(); i++) {
        const RawDesc& r = descs[i];
        table[idx[i]] = VirtqDesc{r.addr, r.len, r.flags, uint16_t((r.flags & kDescFNext) ? idx.at(r.next) : 0)};
    }
    vq.raw_make_available(idx[0], idx);
    return idx[0];
}

void publish_and_kick(Device& d, unsigned qi) {
    d.vq(qi).publish();
    d.q(qi).kick();  // whether or not the device asked: a kick too many is harmless
}

ReqBufs make_request(Device& d, uint32_t type, uint64_t sector, uint32_t data_len) {
    ReqBufs b{d.alloc(16), data_len ? d.alloc(data_len, 4096) : GuestBuffer{}, d.alloc(1)};
    const BlkReqHeader h{type, 0, sector};
    std::memcpy(b.header.host, &h, sizeof h);
    *b.status.host = 0xff;
    return b;
}

RingMark mark(Device& d, unsigned qi) { return {d.vq(qi).avail_idx(), d.vq(qi).raw_used_idx(), log_size()}; }

namespace {

bool readable_within(int fd, std::chrono::milliseconds t) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, int(t.count())) == 1 && (p.revents & POLLIN);
}

}  // namespace

void restart_queue(Device& d, unsigned qi, uint16_t base) {
    const std::string q = " (queue " + std::to_string(qi) + ")";
    auto reply = need(d.ch().call(msg_state(Request::kGetVringBase, qi, 0), sizeof(VringState)), "GET_VRING_BASE" + q);
    VringState s;
    std::memcpy(&s, reply.payload.data(), sizeof s);
    check(s.index == qi, "GET_VRING_BASE" + q + " answered for queue " + std::to_string(s.index));
    d.vq(qi).raw_set_avail_idx(base);
    for (Message& m : queue_setup(d, qi, base)) {
        const std::string name = request_name(m.request);
        need(d.ch().command(std::move(m)), name + q);
    }
}

std::vector<Message> queue_setup(Device& d, unsigned qi, uint16_t base) {
    const Virtqueue& vq = d.vq(qi);
    const VringAddr addr{qi, 0, reinterpret_cast<uint64_t>(vq.desc_host()), reinterpret_cast<uint64_t>(vq.used_host()),
                         reinterpret_cast<uint64_t>(vq.avail_host()), 0};
    Message kick = msg_u64(Request::kSetVringKick, qi);
    kick.fds = {d.q(qi).kick_fd};
    return {msg_state(Request::kSetVringBase, qi, base), Message::with(Request::kSetVringAddr, addr), kick,
            msg_state(Request::kSetVringEnable, qi, 1)};
}

void expect_broken_then_recover(Device& d, unsigned qi, const RingMark& m, unsigned extra_used) {
    const std::string q = "queue " + std::to_string(qi);
    check(readable_within(d.err[qi].get(), kTimeout), q + ": the error eventfd was not signalled");
    uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(d.err[qi].get(), &count, sizeof count);
    if (!env().log_path.empty()) {
        const std::string line = log_line_since(m.log_offset, "broke the ring");
        check(!line.empty(), q + ": no \"broke the ring\" in the daemon's log");
        const size_t at = line.find("broke the ring");
        note("daemon: ..." + line.substr(at));
    }
    // A late used element for the bad chain would show up meanwhile.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uint16_t used = d.vq(qi).raw_used_idx();
    check(uint16_t(used - m.used) == extra_used, q + ": used idx moved from " + std::to_string(m.used) + " to " +
                                                     std::to_string(used) + " (expected " +
                                                     std::to_string(extra_used) + " used elements)");
    while (d.vq(qi).has_used()) need(d.vq(qi).next_used(), q);  // the good requests' elements
    // Other queues are not affected.
    for (unsigned other = 0; other < d.fe->queue_count(); other++)
        if (other != qi) write_read_verify(d, other, 4096 + 64 * other, 7);
    restart_queue(d, qi, m.avail);
    write_read_verify(d, qi, 4096 + 64 * qi, 8);
}

void expect_status(Device& d, unsigned qi, uint16_t head, const GuestBuffer& status, uint8_t want, uint32_t max_len,
                   const std::string& what) {
    const Completion1 c = wait_used(d, qi, what);
    check(c.id == head, what + ": used element for head " + std::to_string(c.id) + ", expected " + std::to_string(head));
    check(*status.host == want, what + ": status " + status_name(*status.host) + ", expected " + status_name(want));
    check(c.len >= 1 && c.len <= max_len, what + ": used len " + std::to_string(c.len) + " (expected 1.." +
                                              std::to_string(max_len) + ")");
    write_read_verify(d, qi, 4096 + 64 * qi, 9);
}

}  // namespace vubbad
