// The qcow2 driver: the on-disk format's codecs (header and extensions,
// refcount entries, compressed descriptors, the snapshot table) against
// hand-made bytes, and the driver through a BlockBackend over images that
// qemu-img makes, checked afterwards with qemu-img (check, convert) as the
// reference reader.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "qcow2/format.h"
#include "qcow2/qcow2.h"
#include "test_io.h"

namespace ioplane::block {
namespace {

namespace q = qcow2;
using nlohmann::json;
using testing::read_bytes;
using testing::write_bytes;

// --- Format: header --------------------------------------------------------

struct Geometry {
    q::Header h;
    uint64_t file_size;
};

// A consistent header: refcount table in cluster 1, L1 table from cluster 2,
// the file ending after the L1 table.
Geometry geometry(uint32_t version, uint32_t cluster_bits, uint32_t refcount_order = 4, bool extended_l2 = false,
                  uint64_t size = 1ull << 30) {
    q::Header h;
    h.version = version;
    h.cluster_bits = cluster_bits;
    h.size = size;
    if (version == 3) {
        h.refcount_order = refcount_order;
        h.header_length = 112;  // what encode_header writes
        if (extended_l2) h.incompatible_features |= q::kIncompatExtendedL2;
    } else {
        h.refcount_order = 4;
        h.header_length = q::kV2HeaderLength;
    }
    const uint64_t cs = 1ull << cluster_bits;
    const uint64_t coverage = cs * h.l2_entries();
    h.l1_size = uint32_t((size + coverage - 1) / coverage);
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.l1_table_offset = 2 * cs;
    const uint64_t l1_bytes = (uint64_t(h.l1_size) * 8 + cs - 1) / cs * cs;
    return {h, 2 * cs + l1_bytes};
}

void expect_same_header(const q::Header& a, const q::Header& b) {
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.cluster_bits, b.cluster_bits);
    EXPECT_EQ(a.size, b.size);
    EXPECT_EQ(a.crypt_method, b.crypt_method);
    EXPECT_EQ(a.l1_size, b.l1_size);
    EXPECT_EQ(a.l1_table_offset, b.l1_table_offset);
    EXPECT_EQ(a.refcount_table_offset, b.refcount_table_offset);
    EXPECT_EQ(a.refcount_table_clusters, b.refcount_table_clusters);
    EXPECT_EQ(a.nb_snapshots, b.nb_snapshots);
    EXPECT_EQ(a.snapshots_offset, b.snapshots_offset);
    EXPECT_EQ(a.incompatible_features, b.incompatible_features);
    EXPECT_EQ(a.compatible_features, b.compatible_features);
    EXPECT_EQ(a.autoclear_features, b.autoclear_features);
    EXPECT_EQ(a.refcount_order, b.refcount_order);
    EXPECT_EQ(a.header_length, b.header_length);
    EXPECT_EQ(a.compression, b.compression);
    EXPECT_EQ(a.backing_file, b.backing_file);
    EXPECT_EQ(a.backing_format, b.backing_format);
    EXPECT_EQ(a.bitmaps, b.bitmaps);
    ASSERT_EQ(a.extensions.size(), b.extensions.size());
    for (size_t i = 0; i < a.extensions.size(); i++) {
        EXPECT_EQ(a.extensions[i].type, b.extensions[i].type) << "extension " << i;
        EXPECT_EQ(a.extensions[i].data, b.extensions[i].data) << "extension " << i;
    }
}

// encode -> parse gives the same header; encode again gives the same bytes.
void round_trip(const q::Header& h, uint64_t file_size) {
    auto bytes = q::encode_header(h);
    ASSERT_TRUE(bytes) << bytes.error().describe();
    ASSERT_EQ(bytes->size(), h.cluster_size());
    auto parsed = q::parse_header(*bytes, file_size);
    ASSERT_TRUE(parsed) << parsed.error().describe();
    expect_same_header(h, *parsed);
    auto again = q::encode_header(*parsed);
    ASSERT_TRUE(again) << again.error().describe();
    EXPECT_TRUE(*again == *bytes) << "re-encoded header differs";
}

TEST(Qcow2Format, HeadersOfEveryVersionClusterSizeAndRefcountWidthRoundTrip) {
    int checked = 0;
    for (uint32_t cb = q::kMinClusterBits; cb <= q::kMaxClusterBits; cb++) {
        SCOPED_TRACE("cluster_bits " + std::to_string(cb));
        {
            SCOPED_TRACE("v2");
            Geometry g = geometry(2, cb);
            round_trip(g.h, g.file_size);
            checked++;
        }
        for (uint32_t order = 0; order <= 6; order++) {
            for (bool ext : {false, true}) {
                if (ext && cb < 14) continue;
                for (auto comp : {q::Compression::zlib, q::Compression::zstd}) {
                    SCOPED_TRACE("v3 refcount_order " + std::to_string(order) + (ext ? " extended_l2" : "") +
                                 (comp == q::Compression::zstd ? " zstd" : ""));
                    Geometry g = geometry(3, cb, order, ext);
                    g.h.compression = comp;
                    if (comp == q::Compression::zstd) g.h.incompatible_features |= q::kIncompatCompression;
                    round_trip(g.h, g.file_size);
                    checked++;
                }
            }
        }
    }
    EXPECT_EQ(checked, 13 + 13 * 7 * 2 + 8 * 7 * 2);
}

TEST(Qcow2Format, BackingFileAndUnknownExtensionsAreKeptInOrderAndReencodedIdentically) {
    for (uint32_t version : {2u, 3u}) {
        for (uint32_t cb : {9u, 16u}) {
            SCOPED_TRACE("v" + std::to_string(version) + " cluster_bits " + std::to_string(cb));
            Geometry g = geometry(version, cb);
            g.h.backing_file = "../base images/base.qcow2";
            g.h.backing_format = "qcow2";
            g.h.extensions = {
                {0x12345678, {1, 2, 3}},                              // unknown, padded to 8
                {q::kExtFeatureTable, std::vector<uint8_t>(48, 0x41)},  // feature names
                {0xdeadbeef, {}},                                     // unknown, empty
                {0x00000001, {9, 8, 7, 6, 5, 4, 3, 2, 1}},
            };
            // The bitmaps extension is parsed (and written after the kept
            // ones) when the autoclear bit vouches for it.
            if (version == 3) {
                g.h.autoclear_features = q::kAutoclearBitmaps;
                g.h.bitmaps = q::BitmapsExtension{2, 64, 3 * g.h.cluster_size()};
            }
            round_trip(g.h, g.file_size);
            // The backing file name follows the end marker, inside the cluster.
            auto bytes = q::encode_header(g.h);
            ASSERT_TRUE(bytes);
            const uint64_t name_at = q::load_be64(bytes->data() + 8);
            EXPECT_EQ(q::load_be32(bytes->data() + 16), g.h.backing_file.size());
            ASSERT_LT(name_at + g.h.backing_file.size(), bytes->size());
            EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data() + name_at), g.h.backing_file.size()),
                      g.h.backing_file);
            EXPECT_EQ(q::load_be32(bytes->data() + name_at - 8), q::kExtEnd);
        }
    }
}

TEST(Qcow2Format, ExtensionsInAnotherOrderAndALongerHeaderAreKept) {
    // By hand: a v3 header of 120 bytes; an unknown extension, then the
    // backing format; no backing file.
    Geometry g = geometry(3, 12);
    auto bytes = q::encode_header(g.h);
    ASSERT_TRUE(bytes);
    uint8_t* p = bytes->data();
    std::memset(p + 104, 0, 512 - 104);
    q::store_be32(p + 100, 120);
    uint64_t pos = 120;
    q::store_be32(p + pos, 0xabcdef01);
    q::store_be32(p + pos + 4, 5);
    std::memcpy(p + pos + 8, "hello", 5);
    pos += 16;
    q::store_be32(p + pos, q::kExtBackingFormat);
    q::store_be32(p + pos + 4, 3);
    std::memcpy(p + pos + 8, "raw", 3);
    pos += 16;
    q::store_be32(p + pos, q::kExtEnd);
    auto h = q::parse_header(*bytes, g.file_size);
    ASSERT_TRUE(h) << h.error().describe();
    EXPECT_EQ(h->header_length, 120u);
    EXPECT_EQ(h->backing_format, "raw");
    ASSERT_EQ(h->extensions.size(), 1u);
    EXPECT_EQ(h->extensions[0].type, 0xabcdef01u);
    EXPECT_EQ(h->extensions[0].data, (std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}));
    // Re-encoded: the same length; the backing format first.
    auto again = q::encode_header(*h);
    ASSERT_TRUE(again);
    EXPECT_EQ(q::load_be32(again->data() + 100), 120u);
    EXPECT_EQ(q::load_be32(again->data() + 120), q::kExtBackingFormat);
    auto reparsed = q::parse_header(*again, g.file_size);
    ASSERT_TRUE(reparsed);
    expect_same_header(*h, *reparsed);
}

TEST(Qcow2Format, EncodeRefusesExtensionsThatDoNotFitInTheCluster) {
    Geometry g = geometry(3, 9);
    g.h.extensions = {{0x11111111, std::vector<uint8_t>(512 - 112 - 8 - 8 + 1, 1)}};
    auto r = q::encode_header(g.h);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EINVAL);
    g.h.extensions = {{0x11111111, std::vector<uint8_t>(512 - 112 - 8 - 8, 1)}};  // exactly fits
    EXPECT_TRUE(q::encode_header(g.h));
    g.h.backing_file = "x";  // no room for the name
    EXPECT_FALSE(q::encode_header(g.h));
}

