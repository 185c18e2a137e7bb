// The harness of vhost_user_bad_input: a front end that misbehaves on
// purpose, built on the ioplane-vublk front-end library (tools/vublk), and
// the expectations every case checks (docs/VHOST-USER-BLK.md, "The front end
// is untrusted"):
//   - a malformed message is refused: the daemon answers a non-zero ack
//     (REPLY_ACK) or closes the connection; it never accepts it (ack 0) and
//     never leaves us waiting (every wait has a 5 s limit);
//   - a ring that breaks the rules stops its queue: no used element for the
//     bad chain, "broke the ring" in the daemon's log, the queue's error
//     eventfd signalled; GET_VRING_BASE and a new setup restart it;
//   - a request the device can parse but not serve completes with IOERR or
//     UNSUPP in its status byte, and the queue keeps working.
// A failed expectation throws Failure; the runner (main.cc) reports it.
//
// Thread contract: one thread (the runner's).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blk_request.h"
#include "frontend.h"

namespace vubbad {

using namespace ioplane::vublk;

// How long the daemon may take to answer, close, complete or signal.
inline constexpr std::chrono::milliseconds kTimeout{5000};

// What the command line says about the daemon under test.
struct Env {
    std::string socket;
    pid_t daemon_pid = 0;  // 0: no checks of the process (alive, fds, memory)
    std::string log_path;  // "": no checks of its log
};
Env& env();

struct Failure {
    std::string what;
};
[[noreturn]] void fail(const std::string& what);
inline void check(bool ok, const std::string& what) {
    if (!ok) fail(what);
}
template <class T>
T need(std::expected<T, std::string> r, const std::string& what) {
    if (!r) fail(what + ": " + r.error());
    return std::move(*r);
}
inline void need(std::expected<void, std::string> r, const std::string& what) {
    if (!r) fail(what + ": " + r.error());
}
// Prints an indented note under the current case.
void note(const std::string& text);

// ---- file descriptors ----

// An fd closed on destruction.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept;
    ~Fd();
    int get() const { return fd_; }
    int release() { int f = fd_; fd_ = -1; return f; }

private:
    int fd_ = -1;
};
Fd make_eventfd();
// A memfd of `size` bytes, named kMemfdName: its mappings in the daemon are
// the /proc/PID/maps lines that contain kMemfdMapping.
inline constexpr char kMemfdName[] = "vhost-bad-input";
inline constexpr char kMemfdMapping[] = "/memfd:vhost-bad-input (deleted)";
Fd make_memfd(uint64_t size);
// The two ends of a pipe: [0] read, [1] write.
std::pair<Fd, Fd> make_pipe();
// A regular file (unlinked, in /tmp) of `size` bytes.
Fd make_regular_file(uint64_t size);

// ---- the daemon process ----

bool daemon_alive();
// Open fds of the daemon (/proc/PID/fd), or -1 without a pid.
int daemon_fd_count();
// Memory mappings of the daemon (/proc/PID/maps lines), or -1 without a pid;
// with `containing`, only the lines that contain it (e.g. a memfd's name).
int daemon_map_count(std::string_view containing = {});
// Resident memory of the daemon in KiB (VmRSS), or 0 without a pid.
uint64_t daemon_rss_kib();
// The daemon's log: where it ends now, and whether `text` appeared after
// `offset` within the timeout (true without a log to look at).
uint64_t log_size();
bool log_has_since(uint64_t offset, const std::string& text);
// The first log line after `offset` that contains `text` (waiting as
// log_has_since does), or "" without one.
std::string log_line_since(uint64_t offset, const std::string& text);

// ---- connections and messages ----

// A connection the daemon serves: connected, and GET_FEATURES answered. The
// export serves one front end at a time and closes a connection made while
// it still ends the previous session: retried for up to 5 s.
// With `inflight`, also INFLIGHT_SHMFD (start() shares the in-flight area).
std::unique_ptr<Frontend> connect_served(uint16_t queues = 2, bool config_wce = false, bool inflight = false);
// connect_served(), then the library's negotiation (REPLY_ACK, CONFIG, MQ,
// RESET_DEVICE; SET_OWNER; GET_CONFIG; SET_FEATURES).
// With `config_wce`, also CONFIG_WCE (the config's writeback byte writable).
std::unique_ptr<Frontend> connect_negotiated(uint16_t queues = 2, bool config_wce = false);

Message msg_u64(Request r, uint64_t value);
Message msg_state(Request r, uint32_t index, uint32_t num);
Message msg_raw(uint32_t request, std::vector<uint8_t> payload);
// Bytes straight onto the socket (no framing), ignoring a closed peer.
void send_bytes(int fd, const void* data, size_t len);

// What the daemon did with a message.
enum class Refusal { nacked, disconnected };
const char* refusal_name(Refusal r);
// Sends `m` with need_reply; the daemon must refuse it: a reply to it with a
// non-zero u64, or the connection closed. An ack of 0 fails ("accepted"),
// silence fails ("no answer").
Refusal expect_refused(Channel& ch, Message m, const std::string& what);
// Sends `seq` in order, each with need_reply: acks of 0 are fine until one
// is refused, which must happen (the daemon may only notice a bad setup
// when the queue starts).
void expect_refused_in(Channel& ch, std::vector<Message> seq, const std::string& what);
// The daemon must close the connection; replies to need_reply messages that
// carry a non-zero u64 may come first, anything else fails.
void expect_closed(Channel& ch, const std::string& what);
// The session still answers (a GET_FEATURES round trip), and nothing else
// was queued before the answer.
void expect_session_alive(Channel& ch, const std::string& what);

