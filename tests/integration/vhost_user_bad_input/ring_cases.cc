// Bad rings and bad requests on a device set up properly
// (virtio-split-ring.tex, virtio-blk.tex; docs/VHOST-USER-BLK.md, "Rings"
// and "Requests"). Two kinds of expectation:
//   - a chain that breaks the ring's rules stops the queue
//     (expect_broken_then_recover: no used element for it, "broke the ring"
//     logged, the error eventfd signalled, the other queue unaffected, and
//     GET_VRING_BASE plus a new setup give a working queue);
//   - a well-formed chain the device cannot serve completes with IOERR or
//     UNSUPP in its status byte and the queue carries on (expect_status).
// Queues have 64 entries; descriptors carry guest-physical addresses.
#include <cstring>

#include "cases.h"
#include "harness.h"
#include "pattern.h"

namespace vubbad {

namespace {

constexpr uint16_t R = 0;            // device-readable
constexpr uint16_t W = kDescFWrite;  // device-writable
constexpr uint16_t N = kDescFNext;
constexpr uint16_t I = kDescFIndirect;

const GuestRegion& region(Device& d) { return d.mem().regions()[0]; }

// An indirect table of `descs` (their `next` fields as given) in guest memory.
GuestBuffer put_table(Device& d, const std::vector<VirtqDesc>& descs) {
    GuestBuffer t = d.alloc(16 * descs.size(), 16);
    std::memcpy(t.host, descs.data(), 16 * descs.size());
    return t;
}

// A valid read request's three descriptors, for tables.
std::vector<VirtqDesc> read_table(const ReqBufs& b) {
    return {{b.header.gpa, 16, N, 1}, {b.data.gpa, uint32_t(b.data.size), W | N, 2}, {b.status.gpa, 1, W, 0}};
}

// Publishes the chain at `head`, kicks, and expects the queue broken.
void publish_expect_broken(Device& d, const RingMark& m, unsigned extra_used = 0) {
    publish_and_kick(d, 0);
    expect_broken_then_recover(d, 0, m, extra_used);
}

// ---------------------------------------------------------------- the avail ring

// An avail ring entry naming descriptor 69 of a 64-entry table. Spec: the
// ring holds heads of chains; docs: a head must be in range. Expect: broken.
void head_out_of_range() {
    Device d = start_device();
    const RingMark m = mark(d, 0);
    d.vq(0).raw_set_avail_entry(m.avail, d.vq(0).size() + 5);
    d.vq(0).raw_set_avail_idx(uint16_t(m.avail + 1));
    d.q(0).kick();
    expect_broken_then_recover(d, 0, m);
}

// avail->idx moved 65 entries ahead on a 64-entry ring. Docs: an avail index
// may not run more than the ring size ahead. Expect: broken.
void avail_idx_jump() {
    Device d = start_device();
    const RingMark m = mark(d, 0);
    d.vq(0).raw_set_avail_idx(uint16_t(m.avail + d.vq(0).size() + 1));
    d.q(0).kick();
    expect_broken_then_recover(d, 0, m);
}

// The same head made available twice while its first use is in flight (a
// 4 KiB write: asynchronous I/O). Spec: a chain is the driver's again only
// once used; docs: a head must not already be in flight. Expect: broken,
// with exactly one used element (the first use, status OK).
void same_head_twice() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTOut, 128, 4096);
    const RingMark m = mark(d, 0);
    const uint16_t head = put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 4096, R | N, 2}, {b.status.gpa, 1, W}});
    d.vq(0).raw_set_avail_entry(uint16_t(m.avail + 1), head);
    d.vq(0).raw_set_avail_idx(uint16_t(m.avail + 2));
    d.q(0).kick();
    expect_broken_then_recover(d, 0, m, 1);
    check(*b.status.host == kBlkSOk, "the first use of the head: status " + status_name(*b.status.host));
}