TEST(Qcow2Format, ParseHeaderRefusesEachBadField) {
    const Geometry g = geometry(3, 16);  // 64 KiB clusters, 1 GiB, 2 L1 entries
    const auto good = q::encode_header(g.h);
    ASSERT_TRUE(good);
    ASSERT_TRUE(q::parse_header(*good, g.file_size));
    const uint64_t cs = 65536;
    int cases = 0;
    auto refused = [&](const char* what, const std::function<void(uint8_t*)>& patch, int code, const std::string& needle,
                       uint64_t file_size = 0) {
        SCOPED_TRACE(what);
        cases++;
        std::vector<uint8_t> bytes = *good;
        patch(bytes.data());
        auto r = q::parse_header(bytes, file_size ? file_size : g.file_size);
        ASSERT_FALSE(r) << "accepted";
        EXPECT_EQ(r.error().code, code) << r.error().message;
        EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    };
    using q::store_be32;
    using q::store_be64;
    refused("bad magic", [](uint8_t* p) { p[3] ^= 1; }, EINVAL, "bad magic");
    refused("version 1", [](uint8_t* p) { store_be32(p + 4, 1); }, ENOTSUP, "unsupported version 1");
    refused("version 4", [](uint8_t* p) { store_be32(p + 4, 4); }, ENOTSUP, "unsupported version 4");
    refused("cluster_bits 8", [](uint8_t* p) { store_be32(p + 20, 8); }, EINVAL, "unsupported cluster size: 2^8");
    refused("cluster_bits 22", [](uint8_t* p) { store_be32(p + 20, 22); }, EINVAL, "unsupported cluster size: 2^22");
    refused("header_length 100", [](uint8_t* p) { store_be32(p + 100, 100); }, EINVAL, "invalid header length");
    refused("header_length past the cluster", [&](uint8_t* p) { store_be32(p + 100, uint32_t(cs + 8)); }, EINVAL,
            "invalid header length");
    refused("huge l1_size", [](uint8_t* p) { store_be32(p + 36, (32u << 20) / 8 + 1); }, EINVAL,
            "L1 table is too large");
    refused("huge l1_size (all ones)", [](uint8_t* p) { store_be32(p + 36, 0xffffffff); }, EINVAL,
            "L1 table is too large");
    refused("l1 too small for the size", [](uint8_t* p) { store_be64(p + 24, (1ull << 30) + 1); }, EINVAL,
            "L1 table is too small");
    refused("l1 too small: no entries", [](uint8_t* p) { store_be32(p + 36, 0); }, EINVAL, "L1 table is too small");
    refused("size past 2^62 (l1 big enough)",
            [](uint8_t* p) {
                store_be32(p + 36, 4u << 20);  // covers 2^51
                store_be64(p + 24, ~0ull);
            },
            EINVAL, "L1 table is too small");
    refused("unaligned L1 table", [&](uint8_t* p) { store_be64(p + 40, 2 * cs + 512); }, EINVAL,
            "L1 table offset is not cluster aligned");
    refused("L1 table past EOF", [&](uint8_t* p) { store_be64(p + 40, g.file_size); }, EINVAL,
            "L1 table is past the end");
    refused("L1 table ending past EOF", [&](uint8_t* p) { store_be64(p + 40, 2 * cs); }, EINVAL,
            "L1 table is past the end", 2 * cs + 8);
    refused("L1 table offset past 2^56", [](uint8_t* p) { store_be64(p + 40, 0xffffffffffff0000ull); }, EINVAL,
            "L1 table is past the end");
    refused("unaligned refcount table", [&](uint8_t* p) { store_be64(p + 48, cs + 4096); }, EINVAL,
            "refcount table offset is not cluster aligned");
    refused("refcount table past EOF", [&](uint8_t* p) { store_be64(p + 48, g.file_size); }, EINVAL,
            "refcount table is past the end");
    refused("refcount table offset wrapping", [](uint8_t* p) { store_be64(p + 48, 0xffffffffffff0000ull); }, EINVAL,
            "refcount table is past the end");
    refused("no refcount table", [](uint8_t* p) { store_be32(p + 56, 0); }, EINVAL, "no refcount table");
    refused("huge refcount table", [](uint8_t* p) { store_be32(p + 56, 0xffffffff); }, EINVAL,
            "refcount table is too large");
    refused("refcount table just over 8 MiB", [&](uint8_t* p) { store_be32(p + 56, uint32_t((8u << 20) / cs + 1)); },
            EINVAL, "refcount table is too large");
    refused("refcount_order 7", [](uint8_t* p) { store_be32(p + 96, 7); }, EINVAL, "refcount width 2^7");
    refused("unknown incompatible bit", [](uint8_t* p) { store_be64(p + 72, 1ull << 5); }, ENOTSUP,
            "unsupported incompatible features 0x20");
    refused("unknown high incompatible bit", [](uint8_t* p) { store_be64(p + 72, 1ull << 63); }, ENOTSUP,
            "unsupported incompatible features 0x8000000000000000");
    refused("external data file bit", [](uint8_t* p) { store_be64(p + 72, q::kIncompatDataFile); }, ENOTSUP,
            "external data files");
    refused("crypt_method 1 (AES)", [](uint8_t* p) { store_be32(p + 32, 1); }, ENOTSUP, "encrypted");
    refused("crypt_method 2 (LUKS)", [](uint8_t* p) { store_be32(p + 32, 2); }, ENOTSUP, "encrypted");
    refused("compression type zstd without the bit", [](uint8_t* p) { p[104] = 1; }, EINVAL, "disagree");
    refused("compression bit with type zlib", [](uint8_t* p) { store_be64(p + 72, q::kIncompatCompression); },
            EINVAL, "disagree");
    refused("unknown compression type",
            [](uint8_t* p) {
                p[104] = 2;
                store_be64(p + 72, q::kIncompatCompression);
            },
            ENOTSUP, "unknown compression type 2");
    refused("extended L2 with 8 KiB clusters",
            [](uint8_t* p) {
                store_be32(p + 20, 13);
                store_be64(p + 72, q::kIncompatExtendedL2);
            },
            EINVAL, "extended L2");
    refused("backing file name too long",
            [](uint8_t* p) {
                store_be64(p + 8, 512);
                store_be32(p + 16, 1024);
                std::memset(p + 512, 'a', 1024);
            },
            EINVAL, "backing file name is too long");
    refused("backing file name crossing the cluster end",
            [&](uint8_t* p) {
                store_be64(p + 8, cs - 4);
                store_be32(p + 16, 10);
                std::memset(p + cs - 4, 'a', 4);
            },
            EINVAL, "backing file name is outside the first cluster");
    refused("backing file name past the cluster",
            [&](uint8_t* p) {
                store_be64(p + 8, cs + 512);
                store_be32(p + 16, 4);
            },
            EINVAL, "backing file name is outside the first cluster");
    refused("extension running past the cluster",
            [&](uint8_t* p) {
                store_be32(p + 112, 0x12345678);
                store_be32(p + 116, uint32_t(cs - 112 - 8 + 1));
            },
            EINVAL, "header extension past the end of the first cluster");
    refused("extension running into the backing file name",
            [&](uint8_t* p) {
                store_be64(p + 8, 1024);
                store_be32(p + 16, 4);
                std::memcpy(p + 1024, "base", 4);
                store_be32(p + 112, 0x12345678);
                store_be32(p + 116, 1024 - 112 - 8 + 1);
            },
            EINVAL, "header extension past the end of the first cluster");
    refused("no end marker",
            [&](uint8_t* p) {
                store_be32(p + 112, 0x12345678);
                store_be32(p + 116, uint32_t(cs - 112 - 8));  // exactly to the cluster's end
                std::memset(p + 120, 0xee, cs - 120);
            },
            EINVAL, "no end marker");
    refused("no end marker before the backing file name",
            [&](uint8_t* p) {
                store_be64(p + 8, 1024);
                store_be32(p + 16, 4);
                std::memcpy(p + 1024, "base", 4);
                store_be32(p + 112, 0x12345678);
                store_be32(p + 116, 1024 - 112 - 8);
            },
            EINVAL, "no end marker");
    refused("too many snapshots",
            [&](uint8_t* p) {
                store_be32(p + 60, q::kMaxSnapshots + 1);
                store_be64(p + 64, cs);
            },
            EINVAL, "too many snapshots");
    refused("unaligned snapshot table",
            [&](uint8_t* p) {
                store_be32(p + 60, 1);
                store_be64(p + 64, cs + 8);
            },
            EINVAL, "snapshot table offset is not cluster aligned");
    refused("snapshot table past EOF",
            [&](uint8_t* p) {
                store_be32(p + 60, 1);
                store_be64(p + 64, g.file_size);
            },
            EINVAL, "snapshot table is past the end");
    {
        SCOPED_TRACE("shorter than a header");
        auto r = q::parse_header(std::span(good->data(), 71), g.file_size);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, EINVAL);
        auto v3 = q::parse_header(std::span(good->data(), 100), g.file_size);
        ASSERT_FALSE(v3);
        EXPECT_NE(v3.error().message.find("too small for a version 3 header"), std::string::npos)
            << v3.error().message;
    }
    EXPECT_EQ(cases, 42);
}

// --- Format: refcount entries ----------------------------------------------

// An independent model of the layout: sub-byte entries from the least
// significant bit of each byte up, wider ones big-endian.
uint64_t model_get(const std::vector<uint8_t>& b, uint64_t i, uint32_t order) {
    const uint32_t w = 1u << order;
    if (w < 8) {
        const uint64_t bit = i * w;
        return (b[bit / 8] >> (bit % 8)) & ((1u << w) - 1);
    }
    uint64_t v = 0;
    for (uint32_t k = 0; k < w / 8; k++) v = v << 8 | b[i * (w / 8) + k];
    return v;
}

void model_set(std::vector<uint8_t>& b, uint64_t i, uint32_t order, uint64_t v) {
    const uint32_t w = 1u << order;
    if (w < 8) {
        const uint64_t bit = i * w;
        for (uint32_t k = 0; k < w; k++) {
            const uint8_t m = uint8_t(1u << ((bit + k) % 8));
            if ((v >> k) & 1) b[(bit + k) / 8] |= m;
            else b[(bit + k) / 8] &= uint8_t(~m);
        }
        return;
    }
    for (uint32_t k = w / 8; k-- > 0;) {
        b[i * (w / 8) + k] = uint8_t(v);
        v >>= 8;
    }
}

