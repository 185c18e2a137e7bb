// Metadata contexts (NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT):
// which of the contexts an export offers a client's queries select, with
// QEMU's rules (nbd-qemu-extensions.rst; QEMU's nbd/server.c): exact names
// select a context; for LIST, no query at all and the prefix queries
// "base:", "qemu:" and "qemu:dirty-bitmap:" stand for every offered context
// that begins with them; anything else (another namespace, an unknown name,
// a prefix in SET) selects nothing and is not an error, as the spec says.
// Pure: fuzzed with the protocol parsers (fuzz_nbd_protocol).
//
// Thread contract: every function here is pure; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ioplane::nbd {

// QEMU's extension: one context per exported dirty bitmap, named by this
// prefix and the bitmap's name; an extent's flag NBD_STATE_DIRTY says its
// bytes are dirty.
inline constexpr std::string_view kQemuDirtyBitmapPrefix = "qemu:dirty-bitmap:";
inline constexpr uint32_t NBD_STATE_DIRTY = 1u << 0;

// The ids this server gives the contexts in SET's replies and block status
// chunks (LIST's replies carry 0, as QEMU's do): fixed per context, so
// that the transmission phase maps an id back without a table.
inline constexpr uint32_t kMetaIdBaseAllocation = 1;
inline constexpr uint32_t kMetaIdAllocationDepth = 2;
inline constexpr uint32_t kMetaIdFirstBitmap = 3;  // + the bitmap's index in the offer

// What one export offers.
struct MetaContextOffer {
    bool allocation_depth = false;     // qemu:allocation-depth
    std::vector<std::string> bitmaps;  // qemu:dirty-bitmap:<name>, in the export's order
};

// What a client's queries selected (SET) or asked to be listed (LIST).
struct MetaContextSelection {
    bool base_allocation = false;
    bool allocation_depth = false;
    std::vector<bool> bitmaps;  // parallel to MetaContextOffer::bitmaps

    size_t count() const;
    bool operator==(const MetaContextSelection&) const = default;
};

// `list`: the queries come from NBD_OPT_LIST_META_CONTEXT (else SET).
// Thread contract: any thread; pure.
MetaContextSelection select_meta_contexts(const MetaContextOffer& offer, std::span<const std::string> queries,
                                          bool list);

// "qemu:dirty-bitmap:" + name (a bitmap name is at most 1023 bytes, so the
// context name stays within the spec's 4096).
// Thread contract: any thread; pure.
std::string dirty_bitmap_context(std::string_view bitmap_name);

}  // namespace ioplane::nbd
