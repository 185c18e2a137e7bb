// qcow2's bitmaps extension and bitmap directory codecs against hand-made
// bytes: what QEMU accepts round-trips, and each field QEMU checks (or the
// spec requires) refuses the directory with QEMU's message. The driver's
// use of them (load, store, remove) is tested against QEMU's tools in
// tests/integration/qcow2_bitmaps.py.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "qcow2/bitmap_dir.h"
#include "qcow2/format.h"

namespace q = ioplane::block::qcow2;

namespace {

constexpr uint64_t kCluster = 65536;
constexpr uint64_t kLength = 64ull << 20;  // one table entry covers 32 GiB at 64 KiB

q::BitmapEntry entry(std::string name, uint32_t flags = q::kBitmapAuto, uint8_t bits = 16) {
    return q::BitmapEntry{.table_offset = 5 * kCluster, .table_size = 1, .flags = flags, .granularity_bits = bits,
                          .name = std::move(name)};
}

std::string error_of(std::vector<uint8_t> dir, uint32_t count, uint64_t length = kLength) {
    auto r = q::parse_bitmap_directory(dir, count, kCluster, length);
    return r ? "" : r.error().message;
}

}  // namespace

TEST(Qcow2Bitmaps, ExtensionRoundTripsAndQemusChecksRefuseBadOnes) {
    const q::BitmapsExtension ext{3, 120, 7 * kCluster};
    auto bytes = q::encode_bitmaps_extension(ext);
    ASSERT_EQ(bytes.size(), q::kBitmapsExtensionBytes);
    auto back = q::parse_bitmaps_extension(bytes, kCluster);
    ASSERT_TRUE(back) << back.error().describe();
    EXPECT_EQ(*back, ext);

    auto refused = [](std::vector<uint8_t> b) {
        auto r = q::parse_bitmaps_extension(b, kCluster);
        return r ? "" : r.error().message;
    };
    std::vector<uint8_t> b = bytes;
    b.push_back(0);
    EXPECT_EQ(refused(b), "bitmaps_ext: Invalid extension length");
    b = bytes;
    b[7] = 1;
    EXPECT_EQ(refused(b), "bitmaps_ext: Reserved field is not zero");
    EXPECT_EQ(refused(q::encode_bitmaps_extension({0, 120, 7 * kCluster})), "found bitmaps extension with zero bitmaps");
    EXPECT_EQ(refused(q::encode_bitmaps_extension({65536, 120, 7 * kCluster})),
              "bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535");
    EXPECT_EQ(refused(q::encode_bitmaps_extension({1, 120, 7 * kCluster + 512})),
              "bitmaps_ext: invalid bitmap directory offset");
    EXPECT_EQ(refused(q::encode_bitmaps_extension({1, q::kMaxBitmapDirectorySize + 1, kCluster})),
              "bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size (67107840)");
}

TEST(Qcow2Bitmaps, DirectoryRoundTripsWithPaddedNames) {
    std::vector<q::BitmapEntry> entries = {entry("a"), entry("bitmap-two", q::kBitmapInUse | q::kBitmapAuto, 9),
                                           entry(std::string(q::kMaxBitmapNameSize, 'n'), 0, 31)};
    auto dir = q::encode_bitmap_directory(entries);
    EXPECT_EQ(dir.size(), q::bitmap_dir_entry_size(1) + q::bitmap_dir_entry_size(10) +
                              q::bitmap_dir_entry_size(q::kMaxBitmapNameSize));
    EXPECT_EQ(q::bitmap_dir_entry_size(1), 32u);
    EXPECT_EQ(q::bitmap_dir_entry_size(8), 32u);
    EXPECT_EQ(q::bitmap_dir_entry_size(9), 40u);
    auto parsed = q::parse_bitmap_directory(dir, 3, kCluster, kLength);
    ASSERT_TRUE(parsed) << parsed.error().describe();
    EXPECT_EQ(*parsed, entries);
    EXPECT_EQ(q::encode_bitmap_directory(*parsed), dir);
}