TEST(Qcow2Format, RefcountEntriesOfEveryWidthRoundTripWithoutDisturbingNeighbours) {
    constexpr size_t kBlock = 512;
    std::mt19937_64 rng(1234);
    for (uint32_t order = 0; order <= 6; order++) {
        const uint32_t w = 1u << order;
        const uint64_t mask = w == 64 ? ~0ull : (1ull << w) - 1;
        const uint64_t entries = kBlock * 8 / w;
        for (int fill : {0x00, 0xff, -1 /* random */}) {
            SCOPED_TRACE("order " + std::to_string(order) + " fill " + std::to_string(fill));
            std::vector<uint8_t> block(kBlock);
            for (auto& byte : block) byte = fill >= 0 ? uint8_t(fill) : uint8_t(rng());
            std::vector<uint8_t> expect = block;
            for (uint64_t i = 0; i < entries; i++) {
                const uint64_t old = q::get_refcount(block.data(), i, order);
                ASSERT_EQ(old, model_get(block, i, order)) << "get at " << i;
                // Every bit of the entry flips (from a pattern-filled block,
                // neighbours hold the opposite bits).
                const uint64_t v = ~old & mask;
                const uint64_t before_prev = i > 0 ? q::get_refcount(block.data(), i - 1, order) : 0;
                const uint64_t before_next = i + 1 < entries ? q::get_refcount(block.data(), i + 1, order) : 0;
                q::set_refcount(block.data(), i, order, v);
                model_set(expect, i, order, v);
                ASSERT_EQ(q::get_refcount(block.data(), i, order), v) << "entry " << i;
                if (i > 0) {
                    ASSERT_EQ(q::get_refcount(block.data(), i - 1, order), before_prev) << "entry " << i - 1;
                }
                if (i + 1 < entries) {
                    ASSERT_EQ(q::get_refcount(block.data(), i + 1, order), before_next) << "entry " << i + 1;
                }
                ASSERT_TRUE(block == expect) << "block differs after setting entry " << i;
            }
            // Each entry was set once: every bit of the block flipped.
            for (size_t k = 0; k < kBlock && fill >= 0; k++) ASSERT_EQ(block[k], uint8_t(~fill)) << "byte " << k;
            // Random values at random indexes, neighbours checked against the model.
            for (int n = 0; n < 2000; n++) {
                const uint64_t i = rng() % entries, v = rng() & mask;
                q::set_refcount(block.data(), i, order, v);
                model_set(expect, i, order, v);
                ASSERT_EQ(q::get_refcount(block.data(), i, order), v);
                ASSERT_TRUE(block == expect) << "block differs after setting entry " << i;
            }
        }
        // Values wider than the entry: sub-byte entries take the low bits and
        // leave their neighbours alone.
        if (w < 8) {
            std::vector<uint8_t> block(kBlock, 0);
            q::set_refcount(block.data(), 1, order, ~0ull);
            EXPECT_EQ(q::get_refcount(block.data(), 0, order), 0u);
            EXPECT_EQ(q::get_refcount(block.data(), 1, order), mask);
            EXPECT_EQ(q::get_refcount(block.data(), 2, order), 0u);
        }
    }
}

TEST(Qcow2Format, RefcountEntriesMatchHandComputedBytes) {
    std::vector<uint8_t> b(16, 0);
    b[0] = 0x05;  // 0000 0101
    EXPECT_EQ(q::get_refcount(b.data(), 0, 0), 1u);
    EXPECT_EQ(q::get_refcount(b.data(), 1, 0), 0u);
    EXPECT_EQ(q::get_refcount(b.data(), 2, 0), 1u);
    EXPECT_EQ(q::get_refcount(b.data(), 3, 0), 0u);
    b[0] = 0xe4;  // 11 10 01 00
    for (uint64_t i = 0; i < 4; i++) EXPECT_EQ(q::get_refcount(b.data(), i, 1), i);
    b[0] = 0x3a;
    EXPECT_EQ(q::get_refcount(b.data(), 0, 2), 0xau);
    EXPECT_EQ(q::get_refcount(b.data(), 1, 2), 0x3u);
    b = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8};
    EXPECT_EQ(q::get_refcount(b.data(), 1, 3), 0x34u);
    EXPECT_EQ(q::get_refcount(b.data(), 1, 4), 0x5678u);
    EXPECT_EQ(q::get_refcount(b.data(), 1, 5), 0x9abcdef0u);
    EXPECT_EQ(q::get_refcount(b.data(), 1, 6), 0x0102030405060708u);
    std::vector<uint8_t> z(16, 0);
    q::set_refcount(z.data(), 1, 6, 0xfedcba9876543210ull);
    EXPECT_EQ(z, (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}));
    std::vector<uint8_t> s(4, 0);
    q::set_refcount(s.data(), 5, 0, 1);   // byte 0 bit 5
    q::set_refcount(s.data(), 3, 1, 2);   // byte 0 bits 6-7 = 10
    q::set_refcount(s.data(), 3, 2, 0xc); // byte 1 bits 4-7
    q::set_refcount(s.data(), 1, 4, 0xabcd);
    EXPECT_EQ(s, (std::vector<uint8_t>{0xa0, 0xc0, 0xab, 0xcd}));
}

// --- Format: compressed descriptors ----------------------------------------

TEST(Qcow2Format, CompressedDescriptorsDecodeToHandComputedRanges) {
    const uint64_t C = q::kOflagCompressed;
    // cluster_bits 9: offset in bits 0-60, one bit of additional sectors (61).
    auto r = q::decode_compressed(C | 1ull << 61 | 0x12345, 9);
    EXPECT_EQ(r.host_offset, 0x12345u);
    EXPECT_EQ(r.bytes, 2u * 512 - 0x145);  // two sectors, from 0x145 into the first
    r = q::decode_compressed(C | 0x200, 9);
    EXPECT_EQ(r.host_offset, 0x200u);
    EXPECT_EQ(r.bytes, 512u);
    // cluster_bits 16: offset in bits 0-53, sectors in 54-61.
    r = q::decode_compressed(C | 5ull << 54 | 0x1000200, 16);
    EXPECT_EQ(r.host_offset, 0x1000200u);
    EXPECT_EQ(r.bytes, 6u * 512);
    r = q::decode_compressed(C | 0xffull << 54 | 0xabcde1, 16);
    EXPECT_EQ(r.host_offset, 0xabcde1u);
    EXPECT_EQ(r.bytes, 256u * 512 - 0x1e1);
    // Bit 63 (never valid there) does not leak into the sector count.
    r = q::decode_compressed(q::kOflagCopied | C | 3ull << 54 | 0x4000, 16);
    EXPECT_EQ(r.host_offset, 0x4000u);
    EXPECT_EQ(r.bytes, 4u * 512);
    // Highest offset the field holds.
    r = q::decode_compressed(C | ((1ull << 54) - 1), 16);
    EXPECT_EQ(r.host_offset, (1ull << 54) - 1);
    EXPECT_EQ(r.bytes, 1u);
    // cluster_bits 21: offset in bits 0-48, sectors in 49-61.
    r = q::decode_compressed(C | 0x1fffull << 49 | ((1ull << 49) - 1), 21);
    EXPECT_EQ(r.host_offset, (1ull << 49) - 1);
    EXPECT_EQ(r.bytes, 8192u * 512 - 511);
    r = q::decode_compressed(C | 7ull << 49 | 0x123456789a00ull, 21);
    EXPECT_EQ(r.host_offset, 0x123456789a00u);
    EXPECT_EQ(r.bytes, 8u * 512);
}

// --- Format: snapshot table ------------------------------------------------

struct SnapshotSpec {
    uint64_t l1_offset = 0;
    uint32_t l1_size = 0;
    std::string id, name;
    uint32_t extra_size = 0;  // bytes of extra data
    uint64_t disk_size = 0;
    uint64_t icount = 0;
    bool pad = true;
};

std::vector<uint8_t> snapshot_entry(const SnapshotSpec& s) {
    std::vector<uint8_t> e(40 + s.extra_size + s.id.size() + s.name.size(), 0);
    q::store_be64(&e[0], s.l1_offset);
    q::store_be32(&e[8], s.l1_size);
    q::store_be16(&e[12], uint16_t(s.id.size()));
    q::store_be16(&e[14], uint16_t(s.name.size()));
    q::store_be32(&e[16], 1700000000);
    q::store_be32(&e[20], 123);
    q::store_be64(&e[24], 5'000'000'001ull);
    q::store_be32(&e[32], 77);
    q::store_be32(&e[36], s.extra_size);
    if (s.extra_size >= 16) q::store_be64(&e[40 + 8], s.disk_size);
    if (s.extra_size >= 24) q::store_be64(&e[40 + 16], s.icount);
    std::memcpy(&e[40 + s.extra_size], s.id.data(), s.id.size());
    std::memcpy(&e[40 + s.extra_size + s.id.size()], s.name.data(), s.name.size());
    if (s.pad) e.resize((e.size() + 7) / 8 * 8, 0);
    return e;
}

class Qcow2Snapshots : public ::testing::Test {
protected:
    const Geometry g_ = geometry(3, 16, 4, false, 1ull << 30);
    const uint64_t file_size_ = 32 * 65536;
    Result<std::vector<q::Snapshot>> parse(const std::vector<uint8_t>& table, uint32_t count, uint64_t& bytes) {
        return q::parse_snapshots(table, count, g_.h, file_size_, bytes);
    }
    static void append(std::vector<uint8_t>& table, const std::vector<uint8_t>& entry) {
        table.insert(table.end(), entry.begin(), entry.end());
    }
};

TEST_F(Qcow2Snapshots, AValidTableParsesEveryEntryEvenWithoutTheLastEntrysPadding) {
    std::vector<uint8_t> table;
    const auto e0 = snapshot_entry({.l1_offset = 4 * 65536, .l1_size = 2, .id = "1", .name = "first",
                                    .extra_size = 16, .disk_size = 1ull << 29});
    const auto e1 = snapshot_entry({.l1_offset = 5 * 65536, .l1_size = 2, .id = "2", .name = "second one",
                                    .extra_size = 24, .disk_size = 1ull << 30, .icount = 99});
    const auto e2 = snapshot_entry({.l1_offset = 0, .l1_size = 0, .id = "33", .name = "x", .pad = false});
    append(table, e0);
    append(table, e1);
    append(table, e2);
    ASSERT_EQ(e0.size() % 8, 0u);
    ASSERT_EQ(e1.size() % 8, 0u);
    ASSERT_NE(e2.size() % 8, 0u);  // 43 bytes: the padding is missing
    uint64_t bytes = 0;
    auto s = parse(table, 3, bytes);
    ASSERT_TRUE(s) << s.error().describe();
    ASSERT_EQ(s->size(), 3u);
    EXPECT_EQ(bytes, table.size());
    EXPECT_EQ((*s)[0].l1_table_offset, 4u * 65536);
    EXPECT_EQ((*s)[0].l1_size, 2u);
    EXPECT_EQ((*s)[0].id, "1");
    EXPECT_EQ((*s)[0].name, "first");
    EXPECT_EQ((*s)[0].disk_size, 1ull << 29);
    EXPECT_EQ((*s)[0].icount, UINT64_MAX);
    EXPECT_EQ((*s)[0].date_sec, 1700000000u);
    EXPECT_EQ((*s)[0].date_nsec, 123u);
    EXPECT_EQ((*s)[0].vm_clock_nsec, 5'000'000'001u);
    EXPECT_EQ((*s)[0].vm_state_size, 77u);
    EXPECT_EQ((*s)[1].id, "2");
    EXPECT_EQ((*s)[1].name, "second one");
    EXPECT_EQ((*s)[1].disk_size, 1ull << 30);
    EXPECT_EQ((*s)[1].icount, 99u);
    EXPECT_EQ((*s)[2].id, "33");
    EXPECT_EQ((*s)[2].name, "x");
    EXPECT_EQ((*s)[2].disk_size, g_.h.size);  // no extra data: the image's
    // With the padding present, the table takes it too; trailing bytes
    // past the last entry are not part of it.
    table.resize(table.size() + 5, 0);
    s = parse(table, 3, bytes);
    ASSERT_TRUE(s) << s.error().describe();
    EXPECT_EQ(bytes, e0.size() + e1.size() + 48);
    // Fewer entries than the table holds: only those are read.
    s = parse(table, 1, bytes);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->size(), 1u);
    EXPECT_EQ(bytes, e0.size());
}

TEST_F(Qcow2Snapshots, TruncatedTablesAreRefused) {
    std::vector<uint8_t> table;
    append(table, snapshot_entry({.l1_offset = 4 * 65536, .l1_size = 1, .id = "1", .name = "a"}));
    append(table, snapshot_entry({.l1_offset = 4 * 65536, .l1_size = 1, .id = "2", .name = "some name"}));
    uint64_t bytes = 0;
    ASSERT_TRUE(parse(table, 2, bytes));
    const size_t first = 48;
    for (size_t cut : {size_t(0), size_t(10), size_t(39), first, first + 20, first + 49}) {
        SCOPED_TRACE("cut at " + std::to_string(cut));
        std::vector<uint8_t> t(table.begin(), table.begin() + cut);
        auto s = parse(t, 2, bytes);
        ASSERT_FALSE(s);
        EXPECT_EQ(s.error().code, EINVAL);
        EXPECT_NE(s.error().message.find("truncated"), std::string::npos) << s.error().message;
    }
    // More entries claimed than there are.
    auto s = parse(table, 3, bytes);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("truncated"), std::string::npos) << s.error().message;
    // A name length that runs past the table.
    std::vector<uint8_t> t = table;
    q::store_be16(&t[first + 14], 0xffff);
    s = parse(t, 2, bytes);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("truncated"), std::string::npos) << s.error().message;
}