// The kick fd replaced by the no-fd flag (bit 8: the daemon polls the ring,
// every millisecond when idle), I/O served that way, then a head out of
// range. Docs (kick notifier, "polled"): the same rules apply. Expect:
// served, then broken; GET_VRING_BASE and a setup with a kick fd restart it.
void broken_in_polled_mode() {
    Device d = start_device();
    need(d.ch().command(msg_u64(Request::kSetVringKick, kVringNoFd)), "SET_VRING_KICK with the no-fd flag");
    write_read_verify(d, 0, 512, 1);  // our kicks go nowhere now: the daemon polls
    const RingMark m = mark(d, 0);
    d.vq(0).raw_set_avail_entry(m.avail, 0xffff);
    d.vq(0).raw_set_avail_idx(uint16_t(m.avail + 1));
    expect_broken_then_recover(d, 0, m);
}

// 300 cycles of GET_VRING_BASE and a new setup of queue 0 (what a guest
// reset or a broken ring leads to), a write and read back every 30th.
// Expect: every cycle accepted and served; the daemon's mappings, fds and
// memory do not grow with the cycles.
void restart_cycles() {
    Device d = start_device();
    write_read_verify(d, 0, 768, 1);
    const int maps_before = daemon_map_count(), fds_before = daemon_fd_count();
    const uint64_t rss_before = daemon_rss_kib();
    for (int i = 0; i < 300; i++) {
        restart_queue(d, 0, d.vq(0).avail_idx());
        if (i % 30 == 29) write_read_verify(d, 0, 768, uint32_t(i));
    }
    const int maps = daemon_map_count(), fds = daemon_fd_count();
    const uint64_t rss = daemon_rss_kib();
    note("daemon mappings " + std::to_string(maps_before) + " -> " + std::to_string(maps) + ", fds " +
         std::to_string(fds_before) + " -> " + std::to_string(fds) + ", RSS " + std::to_string(rss_before) + " -> " +
         std::to_string(rss) + " KiB");
    check(maps <= maps_before + 8 && fds <= fds_before + 2 && rss < rss_before + 8 * 1024,
          "the daemon grows with queue restarts");
}

// ---------------------------------------------------------------- chains

// Chains that loop: a descriptor whose next is itself; two that point at
// each other; two in an indirect table that point at each other. Docs: a
// chain must not loop (at most the table size of descriptors). Expect:
// broken, each time.
void descriptor_loop() {
    for (int variant = 0; variant < 3; variant++) {
        Device d = start_device();
        ReqBufs b = make_request(d, kBlkTOut, 0, 4096);
        const RingMark m = mark(d, 0);
        if (variant == 0) {
            note("a descriptor that is its own next");
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 0}});
        } else if (variant == 1) {
            note("two descriptors pointing at each other");
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 4096, R | N, 0}});
        } else {
            note("a loop inside an indirect table");
            GuestBuffer t = put_table(d, {{b.header.gpa, 16, N, 1}, {b.data.gpa, 4096, N, 0}});
            put_chain(d, 0, {{t.gpa, 32, I}});
        }
        publish_expect_broken(d, m);
    }
}

// An indirect descriptor with NEXT set (followed by a status byte). Spec:
// "the driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT";
// docs: an indirect table must be the chain's only descriptor. Expect: broken.
void indirect_with_next() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTIn, 0, 4096);
    GuestBuffer t = put_table(d, read_table(b));
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{t.gpa, 48, I | N, 1}, {b.status.gpa, 1, W}});
    publish_expect_broken(d, m);
}

// Indirect descriptors of 40 bytes (not whole 16-byte descriptors) and of 0
// bytes over a valid 3-descriptor table. Docs: an indirect table is sized
// in whole descriptors. Expect: broken, each time.
void indirect_bad_length() {
    for (uint32_t len : {40u, 0u}) {
        Device d = start_device();
        ReqBufs b = make_request(d, kBlkTIn, 0, 4096);
        GuestBuffer t = put_table(d, read_table(b));
        const RingMark m = mark(d, 0);
        note("indirect table of " + std::to_string(len) + " bytes");
        put_chain(d, 0, {{t.gpa, len, I}});
        publish_expect_broken(d, m);
    }
}

