#include "daemon/export_bitmaps.h"

#include <algorithm>

#include "daemon/bitmap_commands.h"
#include "ioplane/block/node.h"
#include "ioplane/core/thread_contract.h"

namespace ioplane::daemon {

namespace {

// QEMU's loop over bdrv_filter_or_cow_bs: the first node from `top` down
// that has a bitmap of that name.
Result<FoundBitmap> find_down_the_chain(const std::shared_ptr<block::BlockNode>& top, const std::string& name) {
    for (std::shared_ptr<block::BlockNode> n = top; n;) {
        if (block::DirtyBitmap* b = n->dirty_bitmaps().find(name)) return FoundBitmap{n, b};
        const block::BlockEdge* down = n->chain_child();
        n = down ? down->child_ptr() : nullptr;
    }
    return fail(ENOENT, "Bitmap '" + name + "' is not found");
}

}  // namespace

Result<std::vector<nbd::ExportedBitmap>> find_export_bitmaps(const block::BlockGraph& graph,
                                                             const std::shared_ptr<block::BlockNode>& exported,
                                                             bool writable, const std::vector<NbdBitmapRef>& refs) {
    assert_in_main_thread();
    std::vector<nbd::ExportedBitmap> out;
    if (refs.empty()) return out;
    const std::vector<block::BlockNode*> component = exported->component();
    for (const NbdBitmapRef& ref : refs) {
        Result<FoundBitmap> found = ref.node ? lookup_bitmap(graph, *ref.node, ref.name)
                                             : find_down_the_chain(exported, ref.name);
        if (!found) return std::unexpected(found.error());
        block::DirtyBitmap& bm = *found->bitmap;
        // A read-only export promises data that does not change; a bitmap
        // that records changes to a writable node would contradict it.
        // QEMU asks this of names alone, not of {node, name}.
        if (!ref.node && !writable && !found->node->read_only() && bm.enabled())
            return fail(EINVAL, "Enabled bitmap '" + ref.name + "' incompatible with readonly export");
        if (auto r = bm.check(block::kBitmapAllowReadOnly); !r) return std::unexpected(r.error());
        if (std::find(component.begin(), component.end(), found->node.get()) == component.end())
            return fail(EINVAL, "Bitmap '" + ref.name + "' is on node '" + found->node->node_name() +
                                    "', which is not connected to the exported node '" + exported->node_name() + "'");
        out.push_back({std::move(found->node), &bm});
    }
    return out;
}

}  // namespace ioplane::daemon
