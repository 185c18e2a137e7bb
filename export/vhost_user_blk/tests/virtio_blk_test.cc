// virtio-blk: configuration space layout, feature bits, and request
// execution against a real block node (the file driver over a temporary
// file, so that what a request wrote can be checked with pread and what it
// read can be prepared with pwrite).
#include "virtio_blk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::vhost_user {
namespace {

template <class T>
T get(const std::array<uint8_t, kBlkConfigSize>& c, size_t offset) {
    T v;
    std::memcpy(&v, c.data() + offset, sizeof v);
    return v;
}

// ---- configuration space and features ----

TEST(VirtioBlkConfig, FieldsAtTheirSpecOffsets) {
    BlkDeviceConfig cfg;
    cfg.size_bytes = (1ull << 30) + 4096;  // not a power of 2: capacity must not be a shift of it
    cfg.logical_block_size = 4096;
    cfg.num_queues = 4;
    cfg.seg_max = 126;
    const auto c = encode_config(cfg);
    EXPECT_EQ(get<uint64_t>(c, 0), ((1ull << 30) + 4096) / 512);  // capacity, 512-byte sectors
    EXPECT_EQ(get<uint32_t>(c, 8), 256u * 1024);                   // size_max
    EXPECT_EQ(get<uint32_t>(c, 12), 126u);                         // seg_max
    EXPECT_EQ(get<uint32_t>(c, 16), 0u);                           // geometry (not offered)
    EXPECT_EQ(get<uint32_t>(c, 20), 4096u);                        // blk_size
    EXPECT_EQ(c[24], 0);                                           // physical_block_exp
    EXPECT_EQ(c[25], 0);                                           // alignment_offset
    EXPECT_EQ(get<uint16_t>(c, 26), 1u);                           // min_io_size, in logical blocks
    EXPECT_EQ(get<uint32_t>(c, 28), 0u);                           // opt_io_size: none
    EXPECT_EQ(c[32], 1);                                           // writeback
    EXPECT_EQ(c[33], 0);                                           // unused0
    EXPECT_EQ(get<uint16_t>(c, 34), 4u);                           // num_queues
    EXPECT_EQ(get<uint32_t>(c, 36), kBlkMaxZeroSectors);           // max_discard_sectors
    EXPECT_EQ(get<uint32_t>(c, 40), 1u);                           // max_discard_seg
    EXPECT_EQ(get<uint32_t>(c, 44), 8u);                           // discard_sector_alignment, in sectors
    EXPECT_EQ(get<uint32_t>(c, 48), kBlkMaxZeroSectors);           // max_write_zeroes_sectors
    EXPECT_EQ(get<uint32_t>(c, 52), 1u);                           // max_write_zeroes_seg
    EXPECT_EQ(c[56], 1);                                           // write_zeroes_may_unmap
    EXPECT_EQ(c[57] | c[58] | c[59], 0);                           // unused1
    EXPECT_EQ(kBlkMaxZeroSectors, (1u << 30) / 512);
}

// SeaBIOS 1.16's virtio-blk driver (src/hw/virtio-blk.c), as it splits a
// transfer: the sectors of one request, from size_max and seg_max in 32 and
// then 16 bits, 64 when the product is 0; then requests of at most that
// many until the transfer is done. Returns the requests it sends for
// `count` sectors, or -1 if it would never finish.
int seabios_requests(uint32_t size_max, uint32_t seg_max, uint16_t count) {
    const uint32_t max_io_size = size_max * seg_max;  // wraps as in the firmware
    const uint16_t blk_num_max = max_io_size != 0 ? uint16_t(max_io_size / 512) : 64;
    if (count <= blk_num_max) return 1;
    int requests = 0;
    while (count > 0) {
        const uint16_t n = std::min(count, blk_num_max);
        if (n == 0) return -1;  // a zero-sector request, again and again
        count = uint16_t(count - n);
        requests++;
    }
    return requests;
}

TEST(VirtioBlkConfig, FirmwareCountsTheLargestRequestInSixteenBits) {
    for (uint32_t seg_max : {1u, 2u, 7u, 126u, 128u, 254u, 1024u, 8191u}) {
        BlkDeviceConfig cfg;
        cfg.seg_max = seg_max;
        const auto c = encode_config(cfg);
        const uint32_t size_max = get<uint32_t>(c, 8);
        SCOPED_TRACE("seg_max " + std::to_string(seg_max) + ", size_max " + std::to_string(size_max));
        EXPECT_EQ(size_max % 4096, 0u);
        EXPECT_GE(size_max, 4096u);  // Linux takes less as one page anyway
        EXPECT_LE(size_max, 256u * 1024);
        EXPECT_LE(uint64_t(size_max) * seg_max, kBlkMaxAdvertisedRequestBytes);
        // The MBR (1 sector), a boot loader's reads (up to 127 sectors by
        // the EDD spec) and the largest count int 13h can ask for.
        EXPECT_EQ(seabios_requests(size_max, seg_max, 1), 1);
        EXPECT_GE(seabios_requests(size_max, seg_max, 127), 1);
        EXPECT_GE(seabios_requests(size_max, seg_max, 0xffff), 1);
    }
    // What ioplane advertised before (1 GiB segments, 126 of them): the
    // product wraps to 2 GiB, whose sector count wraps to 0.
    EXPECT_EQ(seabios_requests(1u << 30, 126, 1), -1);
}

TEST(VirtioBlkConfig, CapacityRoundsDownAndFollowsTheConfig) {
    BlkDeviceConfig cfg;
    cfg.size_bytes = 1000;
    cfg.num_queues = 1;
    cfg.seg_max = 7;
    const auto c = encode_config(cfg);
    EXPECT_EQ(get<uint64_t>(c, 0), 1u);
    EXPECT_EQ(get<uint32_t>(c, 12), 7u);
    EXPECT_EQ(get<uint32_t>(c, 20), 512u);
    EXPECT_EQ(get<uint16_t>(c, 34), 1u);
    EXPECT_EQ(get<uint32_t>(c, 44), 1u);
    EXPECT_EQ(c[32], 1);                       // writeback, the default
    EXPECT_EQ(encode_config(cfg, false)[32], 0);  // writethrough, as the driver chose (CONFIG_WCE)
}

TEST(VirtioBlkConfig, DeviceFeatures) {
    BlkDeviceConfig rw;
    const uint64_t f = device_features(rw);
    for (uint64_t bit : {kFVersion1, kFRingIndirectDesc, kFRingEventIdx, kFProtocolFeatures, kBlkFSizeMax, kBlkFSegMax,
                         kBlkFBlkSize, kBlkFFlush, kBlkFTopology, kBlkFConfigWce, kBlkFMq, kBlkFDiscard,
                         kBlkFWriteZeroes})
        EXPECT_TRUE(f & bit) << std::hex << bit;
    EXPECT_FALSE(f & kBlkFRo);
    EXPECT_FALSE(f & (1ull << 4));  // GEOMETRY

    BlkDeviceConfig ro;
    ro.read_only = true;
    EXPECT_EQ(device_features(ro), f | kBlkFRo);
}

// ---- requests ----

// A descriptor chain built from test buffers (stable addresses).
class Chain {
public:
    // A device-readable buffer holding `bytes`.
    Chain& out(std::vector<uint8_t> bytes) {
        auto& b = storage_.emplace_back(std::move(bytes));
        chain_.out.push_back({b.data(), b.size()});
        chain_.out_bytes += b.size();
        return *this;
    }
    // A device-writable buffer of `n` bytes, filled with a marker.
    Chain& in(size_t n) {
        auto& b = storage_.emplace_back(n, uint8_t(0xee));
        chain_.in.push_back({b.data(), b.size()});
        chain_.in_bytes += n;
        in_bufs_.push_back(&b);
        return *this;
    }
    DescriptorChain& chain() { return chain_; }
    // The writable buffers as the guest sees them, concatenated.
    std::vector<uint8_t> in_bytes() const {
        std::vector<uint8_t> all;
        for (auto* b : in_bufs_) all.insert(all.end(), b->begin(), b->end());
        return all;
    }
    uint8_t status_byte() const { return in_bufs_.back()->back(); }

private:
    std::deque<std::vector<uint8_t>> storage_;
    std::vector<std::vector<uint8_t>*> in_bufs_;
    DescriptorChain chain_;
};

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
    std::vector<uint8_t> h(16);
    std::memcpy(h.data(), &type, 4);
    const uint32_t ioprio = 0;
    std::memcpy(h.data() + 4, &ioprio, 4);
    std::memcpy(h.data() + 8, &sector, 8);
    return h;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = uint8_t(seed + i * 13 + i / 256);
    return v;
}

