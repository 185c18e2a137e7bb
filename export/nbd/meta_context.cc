#include "nbd/meta_context.h"

#include <algorithm>


namespace ioplane::nbd {

namespace {

// Strips `prefix` from the front of `s` if it is there.
bool consume(std::string_view& s, std::string_view prefix) {
    if (!s.starts_with(prefix)) return false;
    s.remove_prefix(prefix.size());
    return true;
}

void select_all_bitmaps(MetaContextSelection& sel) { std::fill(sel.bitmaps.begin(), sel.bitmaps.end(), true); }

// One query of the "qemu:" namespace (`rest` is what follows "qemu:").
void select_qemu(const MetaContextOffer& offer, std::string_view rest, bool list, MetaContextSelection& sel) {
    if (rest.empty()) {  // "qemu:": every qemu context, for LIST only
        if (!list) return;
        sel.allocation_depth = offer.allocation_depth;
        select_all_bitmaps(sel);
        return;
    }
    if (rest == "allocation-depth") {
        sel.allocation_depth = offer.allocation_depth;
        return;
    }
    if (!consume(rest, "dirty-bitmap:")) return;
    if (rest.empty()) {  // "qemu:dirty-bitmap:": every bitmap, for LIST only
        if (list) select_all_bitmaps(sel);
        return;
    }
    // The first bitmap of that name (QEMU stops there too).
    auto it = std::find(offer.bitmaps.begin(), offer.bitmaps.end(), rest);
    if (it != offer.bitmaps.end()) sel.bitmaps[size_t(it - offer.bitmaps.begin())] = true;
}

}  // namespace

size_t MetaContextSelection::count() const {
    return size_t(base_allocation) + size_t(allocation_depth) + size_t(std::count(bitmaps.begin(), bitmaps.end(), true));
}

MetaContextSelection select_meta_contexts(const MetaContextOffer& offer, std::span<const std::string> queries,
                                          bool list) {
    MetaContextSelection sel;
    sel.bitmaps.assign(offer.bitmaps.size(), false);
    if (queries.empty()) {  // LIST with no query: everything; SET with none: nothing
        if (list) {
            sel.base_allocation = true;
            sel.allocation_depth = offer.allocation_depth;
            select_all_bitmaps(sel);
        }
        return sel;
    }
    for (const std::string& query : queries) {
        std::string_view q = query;
        if (consume(q, "base:")) {
            if (q == "allocation" || (list && q.empty())) sel.base_allocation = true;
        } else if (consume(q, "qemu:")) {
            select_qemu(offer, q, list, sel);
        }
    }
    return sel;
}

std::string dirty_bitmap_context(std::string_view bitmap_name) {
    std::string name(kQemuDirtyBitmapPrefix);
    name += bitmap_name;
    return name;
}

}  // namespace ioplane::nbd
