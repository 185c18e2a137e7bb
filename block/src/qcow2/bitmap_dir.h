// qcow2's persistent dirty bitmaps on disk (qcow2.rst, "Bitmaps extension"):
// the header extension, the bitmap directory and bitmap table entries.
// Pure code over bytes an image supplies, so every field is hostile: each
// is checked against QEMU's limits (block/qcow2-bitmap.c) and a bad
// directory is an error with QEMU's message, never an out-of-bounds access
// or an allocation beyond the limits.
//
// Thread contract: any thread (no state).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane::block::qcow2 {

// QEMU's limits (QCOW2_MAX_BITMAPS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE, BME_*).
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapDirectorySize = 1024 * uint64_t{kMaxBitmaps};
inline constexpr unsigned kMinBitmapGranularityBits = 9;
inline constexpr unsigned kMaxBitmapGranularityBits = 31;
inline constexpr uint64_t kMaxBitmapNameSize = 1023;
inline constexpr uint64_t kMaxBitmapTableSize = 0x8000000;  // entries
inline constexpr uint64_t kMaxBitmapPhysSize = 0x20000000;  // bytes of one bitmap's data
inline constexpr size_t kBitmapsExtensionBytes = 24;
inline constexpr size_t kBitmapDirEntryHeader = 24;

// Directory entry flags.
enum : uint32_t {
    kBitmapInUse = 1u << 0,  // being written: the data is not to be trusted
    kBitmapAuto = 1u << 1,   // enabled: records guest writes
    kBitmapReservedFlags = ~uint32_t{3},
};

// Bitmap table entries.
inline constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kBitmapTableReservedMask = 0xff000000000001feull;
inline constexpr uint64_t kBitmapTableAllOnes = 1;

// The header extension: where the directory is and how many entries it has.
struct BitmapsExtension {
    uint32_t nb_bitmaps = 0;
    uint64_t directory_size = 0;
    uint64_t directory_offset = 0;
    bool operator==(const BitmapsExtension&) const = default;
};
// QEMU's checks (qcow2_read_extensions) and messages; `cluster_size` for
// the directory's alignment.
Result<BitmapsExtension> parse_bitmaps_extension(std::span<const uint8_t> data, uint64_t cluster_size);
std::vector<uint8_t> encode_bitmaps_extension(const BitmapsExtension& ext);

// One directory entry (no extra data: QEMU refuses it).
struct BitmapEntry {
    uint64_t table_offset = 0;
    uint32_t table_size = 0;  // entries
    uint32_t flags = 0;
    uint8_t granularity_bits = 16;
    std::string name;
    uint64_t granularity() const { return uint64_t{1} << granularity_bits; }
    bool operator==(const BitmapEntry&) const = default;
};

// Bytes an entry with a name of `name_size` bytes takes (padded to 8).
uint64_t bitmap_dir_entry_size(uint64_t name_size);
// The clusters of serialised data a bitmap of `granularity_bits` over a
// device of `length` bytes needs: what its table must hold exactly.
uint64_t bitmap_table_entries(uint64_t length, unsigned granularity_bits, uint64_t cluster_size);

// QEMU's check_dir_entry, and the spec's rules QEMU leaves to later steps
// (a non-empty name without NUL bytes, unique names): `length` is the
// image's virtual size.
Result<void> check_bitmap_entry(const BitmapEntry& e, uint64_t cluster_size, uint64_t length);
// QEMU's bitmap_list_load: the directory's bytes, which must hold exactly
// `nb_bitmaps` valid entries.
Result<std::vector<BitmapEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t nb_bitmaps,
                                                        uint64_t cluster_size, uint64_t length);
std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapEntry>& entries);

// QEMU's check_table_entry: reserved bits clear, a data offset cluster
// aligned and without the all-ones flag.
bool valid_bitmap_table_entry(uint64_t entry, uint64_t cluster_size);

}  // namespace ioplane::block::qcow2