// A discard / write-zeroes segment.
std::vector<uint8_t> segment(uint64_t sector, uint32_t num_sectors, uint32_t flags) {
    std::vector<uint8_t> s(16);
    std::memcpy(s.data(), &sector, 8);
    std::memcpy(s.data() + 8, &num_sectors, 4);
    std::memcpy(s.data() + 12, &flags, 4);
    return s;
}

std::vector<uint8_t> slice(const std::vector<uint8_t>& v, size_t from, size_t n) {
    return {v.begin() + ptrdiff_t(from), v.begin() + ptrdiff_t(from + n)};
}

class VirtioBlkRequestTest : public ::testing::Test {
protected:
    static constexpr uint64_t kFileSize = 1 << 20;

    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
        char tmpl[] = "/tmp/ioplane-vublk-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/disk.img";
        fd_ = ::open(path_.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
        ASSERT_GE(fd_, 0);
        ASSERT_EQ(::ftruncate(fd_, off_t(kFileSize)), 0);
        const nlohmann::json options = {{"driver", "file"}, {"node-name", "disk"}, {"filename", path_}};
        auto node = graph_.open(OptionTree{options, OptionSyntax::keyval}, loop_->ctx());
        ASSERT_TRUE(node) << node.error().describe();
        // Writable: where the device refuses a write, it is the device's
        // check that refuses it, not the block layer's.
        blk_ = std::make_unique<block::BlockBackend>(*node, true);
        blk_->disable_request_queuing();  // as the export does
        cfg_.size_bytes = kFileSize;
        cfg_.serial = "vub-serial-1";
    }
    void TearDown() override {
        // The backend, the graph, then the loop go (member order): the node
        // leaves its context while the context still exists.
        if (fd_ >= 0) ::close(fd_);
        std::filesystem::remove_all(dir_);
    }

