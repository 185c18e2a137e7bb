// Connections (docs/VHOST-USER-BLK.md, "Disconnect and reconnect"): a front
// end that goes away with requests in flight, one that stops its rings with
// requests in flight, a second front end while one is served, and the good
// client every other case is followed by.
#include <sys/socket.h>

#include <chrono>
#include <cstring>

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

// Puts a write of block `first + i` (generation `gen`) from slot i on queue
// `qi` for every slot, without publishing.
void submit_writes(Device& d, unsigned qi, std::vector<BlkSlot>& slots, uint64_t first, uint32_t gen) {
    for (size_t i = 0; i < slots.size(); i++) {
        const uint64_t sector = (first + i) * (kBlock / kSectorSize);
        fill_pattern({slots[i].data(), kBlock}, sector * kSectorSize, gen, kSeed);
        auto segs = need(slots[i].prepare({.op = BlkOp::kWrite, .sector = sector, .bytes = kBlock}), "prepare");
        Virtqueue& vq = d.vq(qi);
        const uint16_t head = d.indirect ? need(vq.add_indirect(segs, slots[i].indirect()), "add_indirect")
                                         : need(vq.add_chain(segs), "add_chain");
        vq.make_available(head);
    }
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
            for (unsigned i = 0; i < kDepth; i++) {  // generation 1, one at a time
                const uint64_t sector = (first[q] + i) * (kBlock / kSectorSize);
                fill_pattern({slots[i].data(), kBlock}, sector * kSectorSize, 1, kSeed);
                const uint8_t st = run_request(d, q, slots[i], {.op = BlkOp::kWrite, .sector = sector, .bytes = kBlock},
                                               "first write");
                check(st == kBlkSOk, "first write: status " + status_name(st));
            }
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
    };
}

}  // namespace vubbad