TEST_F(Qcow2Snapshots, ExtraDataOverTheLimitIsRefused) {
    uint64_t bytes = 0;
    auto at_limit = snapshot_entry({.l1_offset = 4 * 65536, .l1_size = 1, .id = "1", .extra_size = 1024});
    EXPECT_TRUE(parse(at_limit, 1, bytes));
    auto over = snapshot_entry({.l1_offset = 4 * 65536, .l1_size = 1, .id = "1", .extra_size = 1025});
    auto s = parse(over, 1, bytes);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, EINVAL);
    EXPECT_NE(s.error().message.find("extra data is too large"), std::string::npos) << s.error().message;
    // A huge length (no allocation, no overflow).
    q::store_be32(&over[36], 0xffffffff);
    s = parse(over, 1, bytes);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("extra data is too large"), std::string::npos) << s.error().message;
}

TEST_F(Qcow2Snapshots, BadSnapshotL1TablesAreRefused) {
    uint64_t bytes = 0;
    auto check = [&](const char* what, SnapshotSpec spec, const std::string& needle) {
        SCOPED_TRACE(what);
        auto s = parse(snapshot_entry(spec), 1, bytes);
        ASSERT_FALSE(s);
        EXPECT_EQ(s.error().code, EINVAL);
        EXPECT_NE(s.error().message.find(needle), std::string::npos) << s.error().message;
    };
    check("huge l1_size", {.l1_offset = 4 * 65536, .l1_size = 0xffffffff, .id = "1"}, "snapshot L1 table is too large");
    check("l1_size just over 32 MiB", {.l1_offset = 4 * 65536, .l1_size = (32u << 20) / 8 + 1, .id = "1"},
          "snapshot L1 table is too large");
    check("unaligned", {.l1_offset = 4 * 65536 + 512, .l1_size = 1, .id = "1"}, "not cluster aligned");
    check("past EOF", {.l1_offset = file_size_, .l1_size = 1, .id = "1"}, "past the end");
    check("ending past EOF", {.l1_offset = file_size_ - 65536, .l1_size = 65536 / 8 + 1, .id = "1"}, "past the end");
    // l1_size 0: no table, any offset.
    EXPECT_TRUE(parse(snapshot_entry({.l1_offset = 12345, .l1_size = 0, .id = "1"}), 1, bytes));
}

// --- The driver ------------------------------------------------------------

struct Shell {
    int rc;
    std::string out;
};

Shell shell(const std::string& cmd) {
    Shell s{-1, {}};
    FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
    if (f == nullptr) return s;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.out.append(buf, n);
    const int status = ::pclose(f);
    s.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return s;
}

std::vector<char> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::vector<char>& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), std::streamsize(data.size()));
}

// Bytes that differ from their neighbours and from zero.
std::vector<char> pattern(uint64_t offset, uint64_t len, uint32_t seed) {
    std::vector<char> v(len);
    for (uint64_t i = 0; i < len; i++) {
        const uint64_t x = (offset + i) * 2654435761u + seed * 40503u;
        v[i] = char((x >> 13) | 1);
    }
    return v;
}

// The first differing byte, for messages.
std::string first_difference(const std::vector<char>& got, const std::vector<char>& want, uint64_t base = 0) {
    if (got.size() != want.size())
        return "sizes differ: " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
    for (uint64_t i = 0; i < got.size(); i++)
        if (got[i] != want[i])
            return "first difference at " + std::to_string(base + i) + ": got " + std::to_string(uint8_t(got[i])) +
                   ", want " + std::to_string(uint8_t(want[i]));
    return "equal";
}

class Qcow2DriverTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
        const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
        std::string tmpl = std::string(base) + "/ioplane-qcow2-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        blk_.reset();
        graph_.reset();
        if (!dir_.empty()) std::filesystem::remove_all(dir_);
    }
    AioContext& main() { return loop_->ctx(); }
    template <class T>
    T run(Task<T> task) {
        return block_on(main(), std::move(task));
    }
    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // qemu-img create -f qcow2 [-o opts] [-b backing -F raw] name size
    void create(const std::string& name, const std::string& size, const std::string& opts = "",
                const std::string& backing = "") {
        std::string cmd = "qemu-img create -q -f qcow2";
        if (!opts.empty()) cmd += " -o " + opts;
        if (!backing.empty()) cmd += " -b " + path(backing) + " -F raw";
        cmd += " " + path(name);
        if (!size.empty()) cmd += " " + size;
        Shell s = shell(cmd);
        ASSERT_EQ(s.rc, 0) << cmd << ": " << s.out;
    }

    // Opens `name` as node "q" over a file node.
    Result<std::shared_ptr<BlockNode>> try_open(const std::string& name, const json& extra = json::object()) {
        json o = {{"driver", "qcow2"},
                  {"node-name", "q"},
                  {"file", {{"driver", "file"}, {"filename", path(name)}, {"node-name", "qf"}}}};
        for (auto& [k, v] : extra.items()) o[k] = v;
        graph_ = std::make_unique<BlockGraph>();
        auto node = graph_->open(OptionTree{o, OptionSyntax::json}, main());
        if (!node) graph_.reset();
        return node;
    }
    // ... and a backend on it (read-write unless the options say read-only).
    void open(const std::string& name, const json& extra = json::object()) {
        auto node = try_open(name, extra);
        ASSERT_TRUE(node) << node.error().describe();
        const bool writable = !extra.contains("read-only") || !extra["read-only"].get<bool>();
        blk_ = std::make_unique<BlockBackend>(*node, writable, "the test");
    }
    // Drops the backend, then the node (its close flushes).
    void close() {
        blk_.reset();
        if (graph_) {
            ASSERT_TRUE(graph_->remove("q"));
        }
        graph_.reset();
    }
    BlockBackend& blk() { return *blk_; }

    void write(uint64_t offset, const std::vector<char>& data) {
        auto r = run(write_bytes(*blk_, offset, data));
        ASSERT_TRUE(r) << "write " << offset << "+" << data.size() << ": " << r.error().describe();
    }
    std::vector<char> read(uint64_t offset, uint64_t len) {
        auto r = run(read_bytes(*blk_, offset, len));
        EXPECT_TRUE(r) << "read " << offset << "+" << len << ": " << (r ? "" : r.error().describe());
        return r ? *r : std::vector<char>();
    }
    BlockStatus status(uint64_t offset, uint64_t len) {
        auto r = run(blk_->co_block_status(offset, len));
        EXPECT_TRUE(r) << "block status " << offset << "+" << len << ": " << (r ? "" : r.error().describe());
        return r ? *r : BlockStatus{};
    }

    // qemu-img check --output=json: clean (exit 0, no leaks, no corruption).
    ::testing::AssertionResult check_clean(const std::string& name, json* report = nullptr) {
        Shell s = shell("qemu-img check --output=json " + path(name));
        const auto open_brace = s.out.find('{'), close_brace = s.out.rfind('}');
        json j;
        if (open_brace != std::string::npos && close_brace != std::string::npos)
            j = json::parse(s.out.substr(open_brace, close_brace - open_brace + 1), nullptr, false);
        if (report) *report = j;
        if (s.rc != 0 || !j.is_object() || j.value("check-errors", 0) != 0 || j.value("leaks", 0) != 0 ||
            j.value("corruptions", 0) != 0)
            return ::testing::AssertionFailure() << "qemu-img check " << name << " (exit " << s.rc << "): " << s.out;
        return ::testing::AssertionSuccess();
    }
    // The guest's view as qemu-img reads it (through the backing chain).
    std::vector<char> convert_to_raw(const std::string& name) {
        const std::string out = path(name + ".converted.raw");
        Shell s = shell("qemu-img convert -f qcow2 -O raw " + path(name) + " " + out);
        EXPECT_EQ(s.rc, 0) << s.out;
        auto data = read_file(out);
        std::filesystem::remove(out);
        return data;
    }
    q::Header file_header(const std::string& name) {
        const auto bytes = read_file(path(name));
        auto h = q::parse_header(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), bytes.size());
        EXPECT_TRUE(h) << (h ? "" : h.error().describe());
        return h ? *h : q::Header{};
    }

    std::unique_ptr<MainLoop> loop_;
    std::string dir_;
    std::unique_ptr<BlockGraph> graph_;
    std::unique_ptr<BlockBackend> blk_;
};