    // Runs one request as BlkQueue does: counted in the backend around it.
    static Task<BlkOutcome> counted(block::BlockBackend& blk, const BlkDeviceConfig& cfg, bool writethrough,
                                    DescriptorChain& chain) {
        co_await blk.co_begin_request();
        BlkOutcome o = co_await execute_blk_request(blk, cfg, writethrough, chain);
        blk.end_request();
        co_return o;
    }
    BlkOutcome execute(Chain& c, bool writethrough = false) {
        EXPECT_TRUE(blk_chain_is_well_formed(c.chain()));
        return block_on(loop_->ctx(), counted(*blk_, cfg_, writethrough, c.chain()));
    }

    std::vector<uint8_t> file_bytes(uint64_t offset, size_t n) {
        std::vector<uint8_t> v(n);
        EXPECT_EQ(::pread(fd_, v.data(), n, off_t(offset)), ssize_t(n));
        return v;
    }
    void fill_file(uint64_t offset, const std::vector<uint8_t>& bytes) {
        ASSERT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), off_t(offset)), ssize_t(bytes.size()));
    }

    std::unique_ptr<MainLoop> loop_;  // declared first: destroyed last
    block::BlockGraph graph_;
    std::unique_ptr<block::BlockBackend> blk_;
    BlkDeviceConfig cfg_;
    std::string dir_, path_;
    int fd_ = -1;
};

