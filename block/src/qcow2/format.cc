#include "format.h"

#include <algorithm>
#include <cstring>

namespace ioplane::block::qcow2 {
namespace {

constexpr uint64_t kMaxSnapshotTableBytes = 64u << 20;  // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
constexpr size_t kSnapshotFixedBytes = 40;

uint64_t align_up8(uint64_t v) { return (v + 7) & ~uint64_t(7); }

Error bad(const std::string& what) { return Error{EINVAL, "qcow2: " + what}; }

bool aligned(uint64_t offset, const Header& h) { return (offset & (h.cluster_size() - 1)) == 0; }

// A table of `bytes` at `offset`: cluster aligned and inside the file.
Result<void> check_table(const Header& h, uint64_t offset, uint64_t bytes, uint64_t file_size, const char* what) {
    if (!aligned(offset, h)) return std::unexpected(bad(std::string(what) + " offset is not cluster aligned"));
    if (offset > kMaxHostOffset || bytes > file_size || offset > file_size - bytes)
        return std::unexpected(bad(std::string(what) + " is past the end of the image file"));
    return {};
}

Result<void> parse_extensions(std::span<const uint8_t> cluster, uint64_t start, uint64_t end, Header& h) {
    uint64_t pos = start;
    while (pos + 8 <= end) {
        const uint32_t type = load_be32(&cluster[pos]);
        const uint32_t len = load_be32(&cluster[pos + 4]);
        pos += 8;
        if (type == kExtEnd) return {};
        if (len > end - pos) return std::unexpected(bad("header extension past the end of the first cluster"));
        HeaderExtension ext{type, std::vector<uint8_t>(cluster.begin() + pos, cluster.begin() + pos + len)};
        if (type == kExtBackingFormat) {
            h.backing_format.assign(ext.data.begin(), ext.data.end());
            if (h.backing_format.find('\0') != std::string::npos)
                return std::unexpected(bad("backing format name holds a NUL byte"));
        } else if (type == kExtDataFile) {
            return std::unexpected(Error{ENOTSUP, "qcow2: external data files are not supported"});
        } else if (type == kExtCrypto) {
            return std::unexpected(Error{ENOTSUP, "qcow2: encrypted images are not supported"});
        } else if (type == kExtBitmaps) {
            // QEMU checks the extension only when the autoclear bit says it
            // is current (a v2 image has no such bit).
            if (!(h.autoclear_features & kAutoclearBitmaps)) {
                h.stale_bitmaps = true;
            } else {
                auto bitmaps = parse_bitmaps_extension(ext.data, h.cluster_size());
                if (!bitmaps) return std::unexpected(bitmaps.error());
                h.bitmaps = *bitmaps;
            }
        } else {
            h.extensions.push_back(std::move(ext));
        }
        pos += align_up8(len);
    }
    return std::unexpected(bad("header extensions have no end marker"));
}

}  // namespace

uint16_t load_be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t load_be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
uint64_t load_be64(const uint8_t* p) { return uint64_t(load_be32(p)) << 32 | load_be32(p + 4); }
void store_be16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
void store_be32(uint8_t* p, uint32_t v) {
    store_be16(p, uint16_t(v >> 16));
    store_be16(p + 2, uint16_t(v));
}
void store_be64(uint8_t* p, uint64_t v) {
    store_be32(p, uint32_t(v >> 32));
    store_be32(p + 4, uint32_t(v));
}

Result<Header> parse_header(std::span<const uint8_t> head, uint64_t file_size) {
    if (head.size() < kV2HeaderLength) return std::unexpected(bad("image is too small for a header"));
    const uint8_t* p = head.data();
    if (load_be32(p) != kMagic) return std::unexpected(bad("bad magic (not a qcow2 image)"));
    Header h;
    h.version = load_be32(p + 4);
    if (h.version != 2 && h.version != 3)
        return std::unexpected(Error{ENOTSUP, "qcow2: unsupported version " + std::to_string(h.version)});
    h.backing_file_offset = load_be64(p + 8);
    h.backing_file_size = load_be32(p + 16);
    h.cluster_bits = load_be32(p + 20);
    h.size = load_be64(p + 24);
    h.crypt_method = load_be32(p + 32);
    h.l1_size = load_be32(p + 36);
    h.l1_table_offset = load_be64(p + 40);
    h.refcount_table_offset = load_be64(p + 48);
    h.refcount_table_clusters = load_be32(p + 56);
    h.nb_snapshots = load_be32(p + 60);
    h.snapshots_offset = load_be64(p + 64);
    if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
        return std::unexpected(bad("unsupported cluster size: 2^" + std::to_string(h.cluster_bits)));
    const uint64_t cluster_size = h.cluster_size();
    // Extensions and the backing file name live in the first cluster.
    const uint64_t first = std::min<uint64_t>(cluster_size, head.size());
    if (h.version == 2) {
        h.header_length = kV2HeaderLength;
    } else {
        if (head.size() < kV3HeaderLength) return std::unexpected(bad("image is too small for a version 3 header"));
        h.incompatible_features = load_be64(p + 72);
        h.compatible_features = load_be64(p + 80);
        h.autoclear_features = load_be64(p + 88);
        h.refcount_order = load_be32(p + 96);
        h.header_length = load_be32(p + 100);
        if (h.header_length < kV3HeaderLength || h.header_length > first)
            return std::unexpected(bad("invalid header length " + std::to_string(h.header_length)));
        if (h.header_length > kV3HeaderLength) h.compression = Compression(p[104]);
    }
    if (h.crypt_method != 0) return std::unexpected(Error{ENOTSUP, "qcow2: encrypted images are not supported"});
    if (const uint64_t unknown = h.incompatible_features & ~kIncompatKnown; unknown != 0)
        return std::unexpected(Error{ENOTSUP, "qcow2: unsupported incompatible features 0x" + [&] {
                                                  char buf[20];
                                                  std::snprintf(buf, sizeof buf, "%llx", (unsigned long long)unknown);
                                                  return std::string(buf);
                                              }()});
    if (h.incompatible_features & kIncompatDataFile)
        return std::unexpected(Error{ENOTSUP, "qcow2: external data files are not supported"});
    if (h.refcount_order > 6) return std::unexpected(bad("refcount width 2^" + std::to_string(h.refcount_order)));
    const bool compression_bit = h.incompatible_features & kIncompatCompression;
    if (h.compression != Compression::zlib && h.compression != Compression::zstd)
        return std::unexpected(Error{ENOTSUP, "qcow2: unknown compression type " + std::to_string(int(h.compression))});
    if ((h.compression != Compression::zlib) != compression_bit)
        return std::unexpected(bad("compression type and its incompatible feature bit disagree"));
    if (h.extended_l2() && h.cluster_bits < 14)
        return std::unexpected(bad("extended L2 entries need clusters of at least 16 KiB"));

    // Tables: QEMU's limits first, then the file's bounds.
    if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) return std::unexpected(bad("L1 table is too large"));
    // Enough L1 entries for the virtual size (and no size that overflows).
    const uint64_t l2_coverage_bits = h.cluster_bits + (h.cluster_bits - (h.extended_l2() ? 4 : 3));
    if (h.size > (uint64_t(h.l1_size) << l2_coverage_bits) || h.size > (1ull << 62))
        return std::unexpected(bad("L1 table is too small for the image size"));
    if (auto r = check_table(h, h.l1_table_offset, uint64_t(h.l1_size) * 8, file_size, "L1 table"); !r && h.l1_size)
        return std::unexpected(r.error());
    const uint64_t reftable_bytes = uint64_t(h.refcount_table_clusters) * cluster_size;
    if (reftable_bytes > kMaxRefcountTableBytes) return std::unexpected(bad("refcount table is too large"));
    if (h.refcount_table_clusters == 0) return std::unexpected(bad("image has no refcount table"));
    if (auto r = check_table(h, h.refcount_table_offset, reftable_bytes, file_size, "refcount table"); !r)
        return std::unexpected(r.error());
    if (h.nb_snapshots > kMaxSnapshots) return std::unexpected(bad("too many snapshots"));
    if (h.nb_snapshots && !aligned(h.snapshots_offset, h))
        return std::unexpected(bad("snapshot table offset is not cluster aligned"));
    if (h.nb_snapshots && h.snapshots_offset >= file_size)
        return std::unexpected(bad("snapshot table is past the end of the image file"));