TEST_F(Qcow2DriverTest, WritesAtUnalignedOffsetsReadBackAcrossClusters) {
    constexpr uint64_t kSize = 4 << 20;
    create("a.qcow2", std::to_string(kSize));
    open("a.qcow2");
    std::vector<char> model(kSize, 0);
    std::mt19937_64 rng(7);
    // Edges of clusters and of L2 ranges first, then random ones.
    std::vector<std::pair<uint64_t, uint64_t>> writes = {
        {65536 - 1, 2}, {3 * 65536 - 700, 65536 + 1400}, {100, 1}, {kSize - 3, 3}, {65536 * 10 + 511, 513}};
    for (int i = 0; i < 150; i++) {
        const uint64_t off = rng() % kSize;
        writes.push_back({off, 1 + rng() % std::min<uint64_t>(200000, kSize - off)});
    }
    uint32_t seed = 1;
    for (auto [off, len] : writes) {
        auto data = pattern(off, len, seed++);
        write(off, data);
        std::copy(data.begin(), data.end(), model.begin() + off);
        // Read back at once, one byte wider on each side where possible.
        const uint64_t a = off ? off - 1 : 0, b = std::min(kSize, off + len + 1);
        auto got = read(a, b - a);
        ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + a))
            << "after write " << off << "+" << len << ": "
            << first_difference(got, std::vector<char>(model.begin() + a, model.begin() + b), a);
    }
    for (int i = 0; i < 100; i++) {
        const uint64_t off = rng() % kSize, len = 1 + rng() % std::min<uint64_t>(300000, kSize - off);
        auto got = read(off, len);
        ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + off)) << "read " << off << "+" << len;
    }
    auto all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    EXPECT_TRUE(check_clean("a.qcow2"));
    auto converted = convert_to_raw("a.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
}

// Writes and zeroes in images of several geometries; flushed and closed,
// qemu-img finds them clean and reads what was written; reopened, the
// driver reads it all back.
TEST_F(Qcow2DriverTest, FlushCloseCheckReopenReadsEverythingBack) {
    struct Variant {
        const char* opts;
        uint64_t size;
    };
    const std::vector<Variant> variants = {
        {"cluster_size=65536", 8 << 20}, {"cluster_size=512", 2 << 20},    {"cluster_size=2M", 16 << 20},
        {"compat=0.10", 8 << 20},        {"extended_l2=on", 8 << 20},      {"refcount_bits=64,cluster_size=4096", 4 << 20},
        {"refcount_bits=2,cluster_size=1024", 2 << 20}};
    for (size_t vi = 0; vi < variants.size(); vi++) {
        const Variant& v = variants[vi];
        SCOPED_TRACE(v.opts);
        const std::string name = "img-" + std::to_string(vi) + ".qcow2";
        create(name, std::to_string(v.size), v.opts);
        open(name);
        std::vector<char> model(v.size, 0);
        std::mt19937_64 rng(99);
        for (int i = 0; i < 80; i++) {
            const uint64_t off = rng() % v.size, len = 1 + rng() % std::min<uint64_t>(150000, v.size - off);
            if (i % 5 == 4) {
                auto r = run(blk().co_pwrite_zeroes(off, len, i % 10 == 9 ? uint32_t(kMayUnmap) : 0u));
                ASSERT_TRUE(r) << "write_zeroes " << off << "+" << len << ": " << r.error().describe();
                std::fill(model.begin() + off, model.begin() + off + len, 0);
            } else {
                auto data = pattern(off, len, uint32_t(i));
                write(off, data);
                std::copy(data.begin(), data.end(), model.begin() + off);
            }
        }
        auto before = read(0, v.size);
        ASSERT_TRUE(before == model) << "before closing: " << first_difference(before, model);
        ASSERT_TRUE(run(blk().co_flush()));
        close();
        json report;
        EXPECT_TRUE(check_clean(name, &report));
        auto converted = convert_to_raw(name);
        EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
        open(name);
        auto again = read(0, v.size);
        EXPECT_TRUE(again == model) << "reopened: " << first_difference(again, model);
        // And it still takes writes after the reopen.
        write(v.size / 3, pattern(0, 1000, 5));
        std::copy_n(pattern(0, 1000, 5).begin(), 1000, model.begin() + v.size / 3);
        close();
        EXPECT_TRUE(check_clean(name));
        converted = convert_to_raw(name);
        EXPECT_TRUE(converted == model) << "after the second session: " << first_difference(converted, model);
        std::filesystem::remove(path(name));
    }
}

// An allocating write of part of a cluster over a backing node: the rest of
// the cluster (or, with extended L2 entries, of the subcluster) is copied
// from the backing node into the new cluster.
TEST_F(Qcow2DriverTest, PartialAllocatingWriteOverBackingCopiesTheRestFromBacking) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536;
    write_file(path("base.raw"), pattern(0, kSize, 42));
    const std::vector<char> base = pattern(0, kSize, 42);
    for (bool extended : {false, true}) {
        SCOPED_TRACE(extended ? "extended L2" : "plain L2");
        const std::string name = extended ? "top-ext.qcow2" : "top.qcow2";
        create(name, "", extended ? "extended_l2=on" : "", "base.raw");
        open(name);  // the backing file from the header
        ASSERT_NE(blk().node().child(ChildRole::backing), nullptr);
        const uint64_t off = kCluster + 3000, len = 1000;
        const auto data = pattern(0, len, 7);
        write(off, data);
        std::vector<char> model = base;
        std::copy(data.begin(), data.end(), model.begin() + off);
        auto got = read(0, 3 * kCluster);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin()))
            << first_difference(got, std::vector<char>(model.begin(), model.begin() + 3 * kCluster));
        // Allocated: the whole cluster, or with extended L2 entries the
        // subcluster written (2048..4096 of the cluster).
        const uint64_t alloc_start = extended ? kCluster + 2048 : kCluster;
        const uint64_t alloc_bytes = extended ? 2048 : kCluster;
        BlockStatus st = status(alloc_start, 2 * kCluster - alloc_start);
        EXPECT_TRUE(st.allocated);
        EXPECT_TRUE(st.data);
        EXPECT_FALSE(st.zero);
        EXPECT_EQ(st.bytes, alloc_bytes);
        if (extended) {
            BlockStatus head = status(kCluster, kCluster);
            EXPECT_FALSE(head.allocated);
            EXPECT_EQ(head.bytes, 2048u);
        }
        BlockStatus before = status(0, kCluster);
        EXPECT_FALSE(before.allocated);
        EXPECT_EQ(before.bytes, kCluster);
        BlockStatus after = status(2 * kCluster, kCluster);
        EXPECT_FALSE(after.allocated);
        ASSERT_TRUE(run(blk().co_flush()));
        close();
        EXPECT_TRUE(check_clean(name));
        auto converted = convert_to_raw(name);
        EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
        // Without its backing file, the top image shows what it holds itself.
        open(name, {{"backing", nullptr}});
        auto own = read(kCluster, kCluster);
        std::vector<char> want(kCluster, 0);
        const uint64_t sub = extended ? kCluster / 32 : kCluster;  // what was copied
        const uint64_t copy_start = (off - kCluster) / sub * sub;
        for (uint64_t i = copy_start; i < copy_start + sub; i++) want[i] = model[kCluster + i];
        EXPECT_TRUE(own == want) << first_difference(own, want, kCluster);
        close();
    }
}

// Over a backing file, so that zeroes must hide it; version 3 (zero flags,
// and subclusters with extended L2 entries) and version 2 (zeroes written
// as data).
TEST_F(Qcow2DriverTest, WriteZeroesReadsZeroesAndBlockStatusSaysZero) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536;
    write_file(path("base.raw"), pattern(0, kSize, 3));
    for (const char* opts : {"compat=1.1", "extended_l2=on", "compat=0.10"}) {
        SCOPED_TRACE(opts);
        const bool v3 = std::string(opts) != "compat=0.10";
        const std::string name = std::string("z-") + opts + ".qcow2";
        std::vector<char> model = pattern(0, kSize, 3);
        create(name, "", opts, "base.raw");
        open(name);
        const auto data = pattern(0, kCluster, 9);
        write(kCluster, data);  // cluster 1: data of its own; 2 and 3 from the backing file
        std::copy(data.begin(), data.end(), model.begin() + kCluster);
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(kCluster, 3 * kCluster, 0)));
        std::fill(model.begin() + kCluster, model.begin() + 4 * kCluster, 0);
        auto got = read(0, 5 * kCluster);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin()))
            << first_difference(got, std::vector<char>(model.begin(), model.begin() + 5 * kCluster));
        for (uint64_t c = 1; c <= 3 && v3; c++) {
            SCOPED_TRACE("cluster " + std::to_string(c));
            BlockStatus st = status(c * kCluster, kCluster);
            EXPECT_TRUE(st.zero);
            EXPECT_FALSE(st.data);
            EXPECT_TRUE(st.allocated);  // the zeroes hide the backing file
            EXPECT_EQ(st.bytes, kCluster);
        }
        // Unaligned: the partial clusters' bytes are written as zeroes.
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(5 * kCluster + 100, kCluster + 200, 0)));
        std::fill(model.begin() + 5 * kCluster + 100, model.begin() + 6 * kCluster + 300, 0);
        got = read(4 * kCluster, 4 * kCluster);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin() + 4 * kCluster))
            << first_difference(got, std::vector<char>(model.begin() + 4 * kCluster, model.begin() + 8 * kCluster),
                                4 * kCluster);
        // Subcluster-aligned (2 KiB with extended L2 entries) inside a cluster.
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(9 * kCluster + 4096, 8192, 0)));
        std::fill(model.begin() + 9 * kCluster + 4096, model.begin() + 9 * kCluster + 12288, 0);
        // A whole cluster with unmap allowed, and one at the image's end.
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(8 * kCluster, kCluster, kMayUnmap)));
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(kSize - 512, 512, 0)));
        std::fill(model.begin() + 8 * kCluster, model.begin() + 9 * kCluster, 0);
        std::fill(model.end() - 512, model.end(), 0);
        if (v3) {
            EXPECT_TRUE(status(8 * kCluster, kCluster).zero);
        }
        auto all = read(0, kSize);
        EXPECT_TRUE(all == model) << first_difference(all, model);
        // Data written into a zeroed cluster: the rest of it stays zero.
        write(2 * kCluster + 10, std::vector<char>(10, 'x'));
        std::fill(model.begin() + 2 * kCluster + 10, model.begin() + 2 * kCluster + 20, 'x');
        got = read(2 * kCluster, kCluster);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin() + 2 * kCluster))
            << first_difference(got, std::vector<char>(model.begin() + 2 * kCluster, model.begin() + 3 * kCluster),
                                2 * kCluster);
        ASSERT_TRUE(run(blk().co_flush()));
        close();
        EXPECT_TRUE(check_clean(name));
        auto converted = convert_to_raw(name);
        EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
    }
}

