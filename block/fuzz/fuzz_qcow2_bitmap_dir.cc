// libFuzzer target over qcow2's bitmap directory codecs (bitmap_dir.h): the
// parsers of the bitmaps extension and of the directory, which read
// untrusted image bytes. Whatever the input, a parse must fail cleanly or
// return entries that satisfy every check (and, encoded again, parse to the
// same entries and bytes); never read outside the input or allocate beyond
// the directory's own size. The whole-image path (the tables and data a
// directory names, through the driver) is fuzz_qcow2_image's.
//
// Input: byte 0 the cluster bits (9 + b % 13), byte 1-2 the entry count the
// extension claims, bytes 3-7 the image length in 512-byte units (up to
// 2^40 sectors: 512 TiB), then 24 bytes for the extension parser, then the
// directory's bytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "qcow2/bitmap_dir.h"

namespace q = ioplane::block::qcow2;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 8 + q::kBitmapsExtensionBytes) return 0;
    const uint64_t cluster_size = uint64_t{1} << (9 + data[0] % 13);
    const uint32_t count = uint32_t(data[1]) << 8 | data[2];
    uint64_t sectors = 0;
    for (int i = 3; i < 8; i++) sectors = sectors << 8 | data[i];
    const uint64_t length = sectors * 512;

    auto ext = q::parse_bitmaps_extension(std::span(data + 8, q::kBitmapsExtensionBytes), cluster_size);
    if (ext) {
        check(ext->nb_bitmaps >= 1 && ext->nb_bitmaps <= q::kMaxBitmaps);
        check(ext->directory_offset % cluster_size == 0 && ext->directory_size <= q::kMaxBitmapDirectorySize);
        auto again = q::parse_bitmaps_extension(q::encode_bitmaps_extension(*ext), cluster_size);
        check(again && *again == *ext);
    }

    const std::span<const uint8_t> dir(data + 8 + q::kBitmapsExtensionBytes, size - 8 - q::kBitmapsExtensionBytes);
    auto entries = q::parse_bitmap_directory(dir, count, cluster_size, length);
    if (!entries) {
        check(!entries.error().message.empty());
        return 0;
    }
    check(entries->size() == count);
    uint64_t total = 0;
    for (const q::BitmapEntry& e : *entries) {
        check(q::check_bitmap_entry(e, cluster_size, length).has_value());
        check(!e.name.empty() && e.name.size() <= q::kMaxBitmapNameSize);
        total += q::bitmap_dir_entry_size(e.name.size());
    }
    // Every byte of the directory belongs to an entry; encoding gives the
    // same bytes but for the padding (any value on input, zeroes out).
    check(total == dir.size());
    const auto encoded = q::encode_bitmap_directory(*entries);
    check(encoded.size() == dir.size());
    auto reparsed = q::parse_bitmap_directory(encoded, count, cluster_size, length);
    check(reparsed && *reparsed == *entries);
    check(q::encode_bitmap_directory(*reparsed) == encoded);
    return 0;
}
