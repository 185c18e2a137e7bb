// The dirty bitmaps an NBD export offers (--export type=nbd,bitmaps.N=...,
// block-export-add's `bitmaps`): found and checked as QEMU 7.2's
// nbd_export_create finds and checks them, with its messages.
#pragma once

#include <memory>
#include <vector>

#include "daemon/options.h"
#include "ioplane/block/graph.h"
#include "nbd/nbd_export.h"

namespace ioplane::daemon {

// Thread contract: main thread. For each element, in order: a name alone
// is looked up on `exported` and then down its chain (backing files and
// filters' children: "Bitmap 'b' is not found"), and refused if it is
// enabled, the export read-only and the node where it was found writable
// ("Enabled bitmap 'b' incompatible with readonly export"); a {node, name}
// is QEMU's block_dirty_bitmap_lookup. Then the bitmap must be neither busy
// nor inconsistent (read-only is fine). Unlike QEMU, the bitmap's node must
// be connected to `exported` by edges, so that it shares its context and
// its drained sections (the export reads the bits inside its own
// requests). Changes nothing; the export marks them busy.
Result<std::vector<nbd::ExportedBitmap>> find_export_bitmaps(const block::BlockGraph& graph,
                                                             const std::shared_ptr<block::BlockNode>& exported,
                                                             bool writable, const std::vector<NbdBitmapRef>& refs);

}  // namespace ioplane::daemon