// An indirect table whose first descriptor is itself indirect. Spec: "the
// driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect
// descriptor"; docs: not nested. Expect: broken.
void nested_indirect() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTIn, 0, 4096);
    GuestBuffer inner = put_table(d, read_table(b));
    GuestBuffer outer = put_table(d, {{inner.gpa, 48, I, 0}});
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{outer.gpa, 16, I}});
    publish_expect_broken(d, m);
}

// A device-readable descriptor after a device-writable one (header, status,
// then data to write). Spec: device-writable descriptors come after the
// readable ones; docs: the same. Expect: broken.
void readable_after_writable() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTOut, 0, 4096);
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.status.gpa, 1, W | N, 2}, {b.data.gpa, 4096, R}});
    publish_expect_broken(d, m);
}

// ---------------------------------------------------------------- buffers outside memory

// A header at the first byte past the end of the region, data in the 2 MiB
// hole after it, and a header at guest address 0 (below every region).
// Docs: every address is translated with the whole range inside memory.
// Expect: broken, each time.
void descriptor_outside_memory() {
    for (int variant = 0; variant < 3; variant++) {
        Device d = start_device();
        ReqBufs b = make_request(d, kBlkTIn, 0, 4096);
        const uint64_t end = region(d).gpa + region(d).size;
        const RingMark m = mark(d, 0);
        if (variant == 0) {
            note("header at the end of the region");
            put_chain(d, 0, {{end, 16, R | N, 1}, {b.data.gpa, 4096, W | N, 2}, {b.status.gpa, 1, W}});
        } else if (variant == 1) {
            note("data in the hole after the region");
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {end + (1 << 20), 4096, W | N, 2}, {b.status.gpa, 1, W}});
        } else {
            note("header at guest address 0");
            put_chain(d, 0, {{0, 16, R | N, 1}, {b.data.gpa, 4096, W | N, 2}, {b.status.gpa, 1, W}});
        }
        publish_expect_broken(d, m);
    }
}

// A read whose data descriptor starts 4 KiB before the end of the region
// and claims 0xffffffff bytes. Expect: broken (not a read past the mapping).
void huge_length_at_region_end() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTIn, 0, 0);
    const uint64_t last_page = region(d).gpa + region(d).size - 4096;
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {last_page, 0xffffffff, W | N, 2}, {b.status.gpa, 1, W}});
    publish_expect_broken(d, m);
}

// A write claiming 1 GiB + 4 KiB of data in one descriptor, in 64 MiB of
// guest memory. Expect: broken (the buffer is not in memory), nothing
// written.
void write_beyond_memory() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTOut, 0, 4096);
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, (1u << 30) + 4096, R | N, 2}, {b.status.gpa, 1, W}});
    publish_expect_broken(d, m);
}

// A read of 1098 data descriptors (one 512-byte buffer each, in an
// indirect table of 1100 on a ring of 2048): 1100 buffers. Docs: at most
// 1024 buffers a request (what one preadv takes). Expect: broken.
void too_many_buffers() {
    Device d = start_device({.queue_size = 2048});
    ReqBufs b = make_request(d, kBlkTIn, 0, 512);
    std::vector<VirtqDesc> t = {{b.header.gpa, 16, N, 1}};
    for (uint16_t i = 1; i <= 1098; i++) t.push_back({b.data.gpa, 512, uint16_t(W | N), uint16_t(i + 1)});
    t.push_back({b.status.gpa, 1, W, 0});
    GuestBuffer table = put_table(d, t);
    const RingMark m = mark(d, 0);
    put_chain(d, 0, {{table.gpa, uint32_t(table.size), I}});
    publish_expect_broken(d, m);
}