// Memory shared with the daemon outside the library's GuestMemory: a memfd
// mapped here, described by a region at `gpa`.
struct SharedRegion {
    Fd fd;
    uint8_t* host = nullptr;
    uint64_t size = 0;
    uint64_t gpa = 0;
    SharedRegion(uint64_t size, uint64_t gpa);
    SharedRegion(SharedRegion&&) = delete;
    ~SharedRegion();
    MemRegion region() const { return {gpa, size, reinterpret_cast<uint64_t>(host), 0}; }
};
// SET_MEM_TABLE with these regions (num_regions = regions.size() unless
// `count` says otherwise) and fds.
Message mem_table(const std::vector<MemRegion>& regions, const std::vector<int>& fds, int count = -1);

// ---- a started device ----

struct DeviceOptions {
    uint16_t queues = 2;
    uint16_t queue_size = 64;
    uint64_t mem_size = 64ull << 20;
    bool indirect = true;
    bool inflight = false;  // INFLIGHT_SHMFD, the area shared before the queues start
};

// A device set up through the library: negotiated, memory shared, queues
// started and enabled, an error eventfd on every queue (SET_VRING_ERR), and
// one request slot (64 KiB of data) per queue.
struct Device {
    std::unique_ptr<Frontend> fe;
    std::vector<Fd> err;
    std::vector<BlkSlot> slots;
    uint64_t capacity = 0;  // bytes
    bool indirect = false;
    Queue& q(unsigned i) { return fe->queue(i); }
    Virtqueue& vq(unsigned i) { return fe->queue(i).vq; }
    Channel& ch() { return fe->channel(); }
    GuestMemory& mem() { return fe->memory(); }
    GuestBuffer alloc(uint64_t size, uint64_t align = 16);
};
Device start_device(const DeviceOptions& o = {});

struct Completion1 {
    uint32_t id;
    uint32_t len;
};
// Waits for the next used element of queue `qi` (polling the used ring).
Completion1 wait_used(Device& d, unsigned qi, const std::string& what);
// One well-formed request through the library's normal path (an indirect
// table when negotiated) on queue `qi`, waited for; returns its status.
uint8_t run_request(Device& d, unsigned qi, const BlkRequest& r, const std::string& what);
uint8_t run_request(Device& d, unsigned qi, BlkSlot& slot, const BlkRequest& r, const std::string& what);
// Writes 8 KiB (two data descriptors) at `sector` on queue `qi`, reads them
// back and checks every sector's pattern.
void write_read_verify(Device& d, unsigned qi, uint64_t sector, uint32_t generation);

// ---- hand-made chains ----

// A descriptor of a hand-made chain; `next` is the position in the list of
// the descriptor it links to (used only with kDescFNext).
struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next = 0;
};
// Writes `descs` into descriptors taken off the queue's free list, links
// them as their `next` positions say, and puts the first in the avail ring
// (published by publish_and_kick). Returns the head.
uint16_t put_chain(Device& d, unsigned qi, const std::vector<RawDesc>& descs);
void publish_and_kick(Device& d, unsigned qi);

// A request's pieces in guest memory: header (type, sector), data, status
// byte (0xff until the device writes it).
struct ReqBufs {
    GuestBuffer header, data, status;
};
ReqBufs make_request(Device& d, uint32_t type, uint64_t sector, uint32_t data_len);

// Where a queue was before a case broke it.
struct RingMark {
    uint16_t avail;
    uint16_t used;
    uint64_t log_offset;
};
RingMark mark(Device& d, unsigned qi);

// The daemon must have stopped queue `qi`: its error eventfd becomes
// readable, the log says "broke the ring", and no used element appears
// beyond `extra_used` (elements of good requests made available with the bad
// chain). The other queues keep working meanwhile. Then GET_VRING_BASE, the
// avail index put back to `m.avail` and a new setup (SET_VRING_BASE, ADDR,
// KICK, ENABLE) must give a working queue.
void expect_broken_then_recover(Device& d, unsigned qi, const RingMark& m, unsigned extra_used = 0);
// Stops queue `qi` with GET_VRING_BASE and starts it again at `base`.
void restart_queue(Device& d, unsigned qi, uint16_t base);
// The messages that start stopped queue `qi` again at `base`: SET_VRING_BASE,
// ADDR, KICK (its kick eventfd), ENABLE.
std::vector<Message> queue_setup(Device& d, unsigned qi, uint16_t base);
// The chain at `head` completes with status `want` in `status` (and used
// len at most `max_len`), and the queue still serves a write and a read.
void expect_status(Device& d, unsigned qi, uint16_t head, const GuestBuffer& status, uint8_t want,
                   uint32_t max_len, const std::string& what);

}  // namespace vubbad
