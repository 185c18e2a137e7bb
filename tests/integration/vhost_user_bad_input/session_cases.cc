// Connections (docs/VHOST-USER-BLK.md, "Disconnect and reconnect"): a front
// end that goes away with requests in flight, one that stops its rings with
// requests in flight, a second front end while one is served, and the good
// client every other case is followed by.
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "cases.h"
#include "harness.h"
#include "pattern.h"

namespace vubbad {

namespace {

constexpr uint32_t kSeed = 0xbad2;
constexpr uint32_t kBlock = 4096;

// `n` request slots of one block each.
std::vector<BlkSlot> make_slots(Device& d, unsigned n) {
    std::vector<BlkSlot> s;
    for (unsigned i = 0; i < n; i++) s.push_back(need(BlkSlot::allocate(d.mem(), kBlock), "request slot"));
    return s;
}

// Puts a write of `block` (generation `gen`) from `slot` on queue `qi`,
// without publishing; returns its head.
uint16_t submit_write(Device& d, unsigned qi, BlkSlot& slot, uint64_t block, uint32_t gen) {
    const uint64_t sector = block * (kBlock / kSectorSize);
    fill_pattern({slot.data(), kBlock}, sector * kSectorSize, gen, kSeed);
    auto segs = need(slot.prepare({.op = BlkOp::kWrite, .sector = sector, .bytes = kBlock}), "prepare");
    Virtqueue& vq = d.vq(qi);
    const uint16_t head =
        d.indirect ? need(vq.add_indirect(segs, slot.indirect()), "add_indirect") : need(vq.add_chain(segs), "add_chain");
    vq.make_available(head);
    return head;
}

// Writes `block` (generation `gen`) from `slot` on queue `qi` and waits.
void write_block(Device& d, unsigned qi, BlkSlot& slot, uint64_t block, uint32_t gen) {
    const uint64_t sector = block * (kBlock / kSectorSize);
    fill_pattern({slot.data(), kBlock}, sector * kSectorSize, gen, kSeed);
    const uint8_t st = run_request(d, qi, slot, {.op = BlkOp::kWrite, .sector = sector, .bytes = kBlock}, "write");
    check(st == kBlkSOk, "write of block " + std::to_string(block) + ": status " + status_name(st));
}

// A write of block `first + i` from slot i for every slot.
void submit_writes(Device& d, unsigned qi, std::vector<BlkSlot>& slots, uint64_t first, uint32_t gen) {
    for (size_t i = 0; i < slots.size(); i++) submit_write(d, qi, slots[i], first + i, gen);
}

// Blocks [first, first + n) on queue 0: every 512-byte sector must hold
// generation `a` or `b` (a write cut short may leave a block part old, part
// new, but no sector holds anything else).
void check_blocks(Device& d, uint64_t first, unsigned n, uint32_t a, uint32_t b) {
    BlkSlot& slot = d.slots[0];
    for (unsigned i = 0; i < n; i++) {
        const uint64_t sector = (first + i) * (kBlock / kSectorSize);
        const uint8_t st = run_request(d, 0, {.op = BlkOp::kRead, .sector = sector, .bytes = kBlock}, "read back");
        check(st == kBlkSOk, "read back: status " + status_name(st));
        for (uint32_t s = 0; s < kBlock / kSectorSize; s++) {
            const std::span<const uint8_t> sec(slot.data() + s * kSectorSize, kSectorSize);
            const uint64_t off = (sector + s) * kSectorSize;
            if (check_pattern(sec, off, a, kSeed) && check_pattern(sec, off, b, kSeed))
                fail("sector " + std::to_string(sector + s) + ": " + *check_pattern(sec, off, b, kSeed) +
                     " (nor generation " + std::to_string(a) + ")");
        }
    }
}

// 64 writes at iodepth 64 on each of the two queues (queues of 128),
// published and kicked, then the connection closed at once and our memory
// unmapped. Docs: the session stops every queue, waits for the requests
// already popped, unmaps the memory and serves the next front end. Expect:
// the daemon survives; the next front end works, and each of the 128 blocks
// holds, sector by sector, the data from before or that of the write.
void inflight_disconnect() {
    constexpr unsigned kDepth = 64;
    const uint64_t first[2] = {8192, 8192 + kDepth};
    {
        Device d = start_device({.queue_size = 128});
        for (unsigned q = 0; q < 2; q++) {
            auto slots = make_slots(d, kDepth);
            for (unsigned i = 0; i < kDepth; i++) write_block(d, q, slots[i], first[q] + i, 1);  // one at a time
        }
        std::vector<BlkSlot> slots[2] = {make_slots(d, kDepth), make_slots(d, kDepth)};
        for (unsigned q = 0; q < 2; q++) submit_writes(d, q, slots[q], first[q], 2);
        for (unsigned q = 0; q < 2; q++) publish_and_kick(d, q);
        ::shutdown(d.ch().fd(), SHUT_RDWR);
    }  // the Frontend closes the socket, the eventfds, and unmaps the memory
    Device d = start_device();
    check_blocks(d, first[0], 2 * kDepth, 1, 2);
    need(d.fe->stop(), "stop");
}

// 64 writes on each queue made available, then at once GET_VRING_BASE on
// each queue and RESET_DEVICE (Frontend::stop), as a VMM does on a guest
// reset. Spec: GET_VRING_BASE stops the ring after the in-flight requests;
// docs: it waits for them. Expect: the base answered is our avail index
// (every request taken), all 64 used elements are there with status OK.
void stop_with_requests_in_flight() {
    constexpr unsigned kDepth = 64;
    Device d = start_device({.queue_size = 128});
    std::vector<BlkSlot> slots[2] = {make_slots(d, kDepth), make_slots(d, kDepth)};
    for (unsigned q = 0; q < 2; q++) submit_writes(d, q, slots[q], 16384 + q * kDepth, 5);
    for (unsigned q = 0; q < 2; q++) publish_and_kick(d, q);
    need(d.fe->stop(), "GET_VRING_BASE with 64 requests in flight per queue");
    for (unsigned q = 0; q < 2; q++) {
        check(d.vq(q).raw_used_idx() == d.vq(q).avail_idx(),
              "queue " + std::to_string(q) + ": used idx " + std::to_string(d.vq(q).raw_used_idx()) +
                  " after GET_VRING_BASE, avail idx " + std::to_string(d.vq(q).avail_idx()));
        for (unsigned i = 0; i < kDepth; i++) (void)need(d.vq(q).next_used(), "used element");
        for (unsigned i = 0; i < kDepth; i++)
            check(slots[q][i].status() == kBlkSOk, "write " + std::to_string(i) + " on queue " + std::to_string(q) +
                                                       ": status " + status_name(slots[q][i].status()));
    }
}

// The queue's region of the in-flight area, written as a killed back end
// would have left it (vhost-user.rst "Inflight I/O tracking", split rings).
struct InflightRegion {
    uint8_t* base;
    template <class T>
    void set(size_t offset, T v) {
        std::memcpy(base + offset, &v, sizeof v);
    }
    template <class T>
    T get(size_t offset) const {
        T v;
        std::memcpy(&v, base + offset, sizeof v);
        return v;
    }
    uint16_t version() const { return get<uint16_t>(8); }
    void set_desc_num(uint16_t n) { set<uint16_t>(10, n); }
    void set_last_batch_head(uint16_t h) { set<uint16_t>(12, h); }
    uint16_t used_idx() const { return get<uint16_t>(14); }
    void mark(uint16_t head, uint64_t counter) {  // DescStateSplit: inflight, padding, next, counter
        set<uint8_t>(16 + 16 * size_t(head), 1);
        set<uint64_t>(16 + 16 * size_t(head) + 8, counter);
    }
};

// Stops queue 0 with GET_VRING_BASE; returns the used index it stopped at.
uint16_t stop_queue0(Device& d) {
    auto reply = need(d.ch().call(msg_state(Request::kGetVringBase, 0, 0), sizeof(VringState)), "GET_VRING_BASE");
    VringState stopped;
    std::memcpy(&stopped, reply.payload.data(), sizeof stopped);
    const uint16_t used = d.vq(0).raw_used_idx();
    check(stopped.num == used, "stopped at avail index " + std::to_string(stopped.num) + ", used index " +
                                   std::to_string(used));
    return used;
}

// Queue 0 stopped with GET_VRING_BASE; then, by hand, the state of a back
// end killed while it served two writes A and B, taken in that order: B
// completed (its used element and used->idx written; killed before its flag
// was cleared), A still in flight. QEMU restarts a ring at the used index
// (it got no GET_VRING_BASE answer): SET_VRING_BASE = used idx. Docs
// (VHOST-USER-BLK.md, "In-flight tracking"): the daemon finishes B's
// bookkeeping, resubmits A, and resumes the avail ring after both. Without
// tracking it would run B again and never A. Expect: exactly one more used
// element, A's; A's data on disk; B's never written (we only said it
// completed); the log counts one request resubmitted; the queue works on.
void inflight_resubmit() {
    constexpr uint64_t kBlockA = 24576, kBlockB = 24577;
    Device d = start_device({.queues = 1, .inflight = true});
    check(d.fe->inflight_area() != nullptr, "no in-flight area");
    InflightRegion region{d.fe->inflight_area()};
    check(region.version() == 1,
          "the daemon did not initialize its region (version " + std::to_string(region.version()) + ")");
    std::vector<BlkSlot> slots = make_slots(d, 2);
    write_block(d, 0, slots[0], kBlockA, 1);
    write_block(d, 0, slots[1], kBlockB, 1);
    const uint16_t used = stop_queue0(d);
    check(region.used_idx() == used, "the region's used index is not the ring's");

    const uint16_t head_a = submit_write(d, 0, slots[0], kBlockA, 2);
    const uint16_t head_b = submit_write(d, 0, slots[1], kBlockB, 2);
    Virtqueue& vq = d.vq(0);
    (void)vq.publish();  // no kick: the queue is stopped
    // The killed back end's traces: B's used element, both heads marked.
    auto* used_ring = static_cast<uint8_t*>(const_cast<void*>(vq.used_host()));
    const uint32_t elem[2] = {head_b, 0};
    std::memcpy(used_ring + 4 + 8 * (used % vq.size()), elem, sizeof elem);
    const uint16_t used_after_b = uint16_t(used + 1);
    std::memcpy(used_ring + 2, &used_after_b, sizeof used_after_b);
    region.mark(head_b, 999);
    region.mark(head_a, 1000);
    region.set_last_batch_head(head_b);

    const uint64_t log_offset = log_size();
    for (Message& m : queue_setup(d, 0, used_after_b)) need(d.ch().command(std::move(m)), "queue setup");
    const Completion1 b = wait_used(d, 0, "B, as the killed back end left it");
    check(b.id == head_b, "the first used element is not B's");
    const Completion1 a = wait_used(d, 0, "A, resubmitted");
    check(a.id == head_a, "the daemon completed head " + std::to_string(a.id) + ", not A's (" +
                              std::to_string(head_a) + ")");
    check(slots[0].status() == kBlkSOk, "A: status " + status_name(slots[0].status()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    check(vq.raw_used_idx() == uint16_t(used + 2),
          "used index " + std::to_string(vq.raw_used_idx()) + " (expected " + std::to_string(used + 2) + ")");
    check(log_has_since(log_offset, "left 1 requests in flight"), "the log does not say A was resubmitted");
    check_blocks(d, kBlockA, 1, 2, 2);
    check_blocks(d, kBlockB, 1, 1, 1);
    write_read_verify(d, 0, (kBlockB + 1) * 8, 3);
    need(d.fe->stop(), "stop");
}

// In-flight areas a front end cannot give: GET_INFLIGHT_FD without the
// protocol feature; SET_INFLIGHT_FD with an area too small for its
// description, a file smaller than the area, more queues than the device
// has, queues of no descriptors, an offset that is not page-aligned; and a
// region that claims another descriptor count than the queue's, found when
// the queue starts again. Expect: each refused (nack or disconnect), the
// daemon alive.
void inflight_bad_area() {
    {
        auto fe = connect_negotiated(2);  // INFLIGHT_SHMFD not taken
        expect_refused(fe->channel(), Message::with(Request::kGetInflightFd, InflightDescription{0, 0, 2, 64, 0}),
                       "GET_INFLIGHT_FD without INFLIGHT_SHMFD");
    }
    struct Bad {
        const char* what;
        InflightDescription desc;
        uint64_t file_size;
    };
    const Bad bad[] = {
        {"mmap_size smaller than 2 regions", {64, 0, 2, 64, 0}, 1 << 20},
        {"file smaller than mmap_size", {8192, 0, 2, 64, 0}, 4096},
        {"3 queues on a 2-queue device", {1 << 20, 0, 3, 64, 0}, 1 << 20},
        {"queues of 0 descriptors", {1 << 20, 0, 2, 0, 0}, 1 << 20},
        {"offset not page-aligned", {8192, 100, 2, 64, 0}, 1 << 20},
    };
    for (const Bad& b : bad) {
        auto fe = connect_served(2, false, true);
        need(fe->negotiate(), "negotiation");
        Fd file = make_memfd(b.file_size);
        Message m = Message::with(Request::kSetInflightFd, b.desc);
        m.fds = {file.get()};
        expect_refused(fe->channel(), std::move(m), b.what);
    }
    Device d = start_device({.queues = 1, .inflight = true});
    const uint16_t used = stop_queue0(d);
    InflightRegion{d.fe->inflight_area()}.set_desc_num(16);  // the queue has 64
    expect_refused_in(d.ch(), queue_setup(d, 0, used), "a region for 16 descriptors under a queue of 64");
    check(daemon_alive(), "the daemon died");
}

// A second front end connects while one is set up (20 times). Docs: one
// front end at a time; a second connection is closed at once. Expect: each
// second one gets no answer and sees its connection closed; the first keeps working (write and
// read back on both queues) and stops cleanly.
void second_frontend() {
    Device d = start_device();
    write_read_verify(d, 0, 256, 1);
    for (int i = 0; i < 20; i++) {
        auto second = need(Channel::connect(env().socket), "second connection");
        second.set_timeout(kTimeout);
        (void)second.send(Message::empty(Request::kGetFeatures));  // may fail: already closed
        expect_closed(second, "second front end " + std::to_string(i));
    }
    for (unsigned q = 0; q < 2; q++) write_read_verify(d, q, 256 + 64 * q, 2);
    need(d.fe->stop(), "stop");
}

// 100 connections opened and closed at once without a message, back to
// back: each becomes a session that ends before it starts. Expect: the
// daemon survives, keeps no fd, and serves the next front end.
void connect_close_storm() {
    for (int i = 0; i < 100; i++) {
        auto c = Channel::connect(env().socket);
        check(c.has_value(), "connection " + std::to_string(i) + ": " + (c ? std::string() : c.error()));
    }
    check(daemon_alive(), "the daemon died");
}

}  // namespace

void good_client() {
    static uint32_t generation = 100;
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    Device d = start_device();
    const auto t1 = Clock::now();
    for (unsigned q = 0; q < 2; q++) write_read_verify(d, q, 2048 + 64 * q, generation++);
    const uint8_t st = run_request(d, 0, {.op = BlkOp::kGetId}, "GET_ID");
    check(st == kBlkSOk, "GET_ID: status " + status_name(st));
    const auto t2 = Clock::now();
    need(d.fe->stop(), "stop (GET_VRING_BASE, RESET_DEVICE)");
    const auto t3 = Clock::now();
    auto ms = [](Clock::duration x) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(x).count()); };
    if (t3 - t0 > std::chrono::seconds(1))  // slow: say where the time went
        note("slow good client: connect and setup " + ms(t1 - t0) + " ms, I/O " + ms(t2 - t1) + " ms, stop " +
             ms(t3 - t2) + " ms");
}

std::vector<Case> session_cases() {
    return {
        {"inflight_disconnect", inflight_disconnect},
        {"stop_with_requests_in_flight", stop_with_requests_in_flight},
        {"second_frontend", second_frontend},
        {"connect_close_storm", connect_close_storm},
        {"inflight_resubmit", inflight_resubmit},
        {"inflight_bad_area", inflight_bad_area},
    };
}

}  // namespace vubbad
