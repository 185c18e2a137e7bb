#include "ioplane/block/chain.h"

#include "ioplane/block/node.h"

namespace ioplane::block {

Task<Result<BlockStatus>> co_block_status_above(BlockEdge& top, const BlockNode* base, uint64_t offset,
                                                uint64_t bytes, unsigned* depth) {
    BlockEdge* layer = &top;
    unsigned level = 1;
    for (;;) {
        auto st = co_await layer->co_block_status(offset, bytes);
        if (!st) co_return st;
        if (st->allocated) {
            if (depth) *depth = level;
            co_return st;
        }
        bytes = st->bytes;  // what is said below holds no further than this
        // A layer that does not allocate a range is a format with a backing
        // child (or a filter over one): go down to it.
        BlockEdge* below = layer->child().chain_child();
        while (below && below->role() == ChildRole::filtered) below = below->child().chain_child();
        const bool ends = below == nullptr || offset >= below->child().driver().length();
        if (ends || &below->child() == base) {
            if (depth) *depth = 0;
            st->zero = st->zero || ends;
            co_return st;
        }
        if (offset + bytes > below->child().driver().length()) bytes = below->child().driver().length() - offset;
        layer = below;
        level++;
    }
}

}  // namespace ioplane::block
