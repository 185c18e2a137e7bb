#include "bitmap_dir.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string_view>

#include "format.h"

namespace ioplane::block::qcow2 {
namespace {

constexpr uint8_t kDirtyTrackingBitmap = 1;  // the only bitmap type

Error invalid(const std::string& what) { return Error{EINVAL, what}; }

}  // namespace

Result<BitmapsExtension> parse_bitmaps_extension(std::span<const uint8_t> data, uint64_t cluster_size) {
    if (data.size() != kBitmapsExtensionBytes) return std::unexpected(invalid("bitmaps_ext: Invalid extension length"));
    if (load_be32(data.data() + 4) != 0) return std::unexpected(invalid("bitmaps_ext: Reserved field is not zero"));
    BitmapsExtension ext{.nb_bitmaps = load_be32(data.data()),
                         .directory_size = load_be64(data.data() + 8),
                         .directory_offset = load_be64(data.data() + 16)};
    if (ext.nb_bitmaps > kMaxBitmaps)
        return std::unexpected(invalid("bitmaps_ext: Image has " + std::to_string(ext.nb_bitmaps) +
                                       " bitmaps, exceeding the QEMU supported maximum of " +
                                       std::to_string(kMaxBitmaps)));
    if (ext.nb_bitmaps == 0) return std::unexpected(invalid("found bitmaps extension with zero bitmaps"));
    if (ext.directory_offset & (cluster_size - 1))
        return std::unexpected(invalid("bitmaps_ext: invalid bitmap directory offset"));
    if (ext.directory_size > kMaxBitmapDirectorySize)
        return std::unexpected(invalid("bitmaps_ext: bitmap directory size (" + std::to_string(ext.directory_size) +
                                       ") exceeds the maximum supported size (" +
                                       std::to_string(kMaxBitmapDirectorySize) + ")"));
    return ext;
}

std::vector<uint8_t> encode_bitmaps_extension(const BitmapsExtension& ext) {
    std::vector<uint8_t> out(kBitmapsExtensionBytes, 0);
    store_be32(out.data(), ext.nb_bitmaps);
    store_be64(out.data() + 8, ext.directory_size);
    store_be64(out.data() + 16, ext.directory_offset);
    return out;
}

uint64_t bitmap_dir_entry_size(uint64_t name_size) { return (kBitmapDirEntryHeader + name_size + 7) & ~uint64_t{7}; }

uint64_t bitmap_table_entries(uint64_t length, unsigned granularity_bits, uint64_t cluster_size) {
    const uint64_t granularity = uint64_t{1} << granularity_bits;
    const uint64_t bits = length / granularity + (length % granularity != 0);
    const uint64_t bytes = bits / 8 + (bits % 8 != 0);
    return bytes / cluster_size + (bytes % cluster_size != 0);
}

Result<void> check_bitmap_entry(const BitmapEntry& e, uint64_t cluster_size, uint64_t length) {
    auto refuse = [&] { return fail(EINVAL, "Bitmap '" + e.name + "' doesn't satisfy the constraints"); };
    if (e.table_size == 0 || e.table_offset == 0 || (e.table_offset & (cluster_size - 1)) ||
        e.table_size > kMaxBitmapTableSize || e.granularity_bits > kMaxBitmapGranularityBits ||
        e.granularity_bits < kMinBitmapGranularityBits || (e.flags & kBitmapReservedFlags) ||
        e.name.size() > kMaxBitmapNameSize)
        return refuse();
    // QEMU takes any name; the spec wants a non-empty one, and a NUL would
    // cut it short in QEMU (and make it another bitmap's name).
    if (e.name.empty() || e.name.find('\0') != std::string::npos) return refuse();
    const uint64_t phys_bytes = uint64_t{e.table_size} * cluster_size;
    if (phys_bytes > kMaxBitmapPhysSize) return refuse();
    // An in-use bitmap may be too small: it was not stored after a resize
    // (and is never trusted anyway). phys_bytes * 8 << 31 fits in 64 bits.
    if (!(e.flags & kBitmapInUse) && length > ((phys_bytes * 8) << e.granularity_bits)) return refuse();
    return {};
}

Result<std::vector<BitmapEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb_bitmaps,
                                                        uint64_t cluster_size, uint64_t length) {
    if (dir.empty()) return fail(EINVAL, "Requested bitmap directory size is zero");
    if (dir.size() > kMaxBitmapDirectorySize) return fail(EINVAL, "Requested bitmap directory size is too big");
    auto broken = [] { return fail(EINVAL, "Broken bitmap directory"); };
    std::vector<BitmapEntry> out;
    std::set<std::string_view> names;
    size_t pos = 0;
    while (pos < dir.size()) {
        if (dir.size() - pos < kBitmapDirEntryHeader) return broken();
        if (out.size() == nb_bitmaps) return fail(EINVAL, "More bitmaps found than specified in header extension");
        const uint8_t* p = dir.data() + pos;
        BitmapEntry e;
        e.table_offset = load_be64(p);
        e.table_size = load_be32(p + 8);
        e.flags = load_be32(p + 12);
        const uint8_t type = p[16];
        e.granularity_bits = p[17];
        const uint16_t name_size = load_be16(p + 18);
        const uint32_t extra = load_be32(p + 20);
        // Computed in 64 bits: a huge extra_data_size cannot wrap.
        const uint64_t size = (kBitmapDirEntryHeader + uint64_t{extra} + name_size + 7) & ~uint64_t{7};
        if (size > dir.size() - pos) return broken();
        if (extra != 0) return fail(EINVAL, "Bitmap extra data is not supported");
        e.name.assign(reinterpret_cast<const char*>(p + kBitmapDirEntryHeader), name_size);
        if (type != kDirtyTrackingBitmap)
            return fail(EINVAL, "Bitmap '" + e.name + "' doesn't satisfy the constraints");
        if (auto r = check_bitmap_entry(e, cluster_size, length); !r) return std::unexpected(r.error());
        out.push_back(std::move(e));
        pos += size;
    }
    if (out.size() != nb_bitmaps) return fail(EINVAL, "Less bitmaps found than specified in header extension");
    // QEMU finds a second bitmap of a name when it creates it.
    for (const BitmapEntry& e : out)
        if (!names.insert(e.name).second) return fail(EEXIST, "Bitmap already exists: " + e.name);
    return out;
}

std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapEntry>& entries) {
    uint64_t total = 0;
    for (const BitmapEntry& e : entries) total += bitmap_dir_entry_size(e.name.size());
    std::vector<uint8_t> out(total, 0);
    uint8_t* p = out.data();
    for (const BitmapEntry& e : entries) {
        store_be64(p, e.table_offset);
        store_be32(p + 8, e.table_size);
        store_be32(p + 12, e.flags);
        p[16] = kDirtyTrackingBitmap;
        p[17] = e.granularity_bits;
        store_be16(p + 18, uint16_t(e.name.size()));
        if (!e.name.empty()) std::memcpy(p + kBitmapDirEntryHeader, e.name.data(), e.name.size());
        p += bitmap_dir_entry_size(e.name.size());
    }
    return out;
}

bool valid_bitmap_table_entry(uint64_t entry, uint64_t cluster_size) {
    if (entry & kBitmapTableReservedMask) return false;
    const uint64_t offset = entry & kBitmapTableOffsetMask;
    return offset == 0 || (!(entry & kBitmapTableAllOnes) && (offset & (cluster_size - 1)) == 0);
}

}  // namespace ioplane::block::qcow2