TEST_F(Qcow2DriverTest, DiscardDropsWholeClustersAndTheirSpaceIsReused) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536;
    create("d.qcow2", std::to_string(kSize));
    std::vector<char> model(kSize, 0);
    auto data = pattern(0, 8 * kCluster, 11);
    std::copy(data.begin(), data.end(), model.begin());
    // Without discard=unmap (QEMU's default, discard=ignore) a discard
    // changes nothing.
    open("d.qcow2");
    write(0, data);
    ASSERT_TRUE(run(blk().co_pdiscard(0, 8 * kCluster)));
    EXPECT_TRUE(read(0, 8 * kCluster) == data);
    close();
    open("d.qcow2", {{"discard", "unmap"}});
    std::set<uint64_t> hosts;
    for (uint64_t c = 2; c <= 5; c++) {
        BlockStatus st = status(c * kCluster, kCluster);
        ASSERT_TRUE(st.data && st.allocated);
        hosts.insert(st.offset);
    }
    ASSERT_EQ(hosts.size(), 4u);
    ASSERT_TRUE(run(blk().co_flush()));
    // Clusters 2..5 whole; 1 and 6 partly (left as they are).
    ASSERT_TRUE(run(blk().co_pdiscard(kCluster + 100, 5 * kCluster)));
    std::fill(model.begin() + 2 * kCluster, model.begin() + 6 * kCluster, 0);
    auto got = read(0, 8 * kCluster);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin()))
        << first_difference(got, std::vector<char>(model.begin(), model.begin() + 8 * kCluster));
    BlockStatus st = status(2 * kCluster, 4 * kCluster);
    EXPECT_FALSE(st.allocated);
    EXPECT_FALSE(st.data);
    EXPECT_TRUE(st.zero);
    EXPECT_EQ(st.bytes, 4 * kCluster);
    EXPECT_TRUE(status(kCluster, kCluster).data);
    EXPECT_TRUE(status(6 * kCluster, kCluster).data);
    // Once the discard is on disk, its clusters are free for new data.
    ASSERT_TRUE(run(blk().co_flush()));
    auto fresh = pattern(0, 4 * kCluster, 12);
    write(10 * kCluster, fresh);
    std::copy(fresh.begin(), fresh.end(), model.begin() + 10 * kCluster);
    for (uint64_t c = 10; c < 14; c++) {
        BlockStatus n = status(c * kCluster, kCluster);
        ASSERT_TRUE(n.data);
        EXPECT_TRUE(hosts.count(n.offset)) << "cluster " << c << " at host " << n.offset << ", not a freed one";
    }
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    json report;
    EXPECT_TRUE(check_clean("d.qcow2", &report));
    EXPECT_EQ(report.value("allocated-clusters", 0), 8);
    auto converted = convert_to_raw("d.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
}

// Clusters shared with an internal snapshot (qemu-img snapshot -c): writes
// copy them (and the L2 table that points to them) and leave the snapshot
// as it was.
TEST_F(Qcow2DriverTest, WritesToClustersSharedWithASnapshotCopyThem) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536;
    create("s.qcow2", std::to_string(kSize));
    Shell s = shell("qemu-io -f qcow2 -c 'write -P 0x11 0 512k' " + path("s.qcow2"));
    ASSERT_EQ(s.rc, 0) << s.out;
    s = shell("qemu-img snapshot -c s1 " + path("s.qcow2"));
    ASSERT_EQ(s.rc, 0) << s.out;
    std::vector<char> snap(kSize, 0);
    std::fill(snap.begin(), snap.begin() + 512 * 1024, 0x11);
    std::vector<char> model = snap;
    open("s.qcow2", {{"discard", "unmap"}});
    const uint64_t shared_host = status(kCluster, kCluster).offset;
    // Part of a shared cluster: the rest is copied from it.
    write(kCluster + 100, std::vector<char>(300, 'a'));
    std::fill(model.begin() + kCluster + 100, model.begin() + kCluster + 400, 'a');
    const BlockStatus copied = status(kCluster, kCluster);
    EXPECT_TRUE(copied.data);
    EXPECT_NE(copied.offset, shared_host) << "a shared cluster was written in place";
    // A whole shared cluster; zeroes and a discard over shared ones; a new one.
    write(3 * kCluster, std::vector<char>(kCluster, 'b'));
    std::fill(model.begin() + 3 * kCluster, model.begin() + 4 * kCluster, 'b');
    ASSERT_TRUE(run(blk().co_pwrite_zeroes(5 * kCluster, kCluster, 0)));
    std::fill(model.begin() + 5 * kCluster, model.begin() + 6 * kCluster, 0);
    ASSERT_TRUE(run(blk().co_pdiscard(6 * kCluster, kCluster)));
    std::fill(model.begin() + 6 * kCluster, model.begin() + 7 * kCluster, 0);
    write(600 * 1024, std::vector<char>(1000, 'c'));
    std::fill(model.begin() + 600 * 1024, model.begin() + 600 * 1024 + 1000, 'c');
    auto all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    // The copy is the image's own now: written in place.
    write(kCluster + 1000, std::vector<char>(10, 'd'));
    std::fill(model.begin() + kCluster + 1000, model.begin() + kCluster + 1010, 'd');
    EXPECT_EQ(status(kCluster, kCluster).offset, copied.offset);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    EXPECT_TRUE(check_clean("s.qcow2"));
    auto converted = convert_to_raw("s.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
    const std::string out = path("snap.raw");
    s = shell("qemu-img convert -f qcow2 -l snapshot.name=s1 -O raw " + path("s.qcow2") + " " + out);
    ASSERT_EQ(s.rc, 0) << s.out;
    auto snapshot = read_file(out);
    EXPECT_TRUE(snapshot == snap) << "the snapshot changed: " << first_difference(snapshot, snap);
    // Reopened, the driver lists the snapshot and reads the active layer.
    open("s.qcow2");
    auto* driver = dynamic_cast<q::Qcow2Driver*>(&blk().node().driver());
    ASSERT_NE(driver, nullptr);
    ASSERT_EQ(driver->snapshots().size(), 1u);
    EXPECT_EQ(driver->snapshots()[0].name, "s1");
    EXPECT_EQ(driver->snapshots()[0].disk_size, kSize);
    all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    close();
}

// A backing file shorter than the image (and not cluster aligned): past
// its end the image reads zeroes, and copy-on-write copies them.
TEST_F(Qcow2DriverTest, BackingFileShorterThanTheImage) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536, kBase = 102400;
    write_file(path("short.raw"), pattern(0, kBase, 8));
    create("sb.qcow2", std::to_string(kSize), "", "short.raw");
    open("sb.qcow2");
    std::vector<char> model(kSize, 0);
    const auto base = pattern(0, kBase, 8);
    std::copy(base.begin(), base.end(), model.begin());
    auto all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    BlockStatus below = status(0, kCluster);
    EXPECT_FALSE(below.allocated);
    EXPECT_FALSE(below.zero);
    BlockStatus past = status(4 * kCluster, kCluster);
    EXPECT_FALSE(past.allocated);
    EXPECT_TRUE(past.zero);
    // Cluster 1 holds the backing file's end; cluster 3 lies past it.
    write(kCluster + 50000, std::vector<char>(100, 'w'));
    std::fill(model.begin() + kCluster + 50000, model.begin() + kCluster + 50100, 'w');
    write(3 * kCluster + 7, std::vector<char>(9, 'v'));
    std::fill(model.begin() + 3 * kCluster + 7, model.begin() + 3 * kCluster + 16, 'v');
    all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    EXPECT_TRUE(check_clean("sb.qcow2"));
    auto converted = convert_to_raw("sb.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
    // The copied clusters hold the backing file's bytes and the zeroes past it.
    open("sb.qcow2", {{"backing", nullptr}});
    auto own = read(kCluster, kCluster);
    EXPECT_TRUE(std::equal(own.begin(), own.end(), model.begin() + kCluster))
        << first_difference(own, std::vector<char>(model.begin() + kCluster, model.begin() + 2 * kCluster), kCluster);
    close();
}

