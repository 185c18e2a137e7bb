#include "ioplane/block/node.h"

#include <algorithm>
#include <unordered_set>

#include "ioplane/block/backend.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::block {

BlockNode::BlockNode(std::string node_name, std::unique_ptr<Driver> driver, AioContext& ctx, bool read_only)
    : node_name_(std::move(node_name)), driver_(std::move(driver)), read_only_(read_only), ctx_(&ctx) {}

BlockNode::~BlockNode() {
    for (auto& [role, child] : children_) child->parents_--;
}

void BlockNode::set_child(const std::string& role, std::shared_ptr<BlockNode> child) {
    if (auto it = children_.find(role); it != children_.end()) it->second->parents_--;
    child->parents_++;
    children_[role] = std::move(child);
}

std::vector<BlockNode*> BlockNode::subtree() {
    std::vector<BlockNode*> out{this};
    std::unordered_set<BlockNode*> seen{this};
    for (size_t i = 0; i < out.size(); i++)
        for (auto& [role, child] : out[i]->children_)
            if (seen.insert(child.get()).second) out.push_back(child.get());
    return out;
}

namespace {

template <class Fn>
void tell_users(BlockNode& n, Fn fn) {
    for (BlockBackend* user : n.users())
        if (auto* l = user->owner()) fn(*l);
}

}  // namespace

void drained_begin(BlockNode& node) {
    const std::vector<BlockNode*> nodes = node.subtree();
    for (BlockNode* n : nodes) {
        if (n->quiesce_count_.fetch_add(1, std::memory_order_seq_cst) == 0)
            tell_users(*n, [](BlockBackend::Owner& l) { l.drained_begin(); });
    }
    // Requests that got in before the increment finish; those after it park.
    // Their completions run in the node's context and kick this wait.
    for (BlockNode* n : nodes) aio_wait_while(n->ctx(), [n] { return n->in_flight() > 0; });
}

void drained_end(BlockNode& node) {
    for (BlockNode* n : node.subtree()) {
        if (n->quiesce_count_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
            // Parked requests re-check quiesced() under the queue's lock, so
            // none can miss this.
            n->parked_.restart_all();
            tell_users(*n, [](BlockBackend::Owner& l) { l.drained_end(); });
        }
    }
}

Result<void> change_aio_context(BlockNode& node, AioContext& ctx) {
    if (node.has_parents()) return fail(EBUSY, "node '" + node.node_name() + "' is not a root of the graph");
    if (&node.ctx() == &ctx) return {};
    DrainedSection drained(node);
    std::vector<BlockNode*> nodes = node.subtree();
    for (BlockNode* n : nodes) tell_users(*n, [](BlockBackend::Owner& l) { l.detach_aio_context(); });
    for (BlockNode* n : nodes) {
        n->driver().detach_aio_context();
        n->ctx_.store(&ctx, std::memory_order_release);
        n->driver().attach_aio_context(ctx);
    }
    for (BlockNode* n : nodes) tell_users(*n, [&ctx](BlockBackend::Owner& l) { l.attach_aio_context(ctx); });
    LOG_INFO("node '%s': moved to context '%s'", node.node_name().c_str(), ctx.name().c_str());
    return {};
}

}  // namespace ioplane::block