    if (auto r = parse_extensions(head.first(first), h.header_length, h.backing_file_offset ? std::min<uint64_t>(h.backing_file_offset, first) : first, h);
        !r)
        return std::unexpected(r.error());
    if (h.backing_file_offset) {
        if (h.backing_file_size > kMaxBackingFileName) return std::unexpected(bad("backing file name is too long"));
        if (h.backing_file_offset > first || h.backing_file_size > first - h.backing_file_offset)
            return std::unexpected(bad("backing file name is outside the first cluster"));
        h.backing_file.assign(reinterpret_cast<const char*>(p + h.backing_file_offset), h.backing_file_size);
        if (h.backing_file.find('\0') != std::string::npos)
            return std::unexpected(bad("backing file name holds a NUL byte"));
    }
    return h;
}

Result<std::vector<uint8_t>> encode_header(const Header& h) {
    std::vector<uint8_t> out(h.cluster_size(), 0);
    uint8_t* p = out.data();
    store_be32(p, kMagic);
    store_be32(p + 4, h.version);
    store_be32(p + 16, uint32_t(h.backing_file.size()));
    store_be32(p + 20, h.cluster_bits);
    store_be64(p + 24, h.size);
    store_be32(p + 32, h.crypt_method);
    store_be32(p + 36, h.l1_size);
    store_be64(p + 40, h.l1_table_offset);
    store_be64(p + 48, h.refcount_table_offset);
    store_be32(p + 56, h.refcount_table_clusters);
    store_be32(p + 60, h.nb_snapshots);
    store_be64(p + 64, h.snapshots_offset);
    uint64_t pos = kV2HeaderLength;
    if (h.version == 3) {
        store_be64(p + 72, h.incompatible_features);
        store_be64(p + 80, h.compatible_features);
        store_be64(p + 88, h.autoclear_features);
        store_be32(p + 96, h.refcount_order);
        // QEMU writes 112 bytes (compression type and padding); an image
        // read with a longer header keeps its length, its tail zeroed.
        const uint32_t length = std::max<uint32_t>(h.header_length, 112);
        if (length > out.size()) return fail(EINVAL, "qcow2: header does not fit in a cluster");
        store_be32(p + 100, length);
        p[104] = uint8_t(h.compression);
        pos = length;
    }
    auto put_extension = [&](uint32_t type, std::span<const uint8_t> data) {
        if (pos + 8 + align_up8(data.size()) > out.size()) return false;
        store_be32(p + pos, type);
        store_be32(p + pos + 4, uint32_t(data.size()));
        // (Not with an empty span, whose data() may be null: the end marker.)
        if (!data.empty()) std::memcpy(p + pos + 8, data.data(), data.size());
        pos += 8 + align_up8(data.size());
        return true;
    };
    bool fits = true;
    if (!h.backing_format.empty())
        fits = put_extension(kExtBackingFormat, std::span(reinterpret_cast<const uint8_t*>(h.backing_format.data()),
                                                          h.backing_format.size()));
    for (const HeaderExtension& ext : h.extensions) fits = fits && put_extension(ext.type, ext.data);
    if (h.bitmaps) fits = fits && put_extension(kExtBitmaps, encode_bitmaps_extension(*h.bitmaps));
    fits = fits && put_extension(kExtEnd, {});
    if (!fits || pos + h.backing_file.size() > out.size())
        return fail(EINVAL, "qcow2: header extensions do not fit in a cluster");
    if (!h.backing_file.empty()) {
        store_be64(p + 8, pos);
        std::memcpy(p + pos, h.backing_file.data(), h.backing_file.size());
    }
    return out;
}

