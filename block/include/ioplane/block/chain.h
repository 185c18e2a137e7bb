// Walks down a backing chain: what a range reads as, and in which layer it
// is allocated (QEMU's bdrv_block_status_above and bdrv_is_allocated_above).
// Jobs (stream, commit, mirror with sync=top) and NBD's
// qemu:allocation-depth ask these.
//
// Thread contract: in a coroutine in the chain's context, inside a request
// of the caller (the top edge's user counts it).
#pragma once

#include "ioplane/block/edge.h"

namespace ioplane::block {

// The status of the range starting at `offset` as the chain from `top`'s
// child down to `base` (excluded; null: to the bottom) determines it: the
// answer of the first layer that allocates it, or, when none above `base`
// does, allocated = false (zero = true if nothing below could change that:
// the chain ends, or the range is past the end of the layer below).
// `bytes` of the answer say how far it holds. `depth` (if given) gets the
// allocating layer: 1 for top's child, 2 for its backing file, ...; 0 for
// none. Filters in the chain are passed through and not counted.
Task<Result<BlockStatus>> co_block_status_above(BlockEdge& top, const BlockNode* base, uint64_t offset,
                                                uint64_t bytes, unsigned* depth = nullptr);

}  // namespace ioplane::block