TEST(VirtioBlkChain, WellFormedNeedsAHeaderAndAStatusByte) {
    Chain ok;
    ok.out(std::vector<uint8_t>(10)).out(std::vector<uint8_t>(6)).in(1);  // header split in two
    EXPECT_TRUE(blk_chain_is_well_formed(ok.chain()));
    Chain short_header;
    short_header.out(std::vector<uint8_t>(15)).in(1);
    EXPECT_FALSE(blk_chain_is_well_formed(short_header.chain()));
    Chain no_status;
    no_status.out(std::vector<uint8_t>(16));
    EXPECT_FALSE(blk_chain_is_well_formed(no_status.chain()));
    Chain nothing;
    EXPECT_FALSE(blk_chain_is_well_formed(nothing.chain()));
}

// A write then a read of the same 3 sectors, with the header split across
// two buffers (the second also starting the data) and the data spread over
// several buffers on both sides.
TEST_F(VirtioBlkRequestTest, WriteAndReadRoundTripWithSplitBuffers) {
    const auto data = pattern(1536, 7);
    const auto h = header(kBlkTOut, 8);
    std::vector<uint8_t> second(h.begin() + 10, h.end());
    second.insert(second.end(), data.begin(), data.begin() + 100);
    Chain w;
    w.out(slice(h, 0, 10)).out(second).out(slice(data, 100, 900)).out(slice(data, 1000, 536)).in(1);
    const auto wo = execute(w);
    EXPECT_EQ(wo.status, kBlkSOk);
    EXPECT_EQ(wo.written, 1u);  // the status byte only
    EXPECT_EQ(w.status_byte(), kBlkSOk);
    EXPECT_EQ(file_bytes(8 * 512, 1536), data);
    EXPECT_EQ(file_bytes(8 * 512 - 512, 512), std::vector<uint8_t>(512, 0));  // nothing around it
    EXPECT_EQ(file_bytes(8 * 512 + 1536, 512), std::vector<uint8_t>(512, 0));

    const auto rh = header(kBlkTIn, 8);
    Chain r;
    r.out(slice(rh, 0, 7)).out(slice(rh, 7, 9)).in(1000).in(300).in(237);  // 1536 data + status
    const auto ro = execute(r);
    EXPECT_EQ(ro.status, kBlkSOk);
    EXPECT_EQ(ro.written, 1537u);
    const auto got = r.in_bytes();
    EXPECT_EQ(slice(got, 0, 1536), data);
    EXPECT_EQ(got.back(), kBlkSOk);  // the last byte of the writable buffers
}

TEST_F(VirtioBlkRequestTest, ReadsWhatIsInTheFile) {
    const auto data = pattern(4096, 99);
    fill_file(512 * 100, data);
    Chain r;
    r.out(header(kBlkTIn, 100)).in(4096).in(1);  // status in a buffer of its own
    const auto o = execute(r);
    EXPECT_EQ(o.status, kBlkSOk);
    EXPECT_EQ(o.written, 4097u);
    EXPECT_EQ(slice(r.in_bytes(), 0, 4096), data);
    EXPECT_EQ(r.status_byte(), kBlkSOk);
}

TEST_F(VirtioBlkRequestTest, WritethroughWriteSucceeds) {
    const auto data = pattern(512, 3);
    Chain w;
    w.out(header(kBlkTOut, 0)).out(data).in(1);
    EXPECT_EQ(execute(w, /*writethrough=*/true).status, kBlkSOk);
    EXPECT_EQ(file_bytes(0, 512), data);
}

