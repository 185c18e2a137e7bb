#include "checks.h"

#include <algorithm>
#include <cstring>

#include "options.h"
#include "pattern.h"

namespace ioplane::vublk {

namespace {

constexpr unsigned kBlocks = 8;

// The block the checks work in: at least 4 KiB, the device's block size and
// its discard alignment.
uint32_t unit_of(const DeviceLimits& l) {
    uint64_t u = std::max<uint64_t>(4096, l.blk_size);
    if (l.discard) u = std::max<uint64_t>(u, uint64_t(l.discard_sector_alignment) * kSectorSize);
    return uint32_t(std::min<uint64_t>(u, 1 << 20));
}

// A check's steps; each returns an error message or nothing.
class Checker {
public:
    Checker(QueueRunner& r, const DeviceLimits& l, uint64_t offset, uint32_t seed)
        : r_(r), l_(l), unit_(unit_of(l)), base_(offset), seed_(seed) {}

    uint32_t unit() const { return unit_; }
    bool broken() const { return broken_; }

    // Executes `req`, which must complete with `want` status.
    std::optional<std::string> expect(const BlkRequest& req, uint8_t want, const std::string& what) {
        auto c = r_.execute(0, req);
        if (!c) {
            broken_ = true;
            return what + ": " + c.error();
        }
        if (c->status != want) return what + ": status " + status_name(c->status) + ", expected " + status_name(want);
        return std::nullopt;
    }
    std::optional<std::string> rw(BlkOp op, uint64_t offset, uint32_t bytes, const std::string& what) {
        auto segs = l_.segments_for(bytes, std::min<uint32_t>(4, bytes / kSectorSize));
        if (!segs) return what + ": " + segs.error();
        BlkRequest req;
        req.op = op;
        req.sector = offset / kSectorSize;
        req.bytes = bytes;
        req.data_segments = *segs;
        return expect(req, kBlkSOk, what);
    }
    // Writes blocks [first, first+n) of the area with generation `gen`.
    std::optional<std::string> write_blocks(unsigned first, unsigned n, uint32_t gen) {
        const uint64_t off = base_ + uint64_t(first) * unit_;
        fill_pattern({r_.slot(0).data(), size_t(n) * unit_}, off, gen, seed_);
        return rw(BlkOp::kWrite, off, n * unit_, "write of " + std::to_string(n * unit_) + " bytes at " + std::to_string(off));
    }
    // Reads blocks [first, first+n) into the buffer.
    std::optional<std::string> read_blocks(unsigned first, unsigned n) {
        const uint64_t off = base_ + uint64_t(first) * unit_;
        std::memset(r_.slot(0).data(), 0xa5, size_t(n) * unit_);
        return rw(BlkOp::kRead, off, n * unit_, "read of " + std::to_string(n * unit_) + " bytes at " + std::to_string(off));
    }
    // After read_blocks(0, kBlocks): block i of the buffer holds generation
    // gen, or zeroes when zero[i].
    std::optional<std::string> compare(uint32_t gen, const bool (&zero)[kBlocks]) {
        for (unsigned i = 0; i < kBlocks; i++) {
            const uint8_t* b = r_.slot(0).data() + size_t(i) * unit_;
            if (zero[i]) {
                if (std::any_of(b, b + unit_, [](uint8_t x) { return x != 0; }))
                    return "block at " + std::to_string(base_ + uint64_t(i) * unit_) + " is not zeroes";
            } else if (auto bad = check_pattern({b, unit_}, base_ + uint64_t(i) * unit_, gen, seed_)) {
                return *bad;
            }
        }
        return std::nullopt;
    }
    // After read_blocks(block, 1): the buffer holds that block's generation gen.
    std::optional<std::string> compare_one(unsigned block, uint32_t gen) {
        return check_pattern({r_.slot(0).data(), unit_}, base_ + uint64_t(block) * unit_, gen, seed_);
    }
    BlkRange range(unsigned first, unsigned n) const {
        return {(base_ + uint64_t(first) * unit_) / kSectorSize, n * unit_ / kSectorSize};
    }

private:
    QueueRunner& r_;
    const DeviceLimits& l_;
    uint32_t unit_;
    uint64_t base_;
    uint32_t seed_;
    bool broken_ = false;
};

using Step = std::optional<std::string>;

Step check_rw(Checker& k, const DeviceLimits& l, QueueRunner& r, uint32_t seed) {
    if (auto e = k.write_blocks(0, kBlocks, 1)) return e;
    if (auto e = k.read_blocks(0, kBlocks)) return e;
    static constexpr bool kNone[kBlocks] = {};
    if (auto e = k.compare(1, kNone)) return "whole read: " + *e;
    // Block by block: single-block chains over the same data.
    for (unsigned i = 0; i < kBlocks; i++) {
        if (auto e = k.read_blocks(i, 1)) return e;
        if (auto e = k.compare_one(i, 1)) return "block read: " + *e;
    }
    // The last block of the device: the boundary a back end must not cut short.
    const uint32_t u = k.unit();
    if (l.capacity_bytes >= u) {
        const uint64_t last = (l.capacity_bytes - u) / kSectorSize * kSectorSize;
        fill_pattern({r.slot(0).data(), u}, last, 2, seed);
        if (auto e = k.rw(BlkOp::kWrite, last, u, "write of the last block")) return e;
        std::memset(r.slot(0).data(), 0xa5, u);
        if (auto e = k.rw(BlkOp::kRead, last, u, "read of the last block")) return e;
        if (auto bad = check_pattern({r.slot(0).data(), u}, last, 2, seed)) return "last block: " + *bad;
    }
    return std::nullopt;
}

Step check_flush(Checker& k) {
    BlkRequest req;
    req.op = BlkOp::kFlush;
    return k.expect(req, kBlkSOk, "flush");
}

Step check_get_id(Checker& k, QueueRunner& r, std::string& id) {
    BlkRequest req;
    req.op = BlkOp::kGetId;
    std::memset(r.slot(0).data(), 0, kBlkIdBytes);
    if (auto e = k.expect(req, kBlkSOk, "get-id")) return e;
    const char* s = reinterpret_cast<const char*>(r.slot(0).data());
    id.assign(s, strnlen(s, kBlkIdBytes));
    for (char c : id)
        if (c < 0x20 || c > 0x7e) return "get-id: the id holds a non-printable byte";
    return std::nullopt;
}

Step check_write_zeroes(Checker& k, const DeviceLimits& l) {
    bool zero[kBlocks] = {};
    if (auto e = k.write_blocks(0, kBlocks, 3)) return e;
    BlkRequest req;
    req.op = BlkOp::kWriteZeroes;
    const BlkRange two = k.range(1, 2), one = k.range(5, 1);
    req.ranges = {&two, 1};
    if (auto e = k.expect(req, kBlkSOk, "write-zeroes of blocks 1-2")) return e;
    req.ranges = {&one, 1};
    req.unmap = true;
    if (auto e = k.expect(req, kBlkSOk, "write-zeroes with unmap of block 5")) return e;
    zero[1] = zero[2] = zero[5] = true;
    if (l.max_write_zeroes_seg >= 2) {
        const BlkRange pair[2] = {k.range(3, 1), k.range(7, 1)};
        req.ranges = pair;
        req.unmap = false;
        if (auto e = k.expect(req, kBlkSOk, "write-zeroes of blocks 3 and 7 in one request")) return e;
        zero[3] = zero[7] = true;
    }
    if (auto e = k.read_blocks(0, kBlocks)) return e;
    return k.compare(3, zero);
}

Step check_discard(Checker& k) {
    if (auto e = k.write_blocks(0, kBlocks, 4)) return e;
    BlkRequest req;
    req.op = BlkOp::kDiscard;
    const BlkRange r = k.range(2, 2);
    req.ranges = {&r, 1};
    if (auto e = k.expect(req, kBlkSOk, "discard of blocks 2-3")) return e;
    // A discarded range reads as anything (but the read must succeed); the
    // blocks around it keep their data.
    for (unsigned i = 0; i < kBlocks; i++) {
        if (auto e = k.read_blocks(i, 1)) return e;
        if (i == 2 || i == 3) continue;
        if (auto e = k.compare_one(i, 4)) return "after discard: " + *e;
    }
    return std::nullopt;
}

}  // namespace

uint32_t check_buffer_bytes(const DeviceLimits& l) { return kBlocks * unit_of(l); }

std::vector<CheckResult> run_checks(QueueRunner& runner, const DeviceLimits& l, unsigned mask, uint64_t offset,
                                    uint32_t seed) {
    std::vector<CheckResult> out;
    Checker k(runner, l, offset, seed);
    auto add = [&](const char* name, Step failure, std::string detail = {}) {
        if (failure) out.push_back({name, CheckResult::kFailed, *failure});
        else out.push_back({name, CheckResult::kOk, std::move(detail)});
    };
    auto skip = [&](const char* name, const char* why) { out.push_back({name, CheckResult::kSkipped, why}); };

    const bool area_fits = offset + uint64_t(kBlocks) * k.unit() <= l.capacity_bytes;
    const bool writable = !l.read_only;
    if (mask & kCheckRw) {
        if (!area_fits) skip("rw", "the check area does not fit in the device");
        else if (!writable) skip("rw", "read-only device");
        else add("rw", check_rw(k, l, runner, seed));
    }
    if ((mask & kCheckFlush) && !k.broken()) {
        if (!l.flush) skip("flush", "VIRTIO_BLK_F_FLUSH not offered");
        else add("flush", check_flush(k));
    }
    if ((mask & kCheckGetId) && !k.broken()) {
        std::string id;
        auto e = check_get_id(k, runner, id);
        add("get-id", e, "id '" + id + "'");
    }
    if ((mask & kCheckWriteZeroes) && !k.broken()) {
        if (!l.write_zeroes) skip("write-zeroes", "VIRTIO_BLK_F_WRITE_ZEROES not offered");
        else if (!area_fits || !writable) skip("write-zeroes", "no writable check area");
        else if (l.max_write_zeroes_sectors < 2 * k.unit() / kSectorSize) skip("write-zeroes", "max_write_zeroes_sectors too small");
        else add("write-zeroes", check_write_zeroes(k, l));
    }
    if ((mask & kCheckDiscard) && !k.broken()) {
        if (!l.discard) skip("discard", "VIRTIO_BLK_F_DISCARD not offered");
        else if (!area_fits || !writable) skip("discard", "no writable check area");
        else if (l.max_discard_sectors < 2 * k.unit() / kSectorSize) skip("discard", "max_discard_sectors too small");
        else add("discard", check_discard(k));
    }
    return out;
}

}  // namespace ioplane::vublk