CompressedRef decode_compressed(uint64_t l2_entry, uint32_t cluster_bits) {
    const uint32_t x = 62 - (cluster_bits - 8);
    const uint64_t offset = l2_entry & ((1ull << x) - 1) & kMaxHostOffset;
    const uint64_t sectors = ((l2_entry & ~kOflagCopied & ~kOflagCompressed) >> x) + 1;
    return {offset, sectors * 512 - (offset & 511)};
}

uint64_t get_refcount(const uint8_t* block, uint64_t index, uint32_t order) {
    switch (order) {
        case 0:
        case 1:
        case 2: {
            const uint32_t bits = 1u << order, per_byte = 8 / bits;
            return (block[index / per_byte] >> (bits * (index % per_byte))) & ((1u << bits) - 1);
        }
        case 3: return block[index];
        case 4: return load_be16(block + 2 * index);
        case 5: return load_be32(block + 4 * index);
        default: return load_be64(block + 8 * index);
    }
}

void set_refcount(uint8_t* block, uint64_t index, uint32_t order, uint64_t value) {
    switch (order) {
        case 0:
        case 1:
        case 2: {
            const uint32_t bits = 1u << order, per_byte = 8 / bits, shift = bits * (index % per_byte);
            const uint8_t mask = uint8_t(((1u << bits) - 1) << shift);
            block[index / per_byte] = uint8_t((block[index / per_byte] & ~mask) | ((value << shift) & mask));
            return;
        }
        case 3: block[index] = uint8_t(value); return;
        case 4: store_be16(block + 2 * index, uint16_t(value)); return;
        case 5: store_be32(block + 4 * index, uint32_t(value)); return;
        default: store_be64(block + 8 * index, value); return;
    }
}