TEST_F(VirtioBlkRequestTest, OutOfRangeSectorsFailWithIoErr) {
    // The device is smaller than the file: the device's range check must
    // refuse what the block layer would allow.
    cfg_.size_bytes = kFileSize / 2;
    const uint64_t last_sector = cfg_.size_bytes / 512 - 1;
    const auto data = pattern(1024, 1);
    Chain past_end;  // starts in range, runs one sector past
    past_end.out(header(kBlkTOut, last_sector)).out(data).in(1);
    EXPECT_EQ(execute(past_end).status, kBlkSIoErr);
    EXPECT_EQ(past_end.status_byte(), kBlkSIoErr);
    EXPECT_EQ(file_bytes(cfg_.size_bytes - 512, 1024), std::vector<uint8_t>(1024, 0));

    Chain beyond;
    beyond.out(header(kBlkTOut, cfg_.size_bytes / 512 + 8)).out(data).in(1);
    EXPECT_EQ(execute(beyond).status, kBlkSIoErr);
    EXPECT_EQ(file_bytes(cfg_.size_bytes + 4096, 1024), std::vector<uint8_t>(1024, 0));

    Chain read_past;
    read_past.out(header(kBlkTIn, last_sector)).in(1024).in(1);
    const auto o = execute(read_past);
    EXPECT_EQ(o.status, kBlkSIoErr);
    EXPECT_EQ(o.written, 1u);  // refused before any data was read: the status byte only
    EXPECT_EQ(read_past.status_byte(), kBlkSIoErr);

    Chain huge_sector;  // sector * 512 overflows 64 bits
    huge_sector.out(header(kBlkTIn, UINT64_MAX / 256)).in(512).in(1);
    EXPECT_EQ(execute(huge_sector).status, kBlkSIoErr);

    // The last sector itself is fine.
    Chain last;
    last.out(header(kBlkTOut, last_sector)).out(slice(data, 0, 512)).in(1);
    EXPECT_EQ(execute(last).status, kBlkSOk);
    EXPECT_EQ(file_bytes(cfg_.size_bytes - 512, 512), slice(data, 0, 512));
}

TEST_F(VirtioBlkRequestTest, LengthsAndSectorsMustBeWholeLogicalBlocks) {
    cfg_.logical_block_size = 4096;
    const auto data = pattern(4096, 5);
    Chain short_write;  // 512 bytes: a sector, not a logical block
    short_write.out(header(kBlkTOut, 0)).out(slice(data, 0, 512)).in(1);
    EXPECT_EQ(execute(short_write).status, kBlkSIoErr);
    Chain misaligned;  // sector 1 is inside the first logical block
    misaligned.out(header(kBlkTOut, 1)).out(data).in(1);
    EXPECT_EQ(execute(misaligned).status, kBlkSIoErr);
    EXPECT_EQ(file_bytes(0, 8192), std::vector<uint8_t>(8192, 0));
    Chain odd_read;
    odd_read.out(header(kBlkTIn, 8)).in(4095).in(1);
    EXPECT_EQ(execute(odd_read).status, kBlkSIoErr);

    Chain aligned;  // sector 8 = 4096 bytes
    aligned.out(header(kBlkTOut, 8)).out(data).in(1);
    EXPECT_EQ(execute(aligned).status, kBlkSOk);
    EXPECT_EQ(file_bytes(4096, 4096), data);
}

TEST_F(VirtioBlkRequestTest, ReadOnlyDeviceRefusesWritesAndWritesNothing) {
    cfg_.read_only = true;
    const auto data = pattern(512, 11);
    Chain w;
    w.out(header(kBlkTOut, 0)).out(data).in(1);
    EXPECT_EQ(execute(w).status, kBlkSIoErr);
    EXPECT_EQ(w.status_byte(), kBlkSIoErr);
    EXPECT_EQ(file_bytes(0, 512), std::vector<uint8_t>(512, 0));

    fill_file(0, data);
    Chain z;
    z.out(header(kBlkTWriteZeroes, 0)).out(segment(0, 1, 0)).in(1);
    EXPECT_EQ(execute(z).status, kBlkSIoErr);
    EXPECT_EQ(file_bytes(0, 512), data);
    Chain d;
    d.out(header(kBlkTDiscard, 0)).out(segment(0, 1, 0)).in(1);
    EXPECT_EQ(execute(d).status, kBlkSIoErr);
    EXPECT_EQ(file_bytes(0, 512), data);

    // Reads still work.
    Chain r;
    r.out(header(kBlkTIn, 0)).in(513);
    EXPECT_EQ(execute(r).status, kBlkSOk);
    EXPECT_EQ(slice(r.in_bytes(), 0, 512), data);
}

