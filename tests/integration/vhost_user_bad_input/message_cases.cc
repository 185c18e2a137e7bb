// Malformed control messages (vhost-user.rst; docs/VHOST-USER-BLK.md, "The
// front end is untrusted", "Messages" and "Memory"). Each case says what it
// sends and what the daemon must do: refuse it (a non-zero REPLY_ACK or the
// connection closed), or for GET_CONFIG and unknown requests answer the
// error and carry on.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "cases.h"
#include "harness.h"

namespace vubbad {

namespace {

constexpr uint32_t kBadQueue = 7;  // the export has 2 queues (run.sh)
constexpr uint64_t kGpa = 0x100000;

// `len` bytes in one sendmsg with `fds` as SCM_RIGHTS.
void send_with_fds(int sock, const void* data, size_t len, const std::vector<int>& fds) {
    iovec iov{const_cast<void*>(data), len};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (!fds.empty()) {
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    (void)::sendmsg(sock, &mh, MSG_NOSIGNAL);  // a closed peer is what the case checks next
}

std::vector<uint8_t> config_request(uint32_t offset, uint32_t size, size_t data_bytes) {
    std::vector<uint8_t> p(sizeof(ConfigHeader) + data_bytes);
    const ConfigHeader h{offset, size, 0};
    std::memcpy(p.data(), &h, sizeof h);
    return p;
}

// A valid memory table and ring setup for queue 0 up to (not including)
// SET_VRING_ADDR, on a negotiated connection; returns the region.
std::unique_ptr<SharedRegion> setup_until_addr(Frontend& fe) {
    auto r = std::make_unique<SharedRegion>(1 << 20, kGpa);
    need(fe.channel().command(mem_table({r->region()}, {r->fd.get()})), "SET_MEM_TABLE");
    need(fe.channel().command(msg_state(Request::kSetVringNum, 0, 64)), "SET_VRING_NUM");
    need(fe.channel().command(msg_state(Request::kSetVringBase, 0, 0)), "SET_VRING_BASE");
    return r;
}

// A ring of 64 entries at the start of `r`: desc +0, avail +1024, used +2048.
VringAddr ring_in(const SharedRegion& r) {
    const uint64_t base = reinterpret_cast<uint64_t>(r.host);
    return VringAddr{0, 0, base, base + 2048, base + 1024, 0};
}

// SET_VRING_ADDR with `addr`, then the kick fd and the enable that start the
// queue: the daemon must refuse one of them (it may check the addresses only
// when the queue starts).
void expect_ring_addr_refused(Frontend& fe, const VringAddr& addr, const std::string& what) {
    Fd kick = make_eventfd();
    Message k = msg_u64(Request::kSetVringKick, 0);
    k.fds = {kick.get()};
    expect_refused_in(fe.channel(), {Message::with(Request::kSetVringAddr, addr), k,
                                     msg_state(Request::kSetVringEnable, 0, 1)},
                      what);
}

// ---------------------------------------------------------------- header

// Header flags with version 0, 2 or 3. Spec: bits 0-1 are the version,
// currently 1; docs: the version is checked before the payload is read.
// Expect: the connection closed (no reply: the message is not understood).
void bad_version() {
    for (uint32_t version : {0u, 2u, 3u}) {
        auto fe = connect_served();
        Message m = Message::empty(Request::kGetFeatures);
        m.flags = version;
        need(fe->channel().send(m), "send");
        expect_closed(fe->channel(), "GET_FEATURES with version " + std::to_string(version));
    }
}

// GET_FEATURES with the reply flag (bit 2) set: only the back end sends
// replies. Expect: the connection closed.
void reply_flag() {
    auto fe = connect_served();
    Message m = Message::empty(Request::kGetFeatures);
    m.flags = kVersion | kFlagReply;
    need(fe->channel().send(m), "send");
    expect_closed(fe->channel(), "GET_FEATURES with the reply flag");
}

// A header claiming a 1 MiB payload (the daemon takes at most 4096 bytes:
// the largest message, a full memory table, is 264). Docs: the size is
// checked before the payload is read. Expect: the connection closed after
// the header alone; and with the header plus 64 KiB of junk and our side
// closed at once, the daemon survives (checked by the good client after).
void oversized_payload() {
    {
        auto fe = connect_served();
        const MsgHeader h{uint32_t(Request::kSetMemTable), kVersion, 1u << 20};
        send_bytes(fe->channel().fd(), &h, sizeof h);
        expect_closed(fe->channel(), "a header claiming 1 MiB of payload");
    }
    auto fe = connect_served();
    const MsgHeader h{uint32_t(Request::kSetMemTable), kVersion, 1u << 20};
    send_bytes(fe->channel().fd(), &h, sizeof h);
    std::vector<uint8_t> junk(64 << 10, 0xa5);
    (void)::send(fe->channel().fd(), junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

// 6 of the 12 header bytes, then our side shut down (SHUT_WR). Expect: the
// daemon sees the end of the stream and closes the session.
void truncated_header() {
    auto fe = connect_served();
    const MsgHeader h{uint32_t(Request::kGetFeatures), kVersion, 0};
    send_bytes(fe->channel().fd(), &h, 6);
    ::shutdown(fe->channel().fd(), SHUT_WR);
    expect_closed(fe->channel(), "half a header, then end of stream");
}

// A valid GET_FEATURES delivered one byte at a time, 20 ms apart: a stream
// socket may split a message anywhere. Expect: it is answered.
void header_in_pieces() {
    auto fe = connect_served();
    const MsgHeader h{uint32_t(Request::kGetFeatures), kVersion, 0};
    for (size_t i = 0; i < sizeof h; i++) {
        send_bytes(fe->channel().fd(), reinterpret_cast<const uint8_t*>(&h) + i, 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto reply = need(fe->channel().receive(), "GET_FEATURES sent byte by byte");
    check(reply.request == uint32_t(Request::kGetFeatures) && reply.payload.size() == 8,
          "GET_FEATURES sent byte by byte: wrong reply");
}

// SET_MEM_TABLE's header claiming 40 payload bytes, 20 sent, then our side
// shut down. Expect: the connection closed.
void truncated_payload() {
    auto fe = connect_negotiated();
    const MsgHeader h{uint32_t(Request::kSetMemTable), kVersion | kFlagNeedReply, 40};
    send_bytes(fe->channel().fd(), &h, sizeof h);
    const uint8_t half[20] = {1};
    send_bytes(fe->channel().fd(), half, sizeof half);
    ::shutdown(fe->channel().fd(), SHUT_WR);
    expect_closed(fe->channel(), "a truncated payload, then end of stream");
}

// Payloads whose size does not fit their type: SET_FEATURES with 4 bytes
// (u64 expected), SET_VRING_NUM with 12 (vring state: 8), SET_VRING_ADDR with
// 32 (40). Docs: every payload's size must match its type exactly. Expect:
// refused.
void payload_size_mismatch() {
    const std::pair<Request, size_t> bad[] = {
        {Request::kSetFeatures, 4}, {Request::kSetVringNum, 12}, {Request::kSetVringAddr, 32}};
    for (auto [request, size] : bad) {
        auto fe = connect_negotiated();
        expect_refused(fe->channel(), msg_raw(uint32_t(request), std::vector<uint8_t>(size)),
                       std::string(request_name(uint32_t(request))) + " with " + std::to_string(size) + " bytes");
    }
}

// ---------------------------------------------------------------- features

// SET_FEATURES with RING_PACKED (bit 34), which the device does not offer.
// Spec: the front end acknowledges features the back end offered; docs:
// features must be ones that were offered. Expect: refused.
void set_features_not_offered() {
    auto fe = connect_negotiated();
    check(!(fe->negotiation().offered_features & bit(34)), "the daemon offers RING_PACKED: pick another bit");
    expect_refused(fe->channel(), msg_u64(Request::kSetFeatures, fe->negotiation().features | bit(34)),
                   "SET_FEATURES with RING_PACKED");
}

// SET_PROTOCOL_FEATURES with bit 40 (unknown to the spec), and with
// LOG_SHMFD (bit 1: known, not offered), after a good negotiation. Docs:
// protocol features must be ones that were offered. Expect: refused.
void set_protocol_features_unknown() {
    for (unsigned b : {40u, 1u}) {
        auto fe = connect_negotiated();
        check(!(fe->negotiation().offered_protocol_features & bit(b)), "the daemon offers the protocol feature");
        expect_refused(fe->channel(),
                       msg_u64(Request::kSetProtocolFeatures, fe->negotiation().protocol_features | bit(b)),
                       "SET_PROTOCOL_FEATURES with bit " + std::to_string(b));
    }
}

// ---------------------------------------------------------------- memory table

// SET_MEM_TABLE with num_regions 0, and with one region of size 0. Docs:
// each region must be non-empty (and a table without one is no table).
// Expect: refused.
void mem_table_empty() {
    {
        auto fe = connect_negotiated();
        expect_refused(fe->channel(), mem_table({}, {}), "SET_MEM_TABLE with 0 regions");
    }
    auto fe = connect_negotiated();
    Fd m = make_memfd(1 << 20);
    expect_refused(fe->channel(), mem_table({MemRegion{kGpa, 0, 0x7f0000000000, 0}}, {m.get()}),
                   "SET_MEM_TABLE with a region of 0 bytes");
}

// SET_MEM_TABLE with 9 regions (the spec's limit is 8) and 8 memfds (so
// that the fd limit is not what refuses it). Expect: refused.
void mem_table_nine_regions() {
    auto fe = connect_negotiated();
    std::vector<Fd> memfds;
    std::vector<MemRegion> regions;
    std::vector<int> fds;
    for (unsigned i = 0; i < 9; i++) {
        regions.push_back({kGpa + i * (2ull << 20), 1 << 20, 0x7f0000000000ull + i * (2ull << 20), 0});
        if (i < 8) {
            memfds.push_back(make_memfd(1 << 20));
            fds.push_back(memfds.back().get());
        }
    }
    expect_refused(fe->channel(), mem_table(regions, fds), "SET_MEM_TABLE with 9 regions");
}

// The region count and the fds disagree: 2 regions with 1 fd, 1 region with
// 2 fds, 1 region with none. Spec: one fd per region. Expect: refused.
void mem_table_fd_count_mismatch() {
    Fd a = make_memfd(1 << 20), b = make_memfd(1 << 20);
    const MemRegion r0{kGpa, 1 << 20, 0x7f0000000000, 0}, r1{kGpa + (4 << 20), 1 << 20, 0x7f0000400000, 0};
    const std::vector<std::pair<std::vector<MemRegion>, std::vector<int>>> bad = {
        {{r0, r1}, {a.get()}}, {{r0}, {a.get(), b.get()}}, {{r0}, {}}};
    for (const auto& [regions, fds] : bad) {
        auto fe = connect_negotiated();
        expect_refused(fe->channel(), mem_table(regions, fds),
                       "SET_MEM_TABLE with " + std::to_string(regions.size()) + " regions and " +
                           std::to_string(fds.size()) + " fds");
    }
}

// A region reaching past the end of its memfd: 2 MiB described on a 1 MiB
// file, and 1 MiB at offset 512 KiB of a 1 MiB file. Docs: refused, as a
// mapping past the end of a file raises SIGBUS in the daemon when touched.
// Expect: refused, daemon alive.
void mem_table_past_end_of_file() {
    const std::pair<uint64_t, uint64_t> bad[] = {{2 << 20, 0}, {1 << 20, 512 << 10}};  // size, mmap_offset
    for (auto [size, offset] : bad) {
        auto fe = connect_negotiated();
        Fd m = make_memfd(1 << 20);
        expect_refused(fe->channel(), mem_table({MemRegion{kGpa, size, 0x7f0000000000, offset}}, {m.get()}),
                       "a region of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                           " of a 1 MiB memfd");
        check(daemon_alive(), "the daemon died");
    }
}

// Two regions whose guest addresses overlap by 512 KiB. Docs: regions must
// not overlap. Expect: refused.
void mem_table_overlap() {
    auto fe = connect_negotiated();
    Fd a = make_memfd(1 << 20), b = make_memfd(1 << 20);
    expect_refused(fe->channel(),
                   mem_table({MemRegion{kGpa, 1 << 20, 0x7f0000000000, 0},
                              MemRegion{kGpa + (512 << 10), 1 << 20, 0x7f0000400000, 0}},
                             {a.get(), b.get()}),
                   "overlapping regions");
}

// Regions whose guest address, user address or mmap offset plus size wraps
// around 2^64. Docs: a region must not wrap around. Expect: refused.
void mem_table_wraps() {
    const uint64_t top = 0xfffffffffff00000;  // + 2 MiB wraps
    const MemRegion bad[] = {{top, 2 << 20, 0x7f0000000000, 0},
                             {kGpa, 2 << 20, top, 0},
                             {kGpa, 2 << 20, 0x7f0000000000, top}};
    const char* what[] = {"guest address", "user address", "mmap offset"};
    for (size_t i = 0; i < 3; i++) {
        auto fe = connect_negotiated();
        Fd m = make_memfd(2 << 20);
        expect_refused(fe->channel(), mem_table({bad[i]}, {m.get()}),
                       std::string("a region whose ") + what[i] + " wraps around");
    }
}

// A region backed by a pipe, by an eventfd (neither can be mapped), by a
// write-sealed memfd and by a read-only fd of a memfd (neither can be mapped
// shared and writable, as guest memory must be). Expect: refused.
void mem_table_unmappable_fd() {
    {
        auto fe = connect_negotiated();
        auto [rd, wr] = make_pipe();
        expect_refused(fe->channel(), mem_table({MemRegion{kGpa, 1 << 20, 0x7f0000000000, 0}}, {rd.get()}),
                       "a region backed by a pipe");
    }
    {
        auto fe = connect_negotiated();
        Fd e = make_eventfd();
        expect_refused(fe->channel(), mem_table({MemRegion{kGpa, 1 << 20, 0x7f0000000000, 0}}, {e.get()}),
                       "a region backed by an eventfd");
    }
    {
        auto fe = connect_negotiated();
        Fd m(::memfd_create("vhost-bad-input-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        check(m.get() >= 0 && ::ftruncate(m.get(), 1 << 20) == 0 && ::fcntl(m.get(), F_ADD_SEALS, F_SEAL_WRITE) == 0,
              "a write-sealed memfd");
        expect_refused(fe->channel(), mem_table({MemRegion{kGpa, 1 << 20, 0x7f0000000000, 0}}, {m.get()}),
                       "a region backed by a write-sealed memfd");
    }
    auto fe = connect_negotiated();
    Fd m = make_memfd(1 << 20);
    Fd ro(::open(("/proc/self/fd/" + std::to_string(m.get())).c_str(), O_RDONLY | O_CLOEXEC));
    check(ro.get() >= 0, "a read-only fd of a memfd");
    expect_refused(fe->channel(), mem_table({MemRegion{kGpa, 1 << 20, 0x7f0000000000, 0}}, {ro.get()}),
                   "a region backed by a read-only fd");
}

// A new memory table while the queues run, in which their rings no longer
// lie (same guest addresses, other user addresses). The daemon stops the
// queues and must not start them over memory that does not hold them.
// Expect: refused; or accepted with the session still answering and the
// daemon alive (the queues then stay stopped).
void mem_table_drops_running_rings() {
    Device d = start_device();
    write_read_verify(d, 0, 0, 1);
    SharedRegion other(64 << 20, kGpaBase);
    Message m = mem_table({other.region()}, {other.fd.get()});
    m.flags |= kFlagNeedReply;
    need(d.ch().send(m), "SET_MEM_TABLE");
    auto reply = d.ch().receive();
    if (!reply) {
        check(reply.error().find("closed") != std::string::npos || reply.error().find("reset") != std::string::npos,
              "SET_MEM_TABLE: " + reply.error());
        note("refused: disconnected");
        return;
    }
    uint64_t ack = 1;
    if (reply->payload.size() == 8) std::memcpy(&ack, reply->payload.data(), 8);
    if (ack != 0) {
        note("refused: nack");
        return;
    }
    note("accepted: the queues must have stayed stopped");
    check(daemon_alive(), "the daemon died");
    expect_session_alive(d.ch(), "after SET_MEM_TABLE without the rings");
}

// 200 SET_MEM_TABLE in a row on one connection, each with a new 1 MiB
// memfd (legal: the table may be replaced). Each replaced table must be
// unmapped and its fd closed. Expect: all accepted, and no more mappings of
// guest memory (the test's memfds) than after the first. Only those are
// counted: the allocator's own mappings (TSan's among them) come and go.
void mem_table_replaced_many_times() {
    auto fe = connect_negotiated();
    int maps_after_first = -1;
    for (int i = 0; i < 200; i++) {
        SharedRegion r(1 << 20, kGpa);
        need(fe->channel().command(mem_table({r.region()}, {r.fd.get()})), "SET_MEM_TABLE " + std::to_string(i));
        if (i == 0) maps_after_first = daemon_map_count(kMemfdMapping);
    }
    const int maps = daemon_map_count(kMemfdMapping);
    note("daemon mappings of guest memory: " + std::to_string(maps_after_first) + " after the first table, " +
         std::to_string(maps) + " after 200");
    check(maps_after_first >= 1, "the daemon did not map the first table");
    check(maps <= maps_after_first, "the daemon keeps the mappings of replaced memory tables");
}

// ---------------------------------------------------------------- vrings

// SET_VRING_NUM of 0, 3 (not a power of 2) and 65536 (above 32768). Spec:
// the queue size is a power of 2 up to 32768. Expect: refused.
void vring_num_bad() {
    for (uint32_t num : {0u, 3u, 65536u}) {
        auto fe = connect_negotiated();
        expect_refused(fe->channel(), msg_state(Request::kSetVringNum, 0, num), "SET_VRING_NUM " + std::to_string(num));
    }
}

// Every SET_VRING_* for queue 7 of a 2-queue device (and SET_VRING_NUM for
// queue 2^32-1). Expect: refused.
void vring_index_out_of_range() {
    auto with_fd = [](Request r, uint64_t v, const Fd& fd) {
        Message m = msg_u64(r, v);
        m.fds = {fd.get()};
        return m;
    };
    Fd e = make_eventfd();
    const VringAddr addr{kBadQueue, 0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000, 0};
    std::vector<Message> bad = {
        msg_state(Request::kSetVringNum, kBadQueue, 64),
        msg_state(Request::kSetVringNum, 0xffffffff, 64),
        Message::with(Request::kSetVringAddr, addr),
        msg_state(Request::kSetVringBase, kBadQueue, 0),
        with_fd(Request::kSetVringKick, kBadQueue, e),
        with_fd(Request::kSetVringCall, kBadQueue, e),
        with_fd(Request::kSetVringErr, kBadQueue, e),
        msg_state(Request::kSetVringEnable, kBadQueue, 1),
    };
    for (Message& m : bad) {
        auto fe = connect_negotiated();
        expect_refused(fe->channel(), m, std::string(request_name(m.request)) + " for a queue that does not exist");
    }
}

// GET_VRING_BASE for queue 7, sent as QEMU sends it (without need_reply).
// Expect: the connection closed, and no vring state answered for it.
void get_vring_base_bad_index() {
    auto fe = connect_negotiated();
    need(fe->channel().send(msg_state(Request::kGetVringBase, kBadQueue, 0)), "send");
    expect_closed(fe->channel(), "GET_VRING_BASE for a queue that does not exist");
}

// The same with need_reply. Spec (REPLY_ACK): for a message that has a reply
// of its own, need_reply "brings no behavioural change": its reply is a vring
// state, never a u64 ack (a u64 1 reads as {index 1, num 0}: the base of
// queue 1). Expect: the connection closed without such a reply.
void get_vring_base_bad_index_need_reply() {
    auto fe = connect_negotiated();
    Message m = msg_state(Request::kGetVringBase, kBadQueue, 0);
    m.flags |= kFlagNeedReply;
    need(fe->channel().send(m), "send");
    auto reply = fe->channel().receive();
    if (!reply) {
        check(reply.error().find("closed") != std::string::npos || reply.error().find("reset") != std::string::npos,
              "GET_VRING_BASE for queue 7: " + reply.error());
        return;
    }
    VringState s{};
    if (reply->payload.size() == sizeof s) std::memcpy(&s, reply->payload.data(), sizeof s);
    fail("GET_VRING_BASE for queue 7 with need_reply: answered with " + std::to_string(reply->payload.size()) +
         " payload bytes, which a front end reads as the vring state {index " + std::to_string(s.index) +
         ", num " + std::to_string(s.num) + "}");
}

// SET_VRING_KICK with a pipe's read end and with a regular file,
// SET_VRING_CALL with a pipe's write end and with a regular file,
// SET_VRING_ERR with a pipe. Docs: kick, call and error fds must be
// eventfds (a queue's thread reading or writing a pipe could block).
// Expect: refused.
void vring_fd_not_eventfd() {
    struct Bad {
        Request r;
        const char* what;
        bool pipe_read_end;
        bool pipe;
    };
    const Bad bad[] = {{Request::kSetVringKick, "SET_VRING_KICK with a pipe", true, true},
                       {Request::kSetVringKick, "SET_VRING_KICK with a regular file", false, false},
                       {Request::kSetVringCall, "SET_VRING_CALL with a pipe", false, true},
                       {Request::kSetVringCall, "SET_VRING_CALL with a regular file", false, false},
                       {Request::kSetVringErr, "SET_VRING_ERR with a pipe", false, true}};
    for (const Bad& b : bad) {
        auto fe = connect_negotiated();
        auto [rd, wr] = make_pipe();
        Fd file = make_regular_file(4096);
        Message m = msg_u64(b.r, 0);
        m.fds = {b.pipe ? (b.pipe_read_end ? rd.get() : wr.get()) : file.get()};
        expect_refused(fe->channel(), m, b.what);
    }
}

// SET_VRING_KICK/CALL whose no-fd flag (bit 8) disagrees with the fds: the
// flag and an eventfd; neither; and SET_VRING_KICK with an unknown flag bit
// (9). Spec: bit 8 set means no fd is passed. Expect: refused.
void vring_fd_flag_mismatch() {
    Fd e = make_eventfd();
    struct Bad {
        Request r;
        uint64_t payload;
        bool fd;
        const char* what;
    };
    const Bad bad[] = {{Request::kSetVringKick, kVringNoFd, true, "SET_VRING_KICK with the no-fd flag and an fd"},
                       {Request::kSetVringKick, 0, false, "SET_VRING_KICK without the no-fd flag or an fd"},
                       {Request::kSetVringCall, kVringNoFd, true, "SET_VRING_CALL with the no-fd flag and an fd"},
                       {Request::kSetVringCall, 0, false, "SET_VRING_CALL without the no-fd flag or an fd"},
                       {Request::kSetVringKick, 1 << 9, true, "SET_VRING_KICK with flag bit 9"}};
    for (const Bad& b : bad) {
        auto fe = connect_negotiated();
        Message m = msg_u64(b.r, b.payload);
        if (b.fd) m.fds = {e.get()};
        expect_refused(fe->channel(), m, b.what);
    }
}

// SET_VRING_ADDR with the descriptor table just past the end of the only
// region, with the used ring straddling its end, and with a guest-physical
// address (what a confused front end sends) for the avail ring. Docs: ring
// addresses must be inside memory. Expect: refused (at ADDR, KICK or
// ENABLE).
void vring_addr_outside_memory() {
    for (int variant = 0; variant < 3; variant++) {
        auto fe = connect_negotiated();
        auto r = setup_until_addr(*fe);
        VringAddr a = ring_in(*r);
        const uint64_t end = reinterpret_cast<uint64_t>(r->host) + r->size;
        const char* what = "";
        if (variant == 0) a.desc_user_addr = end, what = "descriptor table past the end of memory";
        if (variant == 1) a.used_user_addr = end - 16, what = "used ring straddling the end of memory";
        if (variant == 2) a.avail_user_addr = kGpa, what = "avail ring at a guest-physical address";
        expect_ring_addr_refused(*fe, a, what);
    }
}

// SET_VRING_ADDR with the descriptor table at +8 (16 required), the avail
// ring at +1 (2) and the used ring at +2 (4). Spec (split ring): those are
// the alignments; docs: ring addresses must be aligned. Expect: refused.
void vring_addr_misaligned() {
    for (int variant = 0; variant < 3; variant++) {
        auto fe = connect_negotiated();
        auto r = setup_until_addr(*fe);
        VringAddr a = ring_in(*r);
        const char* what = "";
        if (variant == 0) a.desc_user_addr += 8, what = "descriptor table at +8";
        if (variant == 1) a.avail_user_addr += 1, what = "avail ring at +1";
        if (variant == 2) a.used_user_addr += 2, what = "used ring at +2";
        expect_ring_addr_refused(*fe, a, what);
    }
}

// A region whose user address is odd (user_addr = our mapping + 1): ring
// user addresses aligned as the spec asks land on misaligned pointers in the
// daemon's mapping, where the avail and used rings are accessed atomically.
// Docs (split_ring.cc): refused. Expect: refused (at ADDR, KICK or ENABLE).
void vring_misaligned_in_mapping() {
    auto fe = connect_negotiated();
    SharedRegion r(1 << 20, kGpa);
    MemRegion odd = r.region();
    odd.userspace_addr += 1;
    need(fe->channel().command(mem_table({odd}, {r.fd.get()})), "SET_MEM_TABLE");
    need(fe->channel().command(msg_state(Request::kSetVringNum, 0, 64)), "SET_VRING_NUM");
    need(fe->channel().command(msg_state(Request::kSetVringBase, 0, 0)), "SET_VRING_BASE");
    const uint64_t base = odd.userspace_addr + 4096 - 1;  // 4096-aligned as a user address, odd in the mapping
    expect_ring_addr_refused(*fe, VringAddr{0, 0, base, base + 2048, base + 1024, 0},
                             "rings aligned as user addresses, misaligned in the mapping");
}

// SET_VRING_BASE 65536: a split ring's index is 16 bits. Expect: refused.
void vring_base_too_big() {
    auto fe = connect_negotiated();
    expect_refused(fe->channel(), msg_state(Request::kSetVringBase, 0, 65536), "SET_VRING_BASE 65536");
}

// ---------------------------------------------------------------- config

// GET_CONFIG for bytes beyond the 256-byte config space: offset 200 size
// 60, offset 0 size 257, offset 256 size 1, offset 2^32-1 size 2 (wraps in
// 32 bits). Spec: the back end answers an error with an empty payload.
// Expect: each answered with 0 payload bytes; the session carries on, and a
// valid GET_CONFIG still works.
void get_config_out_of_range() {
    auto fe = connect_negotiated();
    const std::pair<uint32_t, uint32_t> bad[] = {{200, 60}, {0, 257}, {256, 1}, {0xffffffff, 2}};
    for (auto [offset, size] : bad) {
        const std::string what = "GET_CONFIG offset " + std::to_string(offset) + " size " + std::to_string(size);
        auto reply = need(fe->channel().call(msg_raw(uint32_t(Request::kGetConfig), config_request(offset, size, size)),
                                             SIZE_MAX),
                          what);
        check(reply.payload.empty(), what + ": answered " + std::to_string(reply.payload.size()) +
                                         " payload bytes (an empty payload is the error reply)");
    }
    auto good = need(fe->channel().call(msg_raw(uint32_t(Request::kGetConfig), config_request(0, 60, 60)), 72),
                     "a valid GET_CONFIG after the bad ones");
    (void)good;
    expect_session_alive(fe->channel(), "after GET_CONFIG errors");
}

// GET_CONFIG whose header says 60 config bytes but whose payload carries 8
// (as QEMU sends it: without need_reply). Docs: every payload's size must
// match its type. Expect: the connection closed.
void get_config_size_mismatch() {
    auto fe = connect_negotiated();
    need(fe->channel().send(msg_raw(uint32_t(Request::kGetConfig), config_request(0, 60, 8))), "send");
    expect_closed(fe->channel(), "GET_CONFIG with a short payload");
}

// SET_CONFIG of the writeback byte with need_reply: the config space is
// read-only unless the driver negotiated CONFIG_WCE, which this front end
// does not. Expect: refused; if with a nack, the session carries on.
void set_config_refused() {
    auto fe = connect_negotiated();
    std::vector<uint8_t> p = config_request(32, 1, 1);
    if (expect_refused(fe->channel(), msg_raw(uint32_t(Request::kSetConfig), p), "SET_CONFIG") == Refusal::nacked)
        expect_session_alive(fe->channel(), "after SET_CONFIG");
}

// SET_CONFIG with CONFIG_WCE negotiated (as QEMU does when the guest writes
// its cache mode): only the writeback byte, 0 or 1, may be written. Expect:
// the capacity, two bytes at writeback and the value 2 refused, the session
// going on; 0 and 1 accepted, GET_CONFIG reporting each, and the daemon
// logging the switch to writethrough. The mode outlives the session (QEMU
// keeps the config it read across a reconnect): a new front end reads 0.
void set_config_writeback() {
    auto fe = connect_negotiated(2, /*config_wce=*/true);
    check(fe->negotiation().has(kBlkFConfigWce), "CONFIG_WCE was not offered");
    auto set = [](uint32_t offset, std::vector<uint8_t> bytes) {
        std::vector<uint8_t> p = config_request(offset, uint32_t(bytes.size()), bytes.size());
        std::copy(bytes.begin(), bytes.end(), p.begin() + sizeof(ConfigHeader));
        return msg_raw(uint32_t(Request::kSetConfig), p);
    };
    auto writeback = [&fe] {
        auto reply = need(fe->channel().call(msg_raw(uint32_t(Request::kGetConfig), config_request(32, 1, 1)), SIZE_MAX),
                          "GET_CONFIG of writeback");
        need(reply.payload.size() == sizeof(ConfigHeader) + 1 ? std::expected<void, std::string>{}
                                                               : std::unexpected("GET_CONFIG: short reply"),
             "GET_CONFIG of writeback");
        return reply.payload.back();
    };
    check(writeback() == 1, "writeback is not 1 after negotiation (FLUSH negotiated)");
    const uint64_t log_start = log_size();
    const std::pair<std::string, Message> bad[] = {
        {"SET_CONFIG of the capacity", set(0, {1, 2, 3, 4, 5, 6, 7, 8})},
        {"SET_CONFIG of two bytes at writeback", set(32, {0, 0})},
        {"SET_CONFIG of writeback = 2", set(32, {2})},
    };
    for (const auto& [what, m] : bad)
        if (expect_refused(fe->channel(), m, what) == Refusal::disconnected)
            fail(what + ": the daemon closed the session");
    check(writeback() == 1, "a refused SET_CONFIG changed writeback");
    need(fe->channel().command(set(32, {0})), "SET_CONFIG of writeback = 0");
    check(writeback() == 0, "writeback does not read 0 after the driver set it");
    check(log_has_since(log_start, "chose a writethrough cache"), "the daemon did not switch to writethrough");
    fe.reset();
    fe = connect_negotiated(2, /*config_wce=*/true);
    check(writeback() == 0, "a new front end does not read the cache mode the last one chose");
    need(fe->channel().command(set(32, {1})), "SET_CONFIG of writeback = 1");
    check(writeback() == 1, "writeback does not read 1 after the driver set it back");
    expect_session_alive(fe->channel(), "after SET_CONFIG");
}

// ---------------------------------------------------------------- requests the device does not know

// Request codes 200 and 0 (no such message) with need_reply, and the known
// but not offered SET_LOG_BASE (6, with a memfd), SET_LOG_FD (7, with an
// eventfd), ADD_MEM_REG (37, with a memfd), SET_STATUS (39). Spec
// (REPLY_ACK): the reply is non-zero on failure. Expect: a non-zero ack (or
// the connection closed); after a nack the session carries on.
void unknown_request_need_reply() {
    Fd memfd = make_memfd(1 << 20), efd = make_eventfd();
    struct Bad {
        uint32_t request;
        size_t size;
        int fd;
    };
    const Bad bad[] = {{200, 0, -1}, {0, 0, -1}, {6, 16, memfd.get()}, {7, 0, efd.get()}, {37, 40, memfd.get()},
                       {39, 8, -1}};
    for (const Bad& b : bad) {
        auto fe = connect_negotiated();
        Message m = msg_raw(b.request, std::vector<uint8_t>(b.size));
        if (b.fd >= 0) m.fds = {b.fd};
        const std::string what = "request " + std::to_string(b.request) + " with need_reply";
        if (expect_refused(fe->channel(), m, what) == Refusal::nacked) expect_session_alive(fe->channel(), what);
    }
}

// Request 200 without need_reply. Expect: no reply at all (the next message
// read is GET_FEATURES' answer), the session carries on.
void unknown_request_no_reply() {
    auto fe = connect_negotiated();
    need(fe->channel().send(msg_raw(200, {})), "send");
    expect_session_alive(fe->channel(), "after request 200 without need_reply");
}

// ---------------------------------------------------------------- file descriptors

// SET_VRING_CALL with 9 eventfds: more than the 8 a message may carry.
// Docs: more than 8 with one message ends the session. Expect: the
// connection closed, and none of the fds kept (the runner checks the
// daemon's fd count afterwards).
void too_many_fds() {
    auto fe = connect_negotiated();
    std::vector<Fd> efds;
    Message m = msg_u64(Request::kSetVringCall, 0);
    for (int i = 0; i < 9; i++) {
        efds.push_back(make_eventfd());
        m.fds.push_back(efds.back().get());
    }
    m.flags |= kFlagNeedReply;
    need(fe->channel().send(m), "send");
    expect_closed(fe->channel(), "SET_VRING_CALL with 9 fds");
}

// SET_OWNER (which takes no fd) whose 12 header bytes come in 12 sendmsg
// calls, each carrying 8 eventfds: 96 fds with one message, never more than
// 8 per recvmsg. Docs: more than 8 with one message ends the session.
// Expect: refused.
void fds_over_header_pieces() {
    auto fe = connect_negotiated();
    std::vector<Fd> efds;
    std::vector<int> fds;
    for (int i = 0; i < 8; i++) {
        efds.push_back(make_eventfd());
        fds.push_back(efds.back().get());
    }
    const MsgHeader h{uint32_t(Request::kSetOwner), kVersion | kFlagNeedReply, 0};
    for (size_t i = 0; i < sizeof h; i++) send_with_fds(fe->channel().fd(), reinterpret_cast<const uint8_t*>(&h) + i, 1, fds);
    auto reply = fe->channel().receive();
    if (!reply) {
        check(reply.error().find("closed") != std::string::npos || reply.error().find("reset") != std::string::npos,
              "SET_OWNER with 96 fds: " + reply.error());
        return;
    }
    uint64_t ack = 0;
    if (reply->payload.size() == 8) std::memcpy(&ack, reply->payload.data(), 8);
    check(ack != 0, "SET_OWNER with 96 fds over 12 pieces of its header: accepted (ack 0)");
}

// SET_OWNER with one eventfd attached: it takes none. Docs: file
// descriptors must come with the messages that carry them, in the right
// number. Expect: refused.
void fd_on_message_without_fds() {
    auto fe = connect_negotiated();
    Fd e = make_eventfd();
    Message m = Message::empty(Request::kSetOwner);
    m.fds = {e.get()};
    expect_refused(fe->channel(), m, "SET_OWNER with an fd");
}

// SET_VRING_CALL whose header comes alone and whose payload comes in a
// second sendmsg carrying the eventfd. Spec: fds come with the message
// header. Expect: refused (the message has no fd and no no-fd flag), and
// the stray fd not kept.
void fd_with_payload_not_header() {
    auto fe = connect_negotiated();
    Fd e = make_eventfd();
    const MsgHeader h{uint32_t(Request::kSetVringCall), kVersion | kFlagNeedReply, 8};
    send_with_fds(fe->channel().fd(), &h, sizeof h, {});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const uint64_t index = 0;
    send_with_fds(fe->channel().fd(), &index, sizeof index, {e.get()});
    auto reply = fe->channel().receive();
    if (!reply) {
        check(reply.error().find("closed") != std::string::npos || reply.error().find("reset") != std::string::npos,
              "SET_VRING_CALL: " + reply.error());
        return;
    }
    uint64_t ack = 0;
    if (reply->payload.size() == 8) std::memcpy(&ack, reply->payload.data(), 8);
    check(ack != 0, "SET_VRING_CALL with its fd on the payload: accepted (ack 0)");
}

// ---------------------------------------------------------------- flood

// 10,000 SET_OWNER messages (no need_reply) in one burst, then GET_FEATURES.
// Expect: the daemon keeps up (GET_FEATURES answered within 5 s of the
// last byte sent) and its resident memory grows by less than 16 MiB.
void set_owner_flood() {
    auto fe = connect_negotiated();
    const uint64_t rss_before = daemon_rss_kib();
    std::vector<uint8_t> burst;
    const MsgHeader h{uint32_t(Request::kSetOwner), kVersion, 0};
    for (int i = 0; i < 10000; i++)
        burst.insert(burst.end(), reinterpret_cast<const uint8_t*>(&h), reinterpret_cast<const uint8_t*>(&h) + sizeof h);
    const auto t0 = std::chrono::steady_clock::now();
    send_bytes(fe->channel().fd(), burst.data(), burst.size());
    expect_session_alive(fe->channel(), "after 10,000 SET_OWNER");
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t rss_after = daemon_rss_kib();
    note("10,000 SET_OWNER handled in " + std::to_string(ms) + " ms; daemon RSS " + std::to_string(rss_before) +
         " -> " + std::to_string(rss_after) + " KiB");
    check(rss_after < rss_before + 16 * 1024, "the daemon's memory grew by more than 16 MiB");
}

// 200,000 GET_FEATURES as fast as the daemon takes them, none of the
// replies read: once our receive buffer is full, the daemon cannot send and
// stops reading. Its main loop must not block on us: a second front end
// connecting meanwhile is still turned away at once. Then we close without
// reading. Expect: the second connection closed within 5 s; the daemon ends
// the session (the good client after this case is served).
void replies_not_read() {
    auto fe = connect_negotiated();
    const int fd = fe->channel().fd();
    const MsgHeader h{uint32_t(Request::kGetFeatures), kVersion, 0};
    std::vector<uint8_t> burst;
    for (int i = 0; i < 1000; i++)
        burst.insert(burst.end(), reinterpret_cast<const uint8_t*>(&h), reinterpret_cast<const uint8_t*>(&h) + sizeof h);
    size_t sent = 0;
    auto stalled_since = std::chrono::steady_clock::now();
    while (sent < 200 * burst.size() && std::chrono::steady_clock::now() - stalled_since < std::chrono::milliseconds(300)) {
        const ssize_t n = ::send(fd, burst.data() + sent % burst.size(), burst.size() - sent % burst.size(),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += size_t(n);
            stalled_since = std::chrono::steady_clock::now();
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    note(std::to_string(sent / sizeof h) + " GET_FEATURES sent before the daemon stopped reading");
    auto second = need(Channel::connect(env().socket), "second connection");
    second.set_timeout(kTimeout);
    expect_closed(second, "a second front end while the daemon cannot send to the first");
    check(daemon_alive(), "the daemon died");
}

}  // namespace

std::vector<Case> message_cases() {
    return {
        {"bad_version", bad_version},
        {"reply_flag", reply_flag},
        {"oversized_payload", oversized_payload},
        {"truncated_header", truncated_header},
        {"header_in_pieces", header_in_pieces},
        {"truncated_payload", truncated_payload},
        {"payload_size_mismatch", payload_size_mismatch},
        {"set_features_not_offered", set_features_not_offered},
        {"set_protocol_features_unknown", set_protocol_features_unknown},
        {"mem_table_empty", mem_table_empty},
        {"mem_table_nine_regions", mem_table_nine_regions},
        {"mem_table_fd_count_mismatch", mem_table_fd_count_mismatch},
        {"mem_table_past_end_of_file", mem_table_past_end_of_file},
        {"mem_table_overlap", mem_table_overlap},
        {"mem_table_wraps", mem_table_wraps},
        {"mem_table_unmappable_fd", mem_table_unmappable_fd},
        {"mem_table_drops_running_rings", mem_table_drops_running_rings},
        {"mem_table_replaced_many_times", mem_table_replaced_many_times},
        {"vring_num_bad", vring_num_bad},
        {"vring_index_out_of_range", vring_index_out_of_range},
        {"get_vring_base_bad_index", get_vring_base_bad_index},
        {"get_vring_base_bad_index_need_reply", get_vring_base_bad_index_need_reply},
        {"vring_fd_not_eventfd", vring_fd_not_eventfd},
        {"vring_fd_flag_mismatch", vring_fd_flag_mismatch},
        {"vring_addr_outside_memory", vring_addr_outside_memory},
        {"vring_addr_misaligned", vring_addr_misaligned},
        {"vring_misaligned_in_mapping", vring_misaligned_in_mapping},
        {"vring_base_too_big", vring_base_too_big},
        {"get_config_out_of_range", get_config_out_of_range},
        {"get_config_size_mismatch", get_config_size_mismatch},
        {"set_config_refused", set_config_refused},
        {"set_config_writeback", set_config_writeback},
        {"unknown_request_need_reply", unknown_request_need_reply},
        {"unknown_request_no_reply", unknown_request_no_reply},
        {"too_many_fds", too_many_fds},
        {"fds_over_header_pieces", fds_over_header_pieces},
        {"fd_on_message_without_fds", fd_on_message_without_fds},
        {"fd_with_payload_not_header", fd_with_payload_not_header},
        {"set_owner_flood", set_owner_flood},
        {"replies_not_read", replies_not_read},
    };
}

}  // namespace vubbad