uint64_t max_snapshot_table_bytes(uint32_t count) {
    return std::min<uint64_t>(kMaxSnapshotTableBytes, uint64_t(count) * (kSnapshotFixedBytes + kMaxSnapshotExtraData + 2 * 65536));
}

Result<std::vector<Snapshot>> parse_snapshots(std::span<const uint8_t> table, uint32_t count, const Header& h,
                                              uint64_t file_size, uint64_t& table_bytes) {
    std::vector<Snapshot> out;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (table.size() - pos < kSnapshotFixedBytes) return std::unexpected(bad("snapshot table is truncated"));
        const uint8_t* e = table.data() + pos;
        Snapshot s;
        s.l1_table_offset = load_be64(e);
        s.l1_size = load_be32(e + 8);
        const uint16_t id_size = load_be16(e + 12), name_size = load_be16(e + 14);
        s.date_sec = load_be32(e + 16);
        s.date_nsec = load_be32(e + 20);
        s.vm_clock_nsec = load_be64(e + 24);
        s.vm_state_size = load_be32(e + 32);
        const uint32_t extra = load_be32(e + 36);
        if (extra > kMaxSnapshotExtraData) return std::unexpected(bad("snapshot extra data is too large"));
        // The last entry's padding may lie past the end of the file; its
        // extra data and names may not (checked before they are read).
        const uint64_t used = kSnapshotFixedBytes + extra + id_size + name_size;
        if (used > table.size() - pos) return std::unexpected(bad("snapshot table is truncated"));
        s.disk_size = h.size;
        if (extra >= 16) s.disk_size = load_be64(e + kSnapshotFixedBytes + 8);
        if (extra >= 24) s.icount = load_be64(e + kSnapshotFixedBytes + 16);
        const uint64_t entry = std::min<uint64_t>(align_up8(used), table.size() - pos);
        const char* strings = reinterpret_cast<const char*>(e + kSnapshotFixedBytes + extra);
        s.id.assign(strings, id_size);
        s.name.assign(strings + id_size, name_size);
        if (uint64_t(s.l1_size) * 8 > kMaxL1Bytes) return std::unexpected(bad("snapshot L1 table is too large"));
        if (auto r = check_table(h, s.l1_table_offset, uint64_t(s.l1_size) * 8, file_size, "snapshot L1 table");
            !r && s.l1_size)
            return std::unexpected(r.error());
        out.push_back(std::move(s));
        pos += entry;
    }
    table_bytes = pos;
    return out;
}

}  // namespace ioplane::block::qcow2