TEST_F(VirtioBlkRequestTest, Flush) {
    Chain f;
    f.out(header(kBlkTFlush, 0)).in(1);
    const auto o = execute(f);
    EXPECT_EQ(o.status, kBlkSOk);
    EXPECT_EQ(o.written, 1u);
    EXPECT_EQ(f.status_byte(), kBlkSOk);
}

TEST_F(VirtioBlkRequestTest, GetIdWritesTheSerialZeroPadded) {
    Chain g;
    g.out(header(kBlkTGetId, 0)).in(kBlkIdBytes).in(1);
    const auto o = execute(g);
    EXPECT_EQ(o.status, kBlkSOk);
    EXPECT_EQ(o.written, kBlkIdBytes + 1);
    std::vector<uint8_t> want(kBlkIdBytes, 0);
    std::memcpy(want.data(), "vub-serial-1", 12);
    EXPECT_EQ(slice(g.in_bytes(), 0, kBlkIdBytes), want);
    EXPECT_EQ(g.status_byte(), kBlkSOk);

    // A shorter buffer gets what fits; the rest is untouched.
    Chain shorter;
    shorter.out(header(kBlkTGetId, 0)).in(5).in(1);
    const auto so = execute(shorter);
    EXPECT_EQ(so.written, 6u);
    EXPECT_EQ(slice(shorter.in_bytes(), 0, 5), slice(want, 0, 5));

    // A longer serial is cut at 20 bytes; a longer buffer is not written past them.
    cfg_.serial = std::string(30, 'S');
    Chain longer;
    longer.out(header(kBlkTGetId, 0)).in(32);
    const auto lo = execute(longer);
    EXPECT_EQ(lo.written, kBlkIdBytes + 1);
    const auto got = longer.in_bytes();
    EXPECT_EQ(slice(got, 0, kBlkIdBytes), std::vector<uint8_t>(kBlkIdBytes, 'S'));
    EXPECT_EQ(slice(got, kBlkIdBytes, 11), std::vector<uint8_t>(11, 0xee));
    EXPECT_EQ(got.back(), kBlkSOk);
}

TEST_F(VirtioBlkRequestTest, WriteZeroesZeroesTheRangeOnly) {
    const auto data = pattern(8 * 512, 42);
    for (uint32_t flags : {0u, 1u}) {  // with and without unmap
        SCOPED_TRACE(flags);
        fill_file(0, data);
        Chain z;
        z.out(header(kBlkTWriteZeroes, 0)).out(segment(2, 3, flags)).in(1);
        const auto o = execute(z, flags == 1);
        EXPECT_EQ(o.status, kBlkSOk);
        EXPECT_EQ(z.status_byte(), kBlkSOk);
        const auto got = file_bytes(0, data.size());
        EXPECT_EQ(slice(got, 0, 1024), slice(data, 0, 1024));
        EXPECT_EQ(slice(got, 1024, 1536), std::vector<uint8_t>(1536, 0));
        EXPECT_EQ(slice(got, 2560, 1536), slice(data, 2560, 1536));
    }
}