// ---------------------------------------------------------------- malformed requests

// A chain with a header and data but no device-writable byte for the
// status, and one with the header alone. Spec (virtio-blk): a request ends
// with a status byte the device writes; docs: a chain without a 16-byte
// header and a status byte stops the queue. Expect: broken, each time.
void no_status_byte() {
    for (int variant = 0; variant < 2; variant++) {
        Device d = start_device();
        ReqBufs b = make_request(d, kBlkTOut, 0, 512);
        const RingMark m = mark(d, 0);
        if (variant == 0)
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 512, R}});
        else
            put_chain(d, 0, {{b.header.gpa, 16, R}});
        note(variant == 0 ? "header and data, no status" : "header alone");
        publish_expect_broken(d, m);
    }
}

// Headers of 8 and 15 bytes (16 required) before a status byte. Expect:
// broken, each time.
void short_header() {
    for (uint32_t len : {8u, 15u}) {
        Device d = start_device();
        ReqBufs b = make_request(d, kBlkTIn, 0, 0);
        const RingMark m = mark(d, 0);
        note("header of " + std::to_string(len) + " bytes");
        put_chain(d, 0, {{b.header.gpa, len, R | N, 1}, {b.status.gpa, 1, W}});
        publish_expect_broken(d, m);
    }
}

// ---------------------------------------------------------------- per-request errors

// Reads and writes whose data length is not a whole number of 512-byte
// sectors (1000 bytes). Docs: length in whole logical blocks, else IOERR.
// Expect: IOERR, the queue carries on.
void unaligned_length() {
    Device d = start_device();
    for (uint32_t type : {kBlkTIn, kBlkTOut}) {
        ReqBufs b = make_request(d, type, 0, 1000);
        const uint16_t flags = type == kBlkTIn ? W : R;
        const uint16_t head = put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 1000, uint16_t(flags | N), 2},
                                               {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSIoErr, type == kBlkTIn ? 1001 : 1,
                      std::string(type == kBlkTIn ? "read" : "write") + " of 1000 bytes");
    }
}

// Reads past the end of the disk: at the first sector after it, straddling
// it (last sector + 1 more), at sector 2^63 (whose byte offset overflows)
// and at sector 2^64-1; and a write at the first sector after it. Spec:
// IOERR. Expect: IOERR each time, the queue carries on.
void past_end_of_disk() {
    Device d = start_device();
    const uint64_t sectors = d.capacity / kSectorSize;
    const std::pair<uint32_t, uint64_t> bad[] = {
        {kBlkTIn, sectors}, {kBlkTIn, sectors - 1}, {kBlkTIn, 1ull << 63}, {kBlkTIn, ~0ull}, {kBlkTOut, sectors}};
    for (auto [type, sector] : bad) {
        ReqBufs b = make_request(d, type, sector, 1024);
        const uint16_t flags = type == kBlkTIn ? W : R;
        const uint16_t head = put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 1024, uint16_t(flags | N), 2},
                                               {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSIoErr, type == kBlkTIn ? 1025 : 1,
                      std::string(type == kBlkTIn ? "read" : "write") + " of 1 KiB at sector " + std::to_string(sector) +
                          " of " + std::to_string(sectors));
    }
}

// Request types 0xdead, 2 (legacy SCSI) and 0xffffffff. Spec: the device
// answers unsupported requests with UNSUPP. Expect: UNSUPP, the queue
// carries on.
void unknown_type() {
    Device d = start_device();
    for (uint32_t type : {0xdeadu, 2u, 0xffffffffu}) {
        ReqBufs b = make_request(d, type, 0, 512);
        const uint16_t head =
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 512, W | N, 2}, {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSUnsupp, 513, "request type " + std::to_string(type));
    }
}