TEST(Qcow2Bitmaps, BadDirectoriesAreRefusedWithQemusMessages) {
    const auto one = q::encode_bitmap_directory({entry("b0")});
    EXPECT_EQ(error_of({}, 1), "Requested bitmap directory size is zero");
    EXPECT_EQ(error_of(one, 2), "Less bitmaps found than specified in header extension");
    auto two = q::encode_bitmap_directory({entry("b0"), entry("b1")});
    EXPECT_EQ(error_of(two, 1), "More bitmaps found than specified in header extension");
    EXPECT_EQ(error_of(q::encode_bitmap_directory({entry("b0"), entry("b0")}), 2), "Bitmap already exists: b0");
    // Cut short: in the fixed part, and in the name.
    EXPECT_EQ(error_of(std::vector<uint8_t>(one.begin(), one.begin() + 20), 1), "Broken bitmap directory");
    EXPECT_EQ(error_of(std::vector<uint8_t>(one.begin(), one.begin() + 25), 1), "Broken bitmap directory");
    // Trailing bytes that are not a whole entry.
    auto trailing = one;
    trailing.resize(one.size() + 8);
    EXPECT_EQ(error_of(trailing, 1), "Broken bitmap directory");

    auto with = [&](auto change) {
        auto d = one;
        change(d.data());
        return error_of(d, 1);
    };
    const std::string bad = "Bitmap 'b0' doesn't satisfy the constraints";
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 20, 8); }), "Broken bitmap directory");  // extra data past the end
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 20, 0xfffffff8); }), "Broken bitmap directory");
    auto extra = q::encode_bitmap_directory({entry("b0")});
    extra.resize(extra.size() + 8);
    q::store_be32(extra.data() + 20, 8);
    EXPECT_EQ(error_of(extra, 1), "Bitmap extra data is not supported");
    EXPECT_EQ(with([](uint8_t* p) { p[16] = 2; }), bad);                           // type
    EXPECT_EQ(with([](uint8_t* p) { p[17] = 8; }), bad);                           // granularity
    EXPECT_EQ(with([](uint8_t* p) { p[17] = 32; }), bad);
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 12, 4); }), bad);            // reserved flag
    EXPECT_EQ(with([](uint8_t* p) { q::store_be64(p, 0); }), bad);                 // no table
    EXPECT_EQ(with([](uint8_t* p) { q::store_be64(p, kCluster + 512); }), bad);    // unaligned table
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 8, 0); }), bad);             // empty table
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 8, 0x8000001); }), bad);     // table too large
    EXPECT_EQ(with([](uint8_t* p) { q::store_be32(p + 8, 0x2001); }), bad);        // data over 512 MiB
    // A name the spec forbids: empty, or holding a NUL.
    EXPECT_EQ(error_of(q::encode_bitmap_directory({entry("")}), 1), "Bitmap '' doesn't satisfy the constraints");
    EXPECT_EQ(error_of(q::encode_bitmap_directory({entry(std::string("a\0b", 3))}), 1),
              "Bitmap '" + std::string("a\0b", 3) + "' doesn't satisfy the constraints");
    // A table too small for the image: refused unless in use.
    EXPECT_EQ(error_of(one, 1, 33ull << 30), bad);
    EXPECT_EQ(error_of(q::encode_bitmap_directory({entry("b0", q::kBitmapInUse)}), 1, 33ull << 30), "");
}

TEST(Qcow2Bitmaps, TableEntriesAndSizes) {
    EXPECT_TRUE(q::valid_bitmap_table_entry(0, kCluster));
    EXPECT_TRUE(q::valid_bitmap_table_entry(1, kCluster));  // all ones
    EXPECT_TRUE(q::valid_bitmap_table_entry(3 * kCluster, kCluster));
    EXPECT_FALSE(q::valid_bitmap_table_entry(3 * kCluster | 1, kCluster));
    EXPECT_FALSE(q::valid_bitmap_table_entry(3 * kCluster + 512, kCluster));
    EXPECT_FALSE(q::valid_bitmap_table_entry(2, kCluster));
    EXPECT_FALSE(q::valid_bitmap_table_entry(1ull << 56, kCluster));
    // 64 MiB at 64 KiB: 1024 bits, 128 bytes, one cluster; at 512 B:
    // 131072 bits, 16 KiB, one 64 KiB cluster or 32 of 512 bytes.
    EXPECT_EQ(q::bitmap_table_entries(kLength, 16, kCluster), 1u);
    EXPECT_EQ(q::bitmap_table_entries(kLength, 9, 512), 32u);
    EXPECT_EQ(q::bitmap_table_entries(kLength + 1, 9, 512), 33u);
    EXPECT_EQ(q::bitmap_table_entries(0, 16, kCluster), 0u);
}

TEST(Qcow2Bitmaps, AStaleExtensionIsDroppedAndAValidOneKept) {
    // Through the header: without the autoclear bit the extension is
    // stale (not parsed, not written back); with it, a bad one is refused.
    q::Header h;
    h.size = kLength;
    h.l1_size = 1;
    h.l1_table_offset = 3 * kCluster;
    h.refcount_table_offset = kCluster;
    h.refcount_table_clusters = 1;
    h.header_length = 112;
    h.extensions = {{q::kExtBitmaps, std::vector<uint8_t>(24, 0x07)}};
    auto bytes = q::encode_header(h);
    ASSERT_TRUE(bytes);
    auto parsed = q::parse_header(*bytes, 8 * kCluster);
    ASSERT_TRUE(parsed) << parsed.error().describe();
    EXPECT_TRUE(parsed->stale_bitmaps);
    EXPECT_FALSE(parsed->bitmaps);
    EXPECT_TRUE(parsed->extensions.empty());
    h.autoclear_features = q::kAutoclearBitmaps;
    bytes = q::encode_header(h);
    ASSERT_TRUE(bytes);
    parsed = q::parse_header(*bytes, 8 * kCluster);
    ASSERT_FALSE(parsed);
    EXPECT_EQ(parsed.error().message, "bitmaps_ext: Reserved field is not zero");
}