TEST_F(VirtioBlkRequestTest, DiscardAndWriteZeroesSegmentRules) {
    struct Case {
        const char* what;
        uint32_t type;
        std::vector<uint8_t> payload;
        uint8_t status;
    };
    std::vector<uint8_t> two = segment(0, 1, 0);
    const auto second = segment(8, 1, 0);
    two.insert(two.end(), second.begin(), second.end());
    const Case cases[] = {
        {"discard", kBlkTDiscard, segment(0, 8, 0), kBlkSOk},
        {"discard with unmap", kBlkTDiscard, segment(0, 8, 1), kBlkSUnsupp},
        {"discard, unknown flag", kBlkTDiscard, segment(0, 8, 2), kBlkSUnsupp},
        {"write zeroes, unknown flag", kBlkTWriteZeroes, segment(0, 8, 0x80000000u), kBlkSUnsupp},
        {"write zeroes, 2 segments", kBlkTWriteZeroes, two, kBlkSUnsupp},
        {"discard, 2 segments", kBlkTDiscard, two, kBlkSUnsupp},
        {"no segment", kBlkTWriteZeroes, {}, kBlkSUnsupp},
        {"partial segment", kBlkTWriteZeroes, std::vector<uint8_t>(8), kBlkSUnsupp},
        {"past the end", kBlkTWriteZeroes, segment(kFileSize / 512 - 1, 2, 0), kBlkSIoErr},
        {"over the segment limit", kBlkTWriteZeroes, segment(0, kBlkMaxZeroSectors + 1, 0), kBlkSIoErr},
    };
    const auto data = pattern(8 * 512, 9);
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        fill_file(0, data);
        Chain ch;
        ch.out(header(c.type, 0));
        if (!c.payload.empty()) ch.out(c.payload);
        ch.in(1);
        const auto o = execute(ch);
        EXPECT_EQ(o.status, c.status);
        EXPECT_EQ(ch.status_byte(), c.status);
        EXPECT_EQ(o.written, 1u);
        if (c.type == kBlkTWriteZeroes && c.status != kBlkSOk) {
            EXPECT_EQ(file_bytes(0, data.size()), data);  // refused: nothing zeroed
        }
    }
}

TEST_F(VirtioBlkRequestTest, UnknownTypeIsUnsupported) {
    for (uint32_t type : {2u, 7u, 99u, 0xffffffffu}) {
        SCOPED_TRACE(type);
        Chain c;
        c.out(header(type, 0)).in(64).in(1);
        const auto o = execute(c);
        EXPECT_EQ(o.status, kBlkSUnsupp);
        EXPECT_EQ(o.written, 1u);
        EXPECT_EQ(c.status_byte(), kBlkSUnsupp);
        EXPECT_EQ(slice(c.in_bytes(), 0, 64), std::vector<uint8_t>(64, 0xee));  // data untouched
    }
}

// The status byte is the last byte of the writable buffers even when the
// last buffer holds data too, and the chain's iovecs are trimmed.
TEST_F(VirtioBlkRequestTest, StatusByteIsTheLastWritableByte) {
    const auto data = pattern(512, 77);
    fill_file(0, data);
    Chain r;
    r.out(header(kBlkTIn, 0)).in(200).in(313);  // 512 data + 1 status, status shares a buffer
    const auto o = execute(r);
    EXPECT_EQ(o.status, kBlkSOk);
    const auto got = r.in_bytes();
    ASSERT_EQ(got.size(), 513u);
    EXPECT_EQ(slice(got, 0, 512), data);
    EXPECT_EQ(got[512], kBlkSOk);
    // Trimmed in place: 512 bytes of data left, no header on the out side.
    uint64_t in_left = 0;
    for (const iovec& v : r.chain().in) in_left += v.iov_len;
    EXPECT_EQ(in_left, 512u);
    uint64_t out_left = 0;
    for (const iovec& v : r.chain().out) out_left += v.iov_len;
    EXPECT_EQ(out_left, 0u);

    // An error status lands there too (the byte was not 0 before).
    Chain bad;
    bad.out(header(kBlkTIn, kFileSize / 512)).in(512).in(1);
    EXPECT_EQ(execute(bad).status, kBlkSIoErr);
    EXPECT_EQ(bad.status_byte(), kBlkSIoErr);
}

}  // namespace
}  // namespace ioplane::vhost_user
