// qcow2's persistent dirty bitmaps (qcow2.rst, "Bitmaps extension"). For
// now, what QEMU checks before it lets a bitmap become persistent; storing
// bitmaps at close and loading them at open come next.
#include <bit>

#include "ioplane/block/node.h"
#include "qcow2.h"

namespace ioplane::block::qcow2 {
namespace {

// QEMU's limits (block/qcow2-bitmap.c, block/qcow2.h).
constexpr unsigned kMinGranularityBits = 9;
constexpr unsigned kMaxGranularityBits = 31;
constexpr uint64_t kMaxNameSize = 1023;
constexpr uint64_t kMaxTableSize = 0x8000000;   // entries of a bitmap table
constexpr uint64_t kMaxPhysSize = 0x20000000;   // bytes of one bitmap's data
constexpr uint64_t kMaxBitmaps = 65535;
constexpr uint64_t kMaxDirectorySize = 1024 * kMaxBitmaps;
constexpr uint64_t kDirEntryHeader = 24;

// A directory entry: its fixed part and the name, padded to 8 bytes.
uint64_t dir_entry_size(uint64_t name_size) { return (kDirEntryHeader + name_size + 7) & ~uint64_t{7}; }

}  // namespace

// QEMU's qcow2_co_can_store_new_dirty_bitmap: a name in use is refused
// as such; the other refusals are prefixed with what could not be done.
Result<void> Qcow2Driver::can_store_bitmap(const std::string& name, uint64_t granularity) const {
    const DirtyBitmaps& bitmaps = node().dirty_bitmaps();
    if (bitmaps.find(name)) return fail(EEXIST, "Bitmap already exists: " + name);
    auto refuse = [&](const std::string& why) {
        return fail(EINVAL, "Can't make bitmap '" + name + "' persistent in '" + node().node_name() + "': " + why);
    };
    if (header_.version < 3) return refuse("Cannot store dirty bitmaps in qcow2 v2 files");
    const unsigned bits = unsigned(std::countr_zero(granularity));
    if (bits > kMaxGranularityBits)
        return refuse("Granularity exceeds maximum (" + std::to_string(uint64_t{1} << kMaxGranularityBits) + " bytes)");
    if (bits < kMinGranularityBits)
        return refuse("Granularity is under minimum (" + std::to_string(uint64_t{1} << kMinGranularityBits) + " bytes)");
    const uint64_t chunks = length() / granularity + (length() % granularity != 0);
    const uint64_t data_bytes = chunks / 8 + (chunks % 8 != 0);
    if (data_bytes > kMaxPhysSize || data_bytes > kMaxTableSize * cluster_size())
        return refuse("Too much space will be occupied by the bitmap. Use larger granularity");
    if (name.size() > kMaxNameSize)
        return refuse("Name length exceeds maximum (" + std::to_string(kMaxNameSize) + " characters)");
    uint64_t count = 1, directory = dir_entry_size(name.size());
    for (const auto& b : bitmaps.list())
        if (b->persistent()) {
            count++;
            directory += dir_entry_size(b->name().size());
        }
    if (count > kMaxBitmaps) return refuse("Maximum number of persistent bitmaps is already reached");
    if (directory > kMaxDirectorySize) return refuse("Not enough space in the bitmap directory");
    return {};
}

}  // namespace ioplane::block::qcow2