// A read of 61 x 20 MiB = 1220 MiB (every descriptor the same 20 MiB
// buffer: all in memory), inside the 2 GiB disk. Docs: at most 1 GiB of
// data per request. Expect: IOERR, the queue carries on.
void read_over_1gib() {
    Device d = start_device();
    constexpr uint32_t kPiece = 20 << 20;
    check(d.capacity >= 61ull * kPiece, "the disk must hold 1220 MiB (run.sh makes 2 GiB)");
    ReqBufs b = make_request(d, kBlkTIn, 0, kPiece);
    std::vector<RawDesc> chain = {{b.header.gpa, 16, R | N, 1}};
    for (uint16_t i = 0; i < 61; i++) chain.push_back({b.data.gpa, kPiece, W | N, uint16_t(i + 2)});
    chain.push_back({b.status.gpa, 1, W});
    const uint16_t head = put_chain(d, 0, chain);
    publish_and_kick(d, 0);
    expect_status(d, 0, head, b.status, kBlkSIoErr, UINT32_MAX, "a read of 1220 MiB");
}

// Discard with the unmap flag (only write zeroes has it), write zeroes with
// two segments (max_write_zeroes_seg is 1), write zeroes with flag bit 1
// (unknown). Spec: UNSUPP. Expect: UNSUPP each time.
void discard_write_zeroes_unsupported() {
    Device d = start_device();
    struct Bad {
        uint32_t type;
        uint32_t segments;
        uint32_t flags;
        const char* what;
    };
    const Bad bad[] = {{kBlkTDiscard, 1, 1, "discard with the unmap flag"},
                       {kBlkTWriteZeroes, 2, 0, "write zeroes with two segments"},
                       {kBlkTWriteZeroes, 1, 2, "write zeroes with flag bit 1"}};
    for (const Bad& x : bad) {
        ReqBufs b = make_request(d, x.type, 0, 0);
        GuestBuffer segs = d.alloc(16 * x.segments);
        for (uint32_t i = 0; i < x.segments; i++) {
            const BlkDiscardWriteZeroes s{8ull * i, 8, x.flags};
            std::memcpy(segs.host + 16 * i, &s, sizeof s);
        }
        const uint16_t head = put_chain(
            d, 0, {{b.header.gpa, 16, R | N, 1}, {segs.gpa, uint32_t(segs.size), R | N, 2}, {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSUnsupp, 1, x.what);
    }
}

// GET_ID into a 7-byte buffer (the id is 20 bytes) followed by a canary.
// Spec: the id fills the buffer (up to 20 bytes). Expect: OK, 7 bytes
// written, the canary intact.
void get_id_short_buffer() {
    Device d = start_device();
    ReqBufs b = make_request(d, kBlkTGetId, 0, 0);
    GuestBuffer buf = d.alloc(64);
    std::memset(buf.host, 0xcc, 64);
    const uint16_t head = put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {buf.gpa, 7, W | N, 2}, {b.status.gpa, 1, W}});
    publish_and_kick(d, 0);
    expect_status(d, 0, head, b.status, kBlkSOk, 8, "GET_ID into 7 bytes");
    for (int i = 7; i < 64; i++) check(buf.host[i] == 0xcc, "GET_ID wrote past its 7-byte buffer");
}

// ---------------------------------------------------------------- odd but valid layouts

