#include "virtio_blk.h"

#include <algorithm>
#include <cstring>

#include "ioplane/core/log.h"
#include "ioplane/core/thread_contract.h"

namespace ioplane::vhost_user {

namespace {

template <class T>
void put(std::array<uint8_t, kBlkConfigSize>& c, size_t offset, T v) {
    std::memcpy(c.data() + offset, &v, sizeof v);  // little-endian host (x86-64)
}

// Copies `len` bytes at `offset` of the buffers into `dst`; false if short.
bool copy_from(std::span<const iovec> iov, size_t offset, void* dst, size_t len) {
    auto* out = static_cast<uint8_t*>(dst);
    for (const iovec& v : iov) {
        if (offset >= v.iov_len) {
            offset -= v.iov_len;
            continue;
        }
        const size_t n = std::min(len, v.iov_len - offset);
        std::memcpy(out, static_cast<const uint8_t*>(v.iov_base) + offset, n);
        out += n;
        len -= n;
        offset = 0;
        if (len == 0) return true;
    }
    return len == 0;
}

// Copies `len` bytes into the start of the buffers (which hold at least that).
void copy_to(std::span<const iovec> iov, const void* src, size_t len) {
    const auto* in = static_cast<const uint8_t*>(src);
    for (const iovec& v : iov) {
        const size_t n = std::min(len, v.iov_len);
        std::memcpy(v.iov_base, in, n);
        in += n;
        len -= n;
        if (len == 0) return;
    }
}

// Drops `n` bytes from the front of the buffers.
void drop_front(std::vector<iovec>& iov, size_t n) {
    size_t i = 0;
    while (n > 0 && i < iov.size()) {
        const size_t k = std::min(n, iov[i].iov_len);
        iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + k;
        iov[i].iov_len -= k;
        n -= k;
        if (iov[i].iov_len == 0) i++;
    }
    iov.erase(iov.begin(), iov.begin() + ptrdiff_t(i));
}

// Drops the last byte (the status byte) and returns where it is.
uint8_t* take_status_byte(std::vector<iovec>& iov) {
    while (iov.back().iov_len == 0) iov.pop_back();  // well-formed: some buffer has a byte
    iovec& last = iov.back();
    uint8_t* status = static_cast<uint8_t*>(last.iov_base) + last.iov_len - 1;
    if (--last.iov_len == 0) iov.pop_back();
    return status;
}

struct RequestHeader {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

// A data range in bytes, checked against the device: sector and length in
// whole logical blocks, inside the capacity.
bool data_range(const BlkDeviceConfig& config, uint64_t sector, uint64_t bytes, uint64_t& offset) {
    if (sector > UINT64_MAX / 512) return false;
    offset = sector * 512;
    const uint64_t lbs = config.logical_block_size;
    return offset % lbs == 0 && bytes % lbs == 0 && offset <= config.size_bytes &&
           bytes <= config.size_bytes - offset;
}

Task<uint8_t> discard_or_zero(block::BlockBackend& blk, const BlkDeviceConfig& config, bool zeroes, bool writethrough,
                              std::span<const iovec> segments, uint64_t bytes) {
    // Segments: le64 sector, le32 num_sectors, le32 flags (bit 0: unmap).
    if (bytes == 0 || bytes % 16 || bytes / 16 > 1) co_return kBlkSUnsupp;  // max_*_seg is 1
    struct {
        uint64_t sector;
        uint32_t num_sectors;
        uint32_t flags;
    } seg;
    static_assert(sizeof seg == 16);
    if (!copy_from(segments, 0, &seg, sizeof seg)) co_return kBlkSIoErr;
    if (seg.flags & ~1u) co_return kBlkSUnsupp;
    const bool unmap = seg.flags & 1u;
    if (!zeroes && unmap) co_return kBlkSUnsupp;
    if (config.read_only) co_return kBlkSIoErr;
    uint64_t offset;
    if (seg.num_sectors > kBlkMaxZeroSectors || !data_range(config, seg.sector, uint64_t(seg.num_sectors) * 512, offset))
        co_return kBlkSIoErr;
    const uint64_t len = uint64_t(seg.num_sectors) * 512;
    Result<void> r;
    if (zeroes) {
        uint32_t flags = (unmap ? uint32_t(block::kMayUnmap) : 0u) | (writethrough ? uint32_t(block::kWriteFua) : 0u);
        r = co_await blk.co_pwrite_zeroes(offset, len, flags);
    } else {
        r = co_await blk.co_pdiscard(offset, len);
        // Discard is a hint: a node that cannot discard has still done what
        // the guest may rely on.
        if (!r && r.error().code == ENOTSUP) r = {};
    }
    co_return r ? kBlkSOk : kBlkSIoErr;
}

}  // namespace

uint64_t device_features(const BlkDeviceConfig& config) {
    // SIZE_MAX and TOPOLOGY as qemu-storage-daemon offers them: QEMU keeps
    // the features a guest negotiated across back-end reconnects, so a
    // daemon taking over its socket must offer them too.
    uint64_t f = kFVersion1 | kFRingIndirectDesc | kFRingEventIdx | kFProtocolFeatures | kBlkFSizeMax | kBlkFSegMax |
                 kBlkFBlkSize | kBlkFFlush | kBlkFTopology | kBlkFConfigWce | kBlkFMq | kBlkFDiscard |
                 kBlkFWriteZeroes;
    if (config.read_only) f |= kBlkFRo;
    return f;
}

uint32_t blk_size_max(uint32_t seg_max) {
    IOPLANE_ASSERT(seg_max >= 1 && seg_max <= kBlkMaxAdvertisedRequestBytes / 4096);
    // With QEMU's seg_max of 126, 256 KiB segments make requests of up to
    // 31.5 MiB, far above what guests send (Linux: 1280 KiB unless raised).
    return std::min<uint32_t>(256 * 1024, kBlkMaxAdvertisedRequestBytes / seg_max / 4096 * 4096);
}

std::array<uint8_t, kBlkConfigSize> encode_config(const BlkDeviceConfig& c, bool writeback) {
    std::array<uint8_t, kBlkConfigSize> out{};
    put<uint64_t>(out, 0, c.size_bytes / 512);  // capacity, in 512-byte sectors
    put<uint32_t>(out, 8, blk_size_max(c.seg_max));
    put<uint32_t>(out, 12, c.seg_max);
    put<uint32_t>(out, 20, c.logical_block_size);
    // Topology: physical blocks of one logical block, aligned, any multiple
    // of one block is a good size (min_io_size 1, no opt_io_size).
    put<uint16_t>(out, 26, 1);
    out[kBlkConfigWritebackOffset] = writeback ? 1 : 0;  // 1: the guest must flush; 0: every write is durable on completion
    put<uint16_t>(out, 34, c.num_queues);
    put<uint32_t>(out, 36, kBlkMaxZeroSectors);  // max_discard_sectors
    put<uint32_t>(out, 40, 1);                   // max_discard_seg
    put<uint32_t>(out, 44, c.logical_block_size / 512);  // discard_sector_alignment
    put<uint32_t>(out, 48, kBlkMaxZeroSectors);  // max_write_zeroes_sectors
    put<uint32_t>(out, 52, 1);                   // max_write_zeroes_seg
    out[56] = 1;                                 // write_zeroes_may_unmap
    return out;
}

bool blk_chain_is_well_formed(const DescriptorChain& chain) {
    return chain.out_bytes >= kBlkHeaderSize && chain.in_bytes >= 1;
}

Task<BlkOutcome> execute_blk_request(block::BlockBackend& blk, const BlkDeviceConfig& config, bool writethrough,
                                     DescriptorChain& chain) {
    RequestHeader h;
    copy_from(chain.out, 0, &h, sizeof h);  // well-formed: the header is there
    drop_front(chain.out, kBlkHeaderSize);
    const uint64_t out_bytes = chain.out_bytes - kBlkHeaderSize;
    const uint64_t in_bytes = chain.in_bytes - 1;
    uint8_t* status = take_status_byte(chain.in);
    BlkOutcome o{kBlkSOk, 1};
    uint64_t offset;
    switch (h.type) {
    case kBlkTIn:
        if (in_bytes > kBlkMaxDataBytes || !data_range(config, h.sector, in_bytes, offset)) {
            o.status = kBlkSIoErr;  // nothing but the status byte written
        } else {
            if (in_bytes > 0) {
                auto r = co_await blk.co_preadv(offset, in_bytes, chain.in);
                o.status = r ? kBlkSOk : kBlkSIoErr;
            }
            // Also after a failed read: the length says what may have been
            // written, and the status that the guest must not rely on it.
            o.written = uint32_t(in_bytes + 1);  // in_bytes <= kBlkMaxDataBytes
        }
        break;
    case kBlkTOut:
        if (config.read_only || out_bytes > kBlkMaxDataBytes || !data_range(config, h.sector, out_bytes, offset)) {
            o.status = kBlkSIoErr;
        } else if (out_bytes > 0) {
            auto r = co_await blk.co_pwritev(offset, out_bytes, chain.out, writethrough ? uint32_t(block::kWriteFua) : 0u);
            o.status = r ? kBlkSOk : kBlkSIoErr;
        }
        break;
    case kBlkTFlush: {
        auto r = co_await blk.co_flush();
        o.status = r ? kBlkSOk : kBlkSIoErr;
        break;
    }
    case kBlkTGetId: {
        // The id is zero-padded to 20 bytes; the guest's buffer may be shorter.
        std::array<char, kBlkIdBytes> id{};
        std::memcpy(id.data(), config.serial.data(), std::min(config.serial.size(), id.size()));
        const size_t n = std::min<uint64_t>(in_bytes, id.size());
        copy_to(chain.in, id.data(), n);
        o.written = uint32_t(n + 1);
        break;
    }
    case kBlkTDiscard:
    case kBlkTWriteZeroes:
        o.status = co_await discard_or_zero(blk, config, h.type == kBlkTWriteZeroes, writethrough, chain.out, out_bytes);
        break;
    default:
        o.status = kBlkSUnsupp;
        break;
    }
    // The status byte is guest memory: one plain store, the used index's
    // release store publishes it.
    *status = o.status;
    co_return o;
}

}  // namespace ioplane::vhost_user
