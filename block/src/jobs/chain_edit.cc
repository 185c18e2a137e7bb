#include "chain_edit.h"

#include "ioplane/block/block_jobs.h"
#include "ioplane/block/edge.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::block {

std::shared_ptr<BlockNode> chain_below(const BlockNode& node) {
    BlockEdge* edge = node.chain_child();
    return edge ? edge->child_ptr() : nullptr;
}

bool chain_contains(const BlockNode& top, const BlockNode& base) {
    for (auto n = chain_below(top); n; n = chain_below(*n))
        if (n.get() == &base) return true;
    return false;
}

std::shared_ptr<BlockNode> skip_filters(const std::shared_ptr<BlockNode>& node) {
    std::shared_ptr<BlockNode> n = node;
    while (n && n->child(ChildRole::filtered)) n = n->child(ChildRole::filtered)->child_ptr();
    return n;
}

bool can_replace(const BlockNode& from, const BlockNode& to_replace) {
    if (&from == &to_replace) return true;
    const BlockEdge* filtered = from.child(ChildRole::filtered);
    return filtered && can_replace(filtered->child(), to_replace);
}

Result<void> set_backing(BlockNode& node, const std::shared_ptr<BlockNode>& base,
                         const std::optional<std::string>& name) {
    assert_in_main_thread();
    BlockEdge* edge = node.child(ChildRole::backing);
    IOPLANE_ASSERT(edge != nullptr);
    const std::string file = name ? *name : base ? base->driver().filename() : "";
    const std::string format = base ? base->driver().format_name() : "";
    DrainedSection drained(node);
    auto rename = [&] { return run_to_completion(node.ctx(), node.driver().co_change_backing_file(file, format)); };
    if (!base) {
        if (auto r = rename(); !r) return r;
        node.detach_child(*edge);
        return {};
    }
    const std::shared_ptr<BlockNode> old = edge->child_ptr();
    if (auto r = node.replace_child(*edge, base); !r) return r;
    if (auto r = rename(); !r) {
        (void)node.replace_child(*edge, old);  // it was there a moment ago
        return r;
    }
    return {};
}

}  // namespace ioplane::block