// Layouts virtio 1.x allows (no framing assumptions): the header split in two
// 8-byte descriptors; the data and the status byte in one descriptor; a
// write's header and data in one descriptor; a buffer ending exactly at the
// end of the region. Expect: each served (OK) with the right data.
void odd_layouts_served() {
    Device d = start_device();
    const uint64_t sector = 1024;
    const uint32_t seed = 0xbad1, gen = 3;
    write_read_verify(d, 0, sector, gen);  // 8 KiB of known data at `sector`
    auto verify = [&](const uint8_t* data, const std::string& what) {
        if (auto bad = check_pattern({data, 4096}, sector * kSectorSize, gen, seed)) fail(what + ": " + *bad);
    };
    {
        ReqBufs b = make_request(d, kBlkTIn, sector, 4096);
        const uint16_t head = put_chain(d, 0, {{b.header.gpa, 8, R | N, 1}, {b.header.gpa + 8, 8, R | N, 2},
                                               {b.data.gpa, 4096, W | N, 3}, {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSOk, 4097, "header in two descriptors");
        verify(b.data.host, "header in two descriptors");
    }
    {
        ReqBufs b = make_request(d, kBlkTIn, sector, 4097);
        b.data.host[4096] = 0xff;
        const uint16_t head = put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 4097, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, GuestBuffer{b.data.host + 4096, b.data.gpa + 4096, 1}, kBlkSOk, 4097,
                      "data and status in one descriptor");
        verify(b.data.host, "data and status in one descriptor");
    }
    {
        GuestBuffer hd = d.alloc(16 + 4096, 16);
        const BlkReqHeader h{kBlkTOut, 0, sector + 16};
        std::memcpy(hd.host, &h, sizeof h);
        fill_pattern({hd.host + 16, 4096}, (sector + 16) * kSectorSize, gen, seed);
        GuestBuffer st = d.alloc(1);
        const uint16_t head = put_chain(d, 0, {{hd.gpa, 16 + 4096, R | N, 1}, {st.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, st, kBlkSOk, 1, "a write's header and data in one descriptor");
        ReqBufs b = make_request(d, kBlkTIn, sector + 16, 4096);
        const uint16_t h2 =
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {b.data.gpa, 4096, W | N, 2}, {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, h2, b.status, kBlkSOk, 4097, "reading it back");
        if (auto bad = check_pattern({b.data.host, 4096}, (sector + 16) * kSectorSize, gen, seed))
            fail("a write's header and data in one descriptor: " + *bad);
    }
    {
        ReqBufs b = make_request(d, kBlkTIn, sector, 0);
        const uint64_t last_page = region(d).gpa + region(d).size - 4096;
        uint8_t* host = d.mem().host_of(last_page, 4096);
        check(host != nullptr, "the last page of the region");
        const uint16_t head =
            put_chain(d, 0, {{b.header.gpa, 16, R | N, 1}, {last_page, 4096, W | N, 2}, {b.status.gpa, 1, W}});
        publish_and_kick(d, 0);
        expect_status(d, 0, head, b.status, kBlkSOk, 4097, "data in the last page of the region");
        verify(host, "data in the last page of the region");
    }
}

}  // namespace

std::vector<Case> ring_cases() {
    return {
        {"ring_head_out_of_range", head_out_of_range},
        {"ring_avail_idx_jump", avail_idx_jump},
        {"ring_same_head_twice", same_head_twice},
        {"ring_broken_in_polled_mode", broken_in_polled_mode},
        {"ring_restart_cycles", restart_cycles},
        {"ring_descriptor_loop", descriptor_loop},
        {"ring_indirect_with_next", indirect_with_next},
        {"ring_indirect_bad_length", indirect_bad_length},
        {"ring_nested_indirect", nested_indirect},
        {"ring_readable_after_writable", readable_after_writable},
        {"ring_descriptor_outside_memory", descriptor_outside_memory},
        {"ring_huge_length_at_region_end", huge_length_at_region_end},
        {"ring_write_beyond_memory", write_beyond_memory},
        {"ring_too_many_buffers", too_many_buffers},
        {"req_no_status_byte", no_status_byte},
        {"req_short_header", short_header},
        {"req_unaligned_length", unaligned_length},
        {"req_past_end_of_disk", past_end_of_disk},
        {"req_unknown_type", unknown_type},
        {"req_read_over_1gib", read_over_1gib},
        {"req_discard_write_zeroes_unsupported", discard_write_zeroes_unsupported},
        {"req_get_id_short_buffer", get_id_short_buffer},
        {"req_odd_layouts_served", odd_layouts_served},
    };
}

}  // namespace vubbad