// A virtual size that ends inside a cluster: writes, zeroes and discards
// reaching the end treat the last cluster as whole.
TEST_F(Qcow2DriverTest, ImageEndingInsideAClusterWritesZeroesAndDiscardsToTheEnd) {
    constexpr uint64_t kCluster = 65536, kSize = (1 << 20) + 1536;
    create("u.qcow2", std::to_string(kSize));
    open("u.qcow2", {{"discard", "unmap"}});
    ASSERT_EQ(blk().length(), kSize);
    std::vector<char> model(kSize, 0);
    auto put = [&](uint64_t off, const std::vector<char>& d) {
        write(off, d);
        std::copy(d.begin(), d.end(), model.begin() + off);
    };
    put(kSize - 1000, pattern(0, 1000, 1));
    put(kSize - kCluster - 10, pattern(0, kCluster + 10, 2));
    auto all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    // Zeroes from inside the last cluster to the end.
    ASSERT_TRUE(run(blk().co_pwrite_zeroes(kSize - 1024, 1024, 0)));
    std::fill(model.end() - 1024, model.end(), 0);
    all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    // The whole last (partial) cluster.
    ASSERT_TRUE(run(blk().co_pwrite_zeroes(1 << 20, 1536, 0)));
    std::fill(model.begin() + (1 << 20), model.end(), 0);
    BlockStatus st = status(1 << 20, 1536);
    EXPECT_TRUE(st.zero);
    EXPECT_EQ(st.bytes, 1536u);
    put(kSize - 700, pattern(0, 500, 3));
    // A discard to the end takes the last cluster too.
    ASSERT_TRUE(run(blk().co_pdiscard(kSize - 1536 - kCluster, kCluster + 1536)));
    std::fill(model.end() - 1536 - kCluster, model.end(), 0);
    all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    st = status(1 << 20, 1536);
    EXPECT_FALSE(st.data);
    EXPECT_TRUE(st.zero);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    EXPECT_TRUE(check_clean("u.qcow2"));
    auto converted = convert_to_raw("u.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
}

// --- Concurrent allocating writes --------------------------------------------

struct Race {
    int started = 0;
    int finished = 0;
    std::vector<int> started_at_completion;
    std::vector<std::string> errors;
};

Task<void> write_piece(BlockBackend* blk, uint64_t offset, std::vector<char> data, Race* race) {
    race->started++;
    auto r = co_await write_bytes(*blk, offset, std::move(data));
    race->started_at_completion.push_back(race->started);
    if (!r) race->errors.push_back(r.error().describe());
    race->finished++;
}

Task<void> race_writes(BlockBackend* blk, std::vector<std::pair<uint64_t, std::vector<char>>> writes, Race* race) {
    for (auto& [offset, data] : writes) spawn_now(write_piece(blk, offset, std::move(data), race));
    while (race->finished < int(writes.size())) co_await yield_now();
}

TEST_F(Qcow2DriverTest, ConcurrentAllocatingWritesToOneClusterAllocateItOnce) {
    constexpr uint64_t kCluster = 65536, kPieces = 32, kPiece = 512;
    constexpr uint64_t kSize = 1 << 20;
    write_file(path("base.raw"), pattern(0, kSize, 5));
    for (int variant = 0; variant < 8; variant++) {
        const bool with_backing = variant & 1, adjacent = variant & 2, extended = variant & 4;
        {
            SCOPED_TRACE(std::string(with_backing ? "over a backing file" : "no backing file") +
                         (adjacent ? ", adjacent pieces" : ", spread pieces") + (extended ? ", extended L2" : ""));
            const std::string name = "race-" + std::to_string(variant) + ".qcow2";
            const std::string opts = extended ? "extended_l2=on" : "";
            if (with_backing) create(name, "", opts, "base.raw");
            else create(name, std::to_string(kSize), opts);
            open(name);
            const uint64_t cluster = 3 * kCluster;
            std::vector<char> model = with_backing ? pattern(0, kSize, 5) : std::vector<char>(kSize, 0);
            std::vector<std::pair<uint64_t, std::vector<char>>> writes;
            for (uint64_t i = 0; i < kPieces; i++) {
                const uint64_t off = cluster + (adjacent ? i * kPiece : i * (kCluster / kPieces) + 1024);
                auto data = std::vector<char>(kPiece, char('A' + i));
                std::copy(data.begin(), data.end(), model.begin() + off);
                writes.push_back({off, std::move(data)});
            }
            Race race;
            run(race_writes(&blk(), std::move(writes), &race));
            EXPECT_TRUE(race.errors.empty()) << race.errors.front();
            ASSERT_EQ(race.started_at_completion.size(), kPieces);
            EXPECT_EQ(race.started_at_completion.front(), int(kPieces)) << "a write completed before all started";
            auto got = read(cluster, kCluster);
            EXPECT_TRUE(std::equal(got.begin(), got.end(), model.begin() + cluster))
                << first_difference(got, std::vector<char>(model.begin() + cluster, model.begin() + cluster + kCluster),
                                    cluster);
            BlockStatus st = status(cluster, kCluster);
            EXPECT_TRUE(st.allocated && st.data);
            // (With extended L2 entries and adjacent pieces, only the 8
            // subclusters written are allocated.)
            const uint64_t expect_bytes = extended && adjacent ? 8 * 2048 : kCluster;
            EXPECT_EQ(st.bytes, expect_bytes) << "the cluster is not one contiguous host cluster";
            EXPECT_EQ(st.offset % kCluster, 0u);
            auto all = read(0, kSize);
            EXPECT_TRUE(all == model) << first_difference(all, model);
            ASSERT_TRUE(run(blk().co_flush()));
            close();
            json report;
            EXPECT_TRUE(check_clean(name, &report));
            EXPECT_EQ(report.value("allocated-clusters", -1), 1) << report.dump();
            // Header, refcount table, refcount block, L1 table, L2 table, data.
            EXPECT_EQ(report.value("image-end-offset", 0), 6 * int(kCluster)) << report.dump();
            auto converted = convert_to_raw(name);
            EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
        }
    }
}

// Many clusters at once, each written by several coroutines, over a
// backing file: every piece lands and each cluster is allocated once.
TEST_F(Qcow2DriverTest, ConcurrentWritesAcrossManyClustersKeepEveryPiece) {
    constexpr uint64_t kCluster = 65536, kSize = 4 << 20;
    write_file(path("base.raw"), pattern(0, kSize, 6));
    create("many.qcow2", "", "", "base.raw");
    open("many.qcow2");
    std::vector<char> model = pattern(0, kSize, 6);
    std::mt19937_64 rng(5);
    std::vector<std::pair<uint64_t, std::vector<char>>> writes;
    std::vector<uint8_t> owner(kSize, 0);
    // Non-overlapping random pieces (1..3000 bytes) in clusters 0..15.
    for (int i = 0; i < 200; i++) {
        const uint64_t len = 1 + rng() % 3000, off = rng() % (16 * kCluster - len);
        bool free = true;
        for (uint64_t b = off; b < off + len && free; b++) free = owner[b] == 0;
        if (!free) continue;
        std::fill(owner.begin() + off, owner.begin() + off + len, 1);
        auto data = pattern(off, len, 100 + i);
        std::copy(data.begin(), data.end(), model.begin() + off);
        writes.push_back({off, std::move(data)});
    }
    ASSERT_GT(writes.size(), 50u);
    int clusters_written = 0;
    for (uint64_t c = 0; c < 16; c++)
        clusters_written += std::any_of(owner.begin() + c * kCluster, owner.begin() + (c + 1) * kCluster,
                                        [](uint8_t o) { return o != 0; });
    const size_t n = writes.size();
    Race race;
    run(race_writes(&blk(), std::move(writes), &race));
    EXPECT_TRUE(race.errors.empty()) << race.errors.front();
    EXPECT_EQ(race.started_at_completion.size(), n);
    auto all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    json report;
    EXPECT_TRUE(check_clean("many.qcow2", &report));
    EXPECT_EQ(report.value("allocated-clusters", -1), clusters_written) << report.dump();
    auto converted = convert_to_raw("many.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
}

Task<void> run_op(std::function<Task<Result<void>>()> op, std::string what, Race* race) {
    race->started++;
    auto r = co_await op();
    race->started_at_completion.push_back(race->started);
    if (!r) race->errors.push_back(what + ": " + r.error().describe());
    race->finished++;
}

Task<void> race_ops(std::vector<std::pair<std::string, std::function<Task<Result<void>>()>>> ops, Race* race) {
    for (auto& [what, op] : ops) spawn_now(run_op(std::move(op), what, race));
    while (race->finished < int(ops.size())) co_await yield_now();
}

Task<Result<void>> read_expect(BlockBackend* blk, uint64_t offset, std::vector<char> want) {
    auto got = co_await read_bytes(*blk, offset, want.size());
    if (!got) co_return std::unexpected(got.error());
    if (*got != want) co_return fail(EIO, "read " + first_difference(*got, want, offset));
    co_return Result<void>{};
}

// Allocating writes, in-place writes, zeroes and discards (freeing
// clusters), reads and flushes (applying the frees) all at once over a
// backing file, in clusters that share L2 tables; then writes that reuse
// the freed clusters, again beside flushes.
TEST_F(Qcow2DriverTest, MixedConcurrentRequestsKeepDataAndRefcountsRight) {
    constexpr uint64_t kCluster = 65536, kClusters = 64, kSize = kClusters * kCluster;
    write_file(path("base.raw"), pattern(0, kSize, 21));
    create("mix.qcow2", "", "", "base.raw");
    open("mix.qcow2", {{"discard", "unmap"}});
    std::vector<char> model = pattern(0, kSize, 21);
    // Clusters 16..47 and 56..63 allocated.
    for (uint64_t c : {16u, 56u}) {
        const uint64_t n = c == 16 ? 32 : 8;
        auto data = pattern(c * kCluster, n * kCluster, 22);
        write(c * kCluster, data);
        std::copy(data.begin(), data.end(), model.begin() + c * kCluster);
    }
    ASSERT_TRUE(run(blk().co_flush()));
    std::mt19937_64 rng(3);
    BlockBackend* b = &blk();
    std::vector<std::pair<std::string, std::function<Task<Result<void>>()>>> ops;
    auto add_write = [&](uint64_t off, uint64_t len, uint32_t seed) {
        auto data = pattern(off, len, seed);
        std::copy(data.begin(), data.end(), model.begin() + off);
        ops.push_back({"write " + std::to_string(off) + "+" + std::to_string(len),
                       [b, off, data] { return write_bytes(*b, off, data); }});
    };
    for (uint64_t c = 0; c < kClusters; c++) {
        const uint64_t base = c * kCluster;
        if (c < 16 || (c >= 48 && c < 56)) {
            // Unallocated: several allocating writes of disjoint pieces.
            for (uint64_t k = 0; k < 4; k++) add_write(base + k * 16384 + rng() % 8000, 1 + rng() % 8000, uint32_t(c * 10 + k));
            if (c >= 48) {
                // And a read of the untouched tail (from the backing file).
                const uint64_t off = base + kCluster - 300;
                std::vector<char> want(model.begin() + off, model.begin() + off + 300);
                ops.push_back({"read " + std::to_string(off), [b, off, want] { return read_expect(b, off, want); }});
            }
        } else if (c < 32) {
            const uint32_t flags = c % 2 ? uint32_t(kMayUnmap) : 0u;
            std::fill(model.begin() + base, model.begin() + base + kCluster, 0);
            ops.push_back({"zeroes " + std::to_string(base),
                           [b, base, flags] { return b->co_pwrite_zeroes(base, kCluster, flags); }});
        } else if (c < 48) {
            // A discard over a backing file leaves zeroes (QEMU's qcow2 does).
            std::fill(model.begin() + base, model.begin() + base + kCluster, 0);
            ops.push_back({"discard " + std::to_string(base), [b, base] { return b->co_pdiscard(base, kCluster); }});
        } else {
            // Allocated: in-place writes and a read of what stays.
            add_write(base + 100, 1000, uint32_t(c));
            add_write(base + 30000, 20000, uint32_t(c + 1));
            std::vector<char> want(model.begin() + base + 60000, model.begin() + base + kCluster);
            ops.push_back({"read " + std::to_string(base + 60000),
                           [b, base, want] { return read_expect(b, base + 60000, want); }});
        }
        if (c % 8 == 7) ops.push_back({"flush", [b] { return b->co_flush(); }});
    }
    std::shuffle(ops.begin(), ops.end(), rng);
    {
        Race race;
        const size_t n = ops.size();
        run(race_ops(std::move(ops), &race));
        for (const auto& e : race.errors) ADD_FAILURE() << e;
        EXPECT_EQ(race.finished, int(n));
    }
    auto all = read(0, kSize);
    ASSERT_TRUE(all == model) << first_difference(all, model);
    for (uint64_t c = 16; c < 48; c++) {
        BlockStatus st = status(c * kCluster, kCluster);
        EXPECT_TRUE(st.zero && st.allocated) << "cluster " << c;
    }
    // New data over the zeroed and discarded clusters, beside flushes.
    ops.clear();
    for (uint64_t c = 16; c < 48; c++) {
        add_write(c * kCluster + 512 * (c % 7), 3000, uint32_t(500 + c));
        if (c % 4 == 0) ops.push_back({"flush", [b] { return b->co_flush(); }});
    }
    std::shuffle(ops.begin(), ops.end(), rng);
    {
        Race race;
        run(race_ops(std::move(ops), &race));
        for (const auto& e : race.errors) ADD_FAILURE() << e;
    }
    all = read(0, kSize);
    EXPECT_TRUE(all == model) << first_difference(all, model);
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    json report;
    EXPECT_TRUE(check_clean("mix.qcow2", &report));
    auto converted = convert_to_raw("mix.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
    // Every cluster written: clusters 0..15, 16..47 (new data), 48..63.
    EXPECT_EQ(report.value("allocated-clusters", -1), int(kClusters)) << report.dump();
}

// The corrupt bit allows read-only opens only; the dirty bit (lazy
// refcounts, not kept by this driver) too.
TEST_F(Qcow2DriverTest, CorruptOrDirtyImagesOpenOnlyReadOnly) {
    constexpr uint64_t kSize = 1 << 20;
    create("c.qcow2", std::to_string(kSize));
    Shell s = shell("qemu-io -f qcow2 -c 'write -P 0x5a 4096 8192' " + path("c.qcow2"));
    ASSERT_EQ(s.rc, 0) << s.out;
    std::vector<char> model(kSize, 0);
    std::fill(model.begin() + 4096, model.begin() + 12288, 0x5a);
    struct Case {
        uint64_t bit;
        int code;
        const char* needle;
    };
    for (const Case& c : {Case{q::kIncompatCorrupt, EACCES, "corrupt"}, Case{q::kIncompatDirty, ENOTSUP, "dirty"}}) {
        SCOPED_TRACE(c.needle);
        {
            auto bytes = read_file(path("c.qcow2"));
            q::store_be64(reinterpret_cast<uint8_t*>(&bytes[72]), c.bit);
            write_file(path("c.qcow2"), bytes);
        }
        auto rw = try_open("c.qcow2");
        ASSERT_FALSE(rw) << "opened read-write";
        EXPECT_EQ(rw.error().code, c.code) << rw.error().message;
        EXPECT_NE(rw.error().message.find(c.needle), std::string::npos) << rw.error().message;
        open("c.qcow2", {{"read-only", true}});
        auto all = read(0, kSize);
        EXPECT_TRUE(all == model) << first_difference(all, model);
        close();
        // Closing a read-only node leaves the header as it was.
        EXPECT_EQ(file_header("c.qcow2").incompatible_features, c.bit);
    }
}

// L2 and refcount caches of the minimum size (2 and 4 tables) over 512-byte
// clusters: tables are evicted, dirty ones written back, all the time, under
// concurrent writes.
TEST_F(Qcow2DriverTest, TinyMetadataCachesKeepTheImageConsistent) {
    constexpr uint64_t kSize = 4 << 20;
    create("t.qcow2", std::to_string(kSize), "cluster_size=512");
    open("t.qcow2", {{"l2-cache-size", 1024}, {"refcount-cache-size", 2048}});
    std::vector<char> model(kSize, 0);
    std::mt19937_64 rng(77);
    for (int round = 0; round < 3; round++) {
        std::vector<std::pair<uint64_t, std::vector<char>>> writes;
        std::vector<uint8_t> owner(kSize, 0);
        for (int i = 0; i < 300; i++) {
            const uint64_t len = 1 + rng() % 5000, off = rng() % (kSize - len);
            bool free = true;
            for (uint64_t b = off; b < off + len && free; b++) free = owner[b] == 0;
            if (!free) continue;
            std::fill(owner.begin() + off, owner.begin() + off + len, 1);
            auto data = pattern(off, len, uint32_t(1000 * round + i));
            std::copy(data.begin(), data.end(), model.begin() + off);
            writes.push_back({off, std::move(data)});
        }
        Race race;
        run(race_writes(&blk(), std::move(writes), &race));
        EXPECT_TRUE(race.errors.empty()) << race.errors.front();
        const uint64_t zoff = rng() % (kSize - 100000), zlen = 1 + rng() % 100000;
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(zoff, zlen, round == 1 ? uint32_t(kMayUnmap) : 0u)));
        std::fill(model.begin() + zoff, model.begin() + zoff + zlen, 0);
        auto all = read(0, kSize);
        ASSERT_TRUE(all == model) << "round " << round << ": " << first_difference(all, model);
    }
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    EXPECT_TRUE(check_clean("t.qcow2"));
    auto converted = convert_to_raw("t.qcow2");
    EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
}

// Compressed clusters (qemu-img convert -c) read back, and a write into one
// copies its other bytes into a new cluster.
TEST_F(Qcow2DriverTest, CompressedClustersReadAndAreRewrittenOnWrite) {
    constexpr uint64_t kSize = 1 << 20, kCluster = 65536;
    // Compressible: runs of a byte, different per 4 KiB.
    std::vector<char> source(kSize);
    for (uint64_t i = 0; i < kSize; i++) source[i] = char('a' + (i / 4096) % 26);
    std::fill(source.begin() + 5 * kCluster, source.begin() + 6 * kCluster, 0);  // a zero cluster
    write_file(path("src.raw"), source);
    for (const char* type : {"zlib", "zstd"}) {
        SCOPED_TRACE(type);
        std::vector<char> model = source;
        const std::string name = std::string("c-") + type + ".qcow2";
        Shell s = shell("qemu-img convert -c -f raw -O qcow2 -o compression_type=" + std::string(type) + " " +
                        path("src.raw") + " " + path(name));
        ASSERT_EQ(s.rc, 0) << s.out;
        open(name);
        auto all = read(0, kSize);
        EXPECT_TRUE(all == model) << first_difference(all, model);
        auto part = read(2 * kCluster + 4000, 70000);
        EXPECT_TRUE(std::equal(part.begin(), part.end(), model.begin() + 2 * kCluster + 4000));
        write(3 * kCluster + 100, std::vector<char>(300, 'Z'));
        std::fill(model.begin() + 3 * kCluster + 100, model.begin() + 3 * kCluster + 400, 'Z');
        ASSERT_TRUE(run(blk().co_pwrite_zeroes(7 * kCluster, kCluster, 0)));
        std::fill(model.begin() + 7 * kCluster, model.begin() + 8 * kCluster, 0);
        all = read(0, kSize);
        EXPECT_TRUE(all == model) << first_difference(all, model);
        BlockStatus st = status(3 * kCluster, kCluster);
        EXPECT_TRUE(st.data && st.allocated);
        EXPECT_NE(st.file, nullptr);  // a plain cluster now
        ASSERT_TRUE(run(blk().co_flush()));
        close();
        EXPECT_TRUE(check_clean(name));
        auto converted = convert_to_raw(name);
        EXPECT_TRUE(converted == model) << "qemu-img reads: " << first_difference(converted, model);
    }
}

// 1-bit refcounts and 512-byte clusters: a refcount block covers 2 MiB and
// the one-cluster refcount table 128 MiB. Writing more than that makes the
// driver add refcount blocks and then move to a bigger table.
TEST_F(Qcow2DriverTest, OneBitRefcountsGrowRefcountBlocksAndTheTable) {
    constexpr uint64_t kSize = 192ull << 20, kWritten = 136ull << 20, kChunk = 4 << 20;
    create("r1.qcow2", std::to_string(kSize), "cluster_size=512,refcount_bits=1");
    const q::Header before = file_header("r1.qcow2");
    ASSERT_EQ(before.refcount_order, 0u);
    ASSERT_EQ(before.refcount_table_clusters, 1u);
    open("r1.qcow2");
    // Each 512-byte sector holds its guest offset plus one, repeated.
    auto stamped = [](uint64_t offset, uint64_t len) {
        std::vector<char> v(len);
        for (uint64_t s = 0; s < len; s += 512)
            for (uint64_t w = 0; w < 512; w += 8) q::store_be64(reinterpret_cast<uint8_t*>(&v[s + w]), offset + s + 1);
        return v;
    };
    for (uint64_t off = 0; off < kWritten; off += kChunk) write(off, stamped(off, kChunk));
    // Spot checks while open.
    for (uint64_t off : std::vector<uint64_t>{0, 512 * 4097, 100 << 20, kWritten - 512}) {
        auto got = read(off, 512);
        EXPECT_TRUE(got == stamped(off, 512)) << "at " << off;
    }
    ASSERT_TRUE(run(blk().co_flush()));
    close();
    const q::Header after = file_header("r1.qcow2");
    EXPECT_GT(after.refcount_table_clusters, 1u) << "the refcount table did not grow";
    EXPECT_NE(after.refcount_table_offset, before.refcount_table_offset);
    // Count the refcount blocks the table names.
    {
        const auto bytes = read_file(path("r1.qcow2"));
        ASSERT_GE(bytes.size(), after.refcount_table_offset + after.refcount_table_clusters * 512ull);
        uint64_t blocks = 0;
        for (uint64_t i = 0; i < after.refcount_table_clusters * 512ull / 8; i++)
            blocks += q::load_be64(reinterpret_cast<const uint8_t*>(&bytes[after.refcount_table_offset + 8 * i])) != 0;
        // More than 128 MiB of host clusters at 2 MiB per block.
        EXPECT_GT(blocks, 64u);
    }
    json report;
    EXPECT_TRUE(check_clean("r1.qcow2", &report));
    EXPECT_EQ(report.value("allocated-clusters", 0), int(kWritten / 512)) << report.dump();
    // Reopened: everything reads back, and the image still takes writes.
    open("r1.qcow2");
    for (uint64_t off = 0; off < kWritten; off += kChunk) {
        auto got = read(off, kChunk);
        ASSERT_TRUE(got == stamped(off, kChunk)) << "chunk at " << off << ": " << first_difference(got, stamped(off, kChunk), off);
    }
    write(kWritten, stamped(kWritten, kChunk));
    auto tail = read(kWritten, kChunk);
    EXPECT_TRUE(tail == stamped(kWritten, kChunk));
    close();
    EXPECT_TRUE(check_clean("r1.qcow2"));
}

}  // namespace
}  // namespace ioplane::block
