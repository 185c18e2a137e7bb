// qcow2's on-disk format (../shared/specs/qcow2.rst): the header and its
// extensions, L1/L2 entries, refcount entries, the snapshot table. Pure code
// over bytes an image file supplies, so every function here treats its input
// as hostile: sizes and offsets are checked against the limits QEMU enforces
// (the CVE classes of huge tables, offsets past the file and names longer
// than their cluster), and a bad image is a clear error, never a crash or a
// huge allocation.
//
// Thread contract: any thread (no state).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bitmap_dir.h"
#include "ioplane/core/error.h"

namespace ioplane::block::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3HeaderLength = 104;  // without compression_type
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
// QEMU's limits: bigger tables are refused at open (a hostile header could
// otherwise make a reader allocate gigabytes).
inline constexpr uint64_t kMaxL1Bytes = 32u << 20;
inline constexpr uint64_t kMaxRefcountTableBytes = 8u << 20;
inline constexpr uint32_t kMaxSnapshots = 65536;
inline constexpr uint32_t kMaxBackingFileName = 1023;
inline constexpr uint32_t kMaxSnapshotExtraData = 1024;
// Host offsets have 56 bits (bits 9-55 of an entry).
inline constexpr uint64_t kMaxHostOffset = (1ull << 56) - 1;

// Feature bits.
enum : uint64_t {
    kIncompatDirty = 1ull << 0,
    kIncompatCorrupt = 1ull << 1,
    kIncompatDataFile = 1ull << 2,
    kIncompatCompression = 1ull << 3,
    kIncompatExtendedL2 = 1ull << 4,
    kIncompatKnown = 0x1f,
    kCompatLazyRefcounts = 1ull << 0,
    kAutoclearBitmaps = 1ull << 0,
    kAutoclearDataFileRaw = 1ull << 1,
};

// Header extension types.
enum : uint32_t {
    kExtEnd = 0,
    kExtBackingFormat = 0xe2792aca,
    kExtFeatureTable = 0x6803f857,
    kExtCrypto = 0x0537be77,
    kExtBitmaps = 0x23852875,
    kExtDataFile = 0x44415441,
};

enum class Compression : uint8_t { zlib = 0, zstd = 1 };

struct HeaderExtension {
    uint32_t type = 0;
    std::vector<uint8_t> data;
};

struct Header {
    uint32_t version = 3;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = 16;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    // Version 3 (zero in version 2).
    uint64_t incompatible_features = 0;
    uint64_t compatible_features = 0;
    uint64_t autoclear_features = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = kV3HeaderLength;
    Compression compression = Compression::zlib;

    // Every extension but the end marker, in file order, kept as read so
    // that rewriting the header preserves the ones this reader does not
    // interpret (bitmaps, feature names, unknown types).
    std::vector<HeaderExtension> extensions;
    std::string backing_file;    // empty: none
    std::string backing_format;  // from kExtBackingFormat; empty: unknown
    // The bitmaps extension, only when the autoclear bit vouches for it
    // (written after the kept extensions when present).
    std::optional<BitmapsExtension> bitmaps;
    // The extension was there without its autoclear bit: a writer that
    // does not know bitmaps changed the image; the bitmaps are dropped.
    bool stale_bitmaps = false;

    uint64_t cluster_size() const { return 1ull << cluster_bits; }
    bool extended_l2() const { return incompatible_features & kIncompatExtendedL2; }
    uint32_t refcount_bits() const { return 1u << refcount_order; }
    // Entries per L2 table (16-byte entries with extended L2).
    uint64_t l2_entries() const { return cluster_size() / (extended_l2() ? 16 : 8); }
};

// Parses and checks the header from the image's first bytes (`head`, at
// least the first cluster or the whole file if it is shorter). `file_size`
// bounds the tables' offsets.
Result<Header> parse_header(std::span<const uint8_t> head, uint64_t file_size);
// The first cluster's bytes for `h`: header, extensions (backing format
// first, then the kept ones), end marker, backing file name. Fails if they
// do not fit in one cluster.
Result<std::vector<uint8_t>> encode_header(const Header& h);
// Bytes of the image's start that parse_header needs before it knows the
// cluster size.
inline constexpr size_t kHeaderProbeBytes = 4096;

// L1 and L2 entries.
inline constexpr uint64_t kOflagCopied = 1ull << 63;
inline constexpr uint64_t kOflagCompressed = 1ull << 62;
inline constexpr uint64_t kOflagZero = 1ull << 0;
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
inline constexpr uint64_t kL2ReservedMask = 0x3f000000000001feull;

// A compressed cluster's descriptor, decoded.
struct CompressedRef {
    uint64_t host_offset;  // of the first byte (not aligned)
    uint64_t bytes;        // bytes to read: up to the end of its last sector
};
CompressedRef decode_compressed(uint64_t l2_entry, uint32_t cluster_bits);

// Big-endian fields.
uint16_t load_be16(const uint8_t* p);
uint32_t load_be32(const uint8_t* p);
uint64_t load_be64(const uint8_t* p);
void store_be16(uint8_t* p, uint16_t v);
void store_be32(uint8_t* p, uint32_t v);
void store_be64(uint8_t* p, uint64_t v);

// Refcount entry `index` of a refcount block with entries of
// `1 << order` bits (sub-byte entries from the least significant bit up,
// wider ones big-endian).
uint64_t get_refcount(const uint8_t* block, uint64_t index, uint32_t order);
void set_refcount(uint8_t* block, uint64_t index, uint32_t order, uint64_t value);

// One entry of the snapshot table.
struct Snapshot {
    uint64_t l1_table_offset = 0;
    uint32_t l1_size = 0;
    std::string id;
    std::string name;
    uint32_t date_sec = 0;
    uint32_t date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint32_t vm_state_size = 0;
    uint64_t disk_size = 0;  // from extra data when present, else the image's
    uint64_t icount = UINT64_MAX;  // from extra data; UINT64_MAX: none
};
// Parses `count` entries from `table` (the bytes at snapshots_offset),
// checking each against the image (`h`, `file_size`); the bytes the table
// takes are returned in `table_bytes`.
Result<std::vector<Snapshot>> parse_snapshots(std::span<const uint8_t> table, uint32_t count, const Header& h,
                                              uint64_t file_size, uint64_t& table_bytes);
// The most bytes a snapshot table of `count` entries may take (what to read
// before parsing).
uint64_t max_snapshot_table_bytes(uint32_t count);

}  // namespace ioplane::block::qcow2
