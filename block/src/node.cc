#include "ioplane/block/node.h"

#include <algorithm>
#include <unordered_set>

#include "ioplane/block/backend.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "graph_internal.h"
#include "ioplane/core/coroutine.h"
#include "permissions.h"

namespace ioplane::block {

BlockEdge::BlockEdge(BlockNode* parent, std::string parent_name, ChildRole role, std::shared_ptr<BlockNode> child,
                     const char* child_name)
    : parent_(parent),
      parent_name_(std::move(parent_name)),
      role_(role),
      child_name_(child_name),
      child_(std::move(child)),
      child_raw_(child_.get()) {
    assert_in_main_thread();
    child_->parents_.push_back(this);
}

// What the child's other children took for this parent's sake is given back.
BlockEdge::~BlockEdge() {
    assert_in_main_thread();
    auto& parents = child_->parents_;
    parents.erase(std::remove(parents.begin(), parents.end(), this), parents.end());
    PermissionUpdate relax;
    relax.refresh(*child_);
    auto r = relax.commit();  // fewer needs never conflict
    IOPLANE_ASSERT(r);
}

BlockEdge& Driver::child(ChildRole role) const {
    BlockEdge* edge = node_->child(role);
    IOPLANE_ASSERT(edge != nullptr);
    return *edge;
}

BlockNode::BlockNode(std::string node_name, std::unique_ptr<Driver> driver, AioContext& ctx, bool read_only)
    : node_name_(std::move(node_name)), driver_(std::move(driver)), read_only_(read_only), ctx_(&ctx) {
    assert_in_main_thread();
    driver_->bind(*this);
}

// Edges go before the driver (a driver may use them until then; none does
// after), children after their parent.
Result<void> run_to_completion(AioContext& ctx, Task<Result<void>> task) {
    assert_in_main_thread();
    std::optional<Result<void>> out;
    std::atomic<bool> done{false};
    spawn(ctx, [](Task<Result<void>> t, std::optional<Result<void>>& out, std::atomic<bool>& done) -> Task<void> {
        out = co_await std::move(t);
        done.store(true, std::memory_order_release);
        aio_wait_kick();
    }(std::move(task), out, done));
    aio_wait_while(ctx, [&] { return !done.load(std::memory_order_acquire); });
    return std::move(*out);
}

BlockNode::~BlockNode() {
    assert_in_main_thread();
    IOPLANE_ASSERT(parents_.empty());
    // What the driver keeps in memory goes to its children while they are
    // still there.
    if (driver_->needs_close())
        if (auto r = run_to_completion(ctx(), driver_->co_close()); !r)
            LOG_ERROR("node '%s': close: %s", node_name_.c_str(), r.error().describe().c_str());
    while (!children_.empty()) children_.pop_back();
}

Result<BlockEdge*> BlockNode::attach_child(ChildRole role, std::shared_ptr<BlockNode> child) {
    assert_in_main_thread();
    if (&child->ctx() != &ctx())
        return fail(EINVAL, "node '" + child->node_name() + "' is in another context than node '" + node_name_ + "'");
    if (std::ranges::count(child->subtree(), this))
        return fail(EINVAL, "node '" + child->node_name() + "' cannot be a child of node '" + node_name_ +
                                "', which is below it");
    auto edge = std::make_unique<BlockEdge>(this, "node '" + node_name_ + "'", role, std::move(child));
    PermissionUpdate update;
    const Driver::Perms p = update.for_child(*this, role);
    update.propose(*edge, p.perm, p.shared);
    if (auto r = update.commit(); !r) return std::unexpected(r.error());
    children_.push_back(std::move(edge));
    return children_.back().get();
}

void BlockNode::refresh_limits() {
    assert_in_main_thread();
    limits_ = {.request_alignment = std::max<uint32_t>(1, driver_->request_alignment()),
               .memory_alignment = std::max<uint32_t>(1, driver_->memory_alignment()),
               .max_transfer = driver_->max_transfer(),
               .native_fua = driver_->caps().can_fua};
    const uint64_t old_length = length_;
    length_ = driver_->length();
    // Drained, or before the node is used (when it has no bitmaps).
    if (length_ != old_length && !dirty_bitmaps_.empty()) dirty_bitmaps_.resize(length_);
    for (const BlockEdge* e : parents_)
        if (BlockNode* p = e->parent_node()) p->refresh_limits();
}

Result<void> BlockNode::replace_child(BlockEdge& edge, std::shared_ptr<BlockNode> child) {
    assert_in_main_thread();
    IOPLANE_ASSERT(edge.parent_node() == this && quiesced());
    if (&child->ctx() != &ctx())
        return fail(EINVAL, "node '" + child->node_name() + "' is in another context than node '" + node_name_ + "'");
    if (std::ranges::count(child->subtree(), this))
        return fail(EINVAL, "node '" + child->node_name() + "' cannot be a child of node '" + node_name_ +
                                "', which is below it");
    // The edge moves to the new child with its permissions, checked there
    // first; the old child then gives back what it took for this parent.
    std::shared_ptr<BlockNode> old = edge.child_;
    auto& old_parents = old->parents_;
    old_parents.erase(std::remove(old_parents.begin(), old_parents.end(), &edge), old_parents.end());
    edge.set_child(std::move(child));
    edge.child_->parents_.push_back(&edge);
    PermissionUpdate update;
    update.propose(edge, edge.perm(), edge.shared());
    auto r = update.commit();
    if (!r) {
        auto& parents = edge.child_->parents_;
        parents.erase(std::remove(parents.begin(), parents.end(), &edge), parents.end());
        edge.set_child(std::move(old));
        edge.child_->parents_.push_back(&edge);
        return r;
    }
    PermissionUpdate relax;
    relax.refresh(*old);
    (void)relax.commit();  // fewer needs never conflict
    refresh_limits();
    return {};
}

Result<void> replace_node(BlockNode& from, const std::shared_ptr<BlockNode>& to, const BlockEdge* keep) {
    assert_in_main_thread();
    IOPLANE_ASSERT(from.quiesced());
    if (&to->ctx() != &from.ctx())
        return fail(EINVAL, "node '" + to->node_name() + "' is in another context than node '" + from.node_name() + "'");
    // A parent below `to` keeps `from`: pointing it at `to` would make a
    // loop (QEMU's should_update_child). So does a filter inserted above
    // `from` (its own edge is `keep`) for a fleecing image whose backing
    // file is `from` and which is the filter's target.
    const std::vector<BlockNode*> below_to = to->subtree();
    std::vector<BlockEdge*> moving;
    for (BlockEdge* e : from.parents_)
        if (e != keep && e->role() != ChildRole::job && !std::ranges::count(below_to, e->parent_node()))
            moving.push_back(e);
    // A user's edge takes its BlockBackend along.
    auto move_all = [&moving](BlockNode& a, BlockNode& b) {
        for (BlockEdge* e : moving) {
            std::erase(a.parents_, e);
            b.parents_.push_back(e);
            for (BlockBackend* user : a.users_)
                if (&user->root_edge() == e) {
                    std::erase(a.users_, user);
                    b.users_.push_back(user);
                    break;
                }
            e->set_child(b.shared_from_this());
        }
    };
    std::shared_ptr<BlockNode> hold = from.shared_from_this();  // an edge may have held the last reference
    move_all(from, *to);
    // What `from` takes of its children follows from the parents it kept,
    // in the same update and first: a filter dropped from above its child
    // gives up its hold on the child as the filter's parents move there.
    PermissionUpdate update;
    update.refresh(from);
    for (BlockEdge* e : moving) update.propose(*e, e->perm(), e->shared());
    if (auto r = update.commit(); !r) {
        move_all(*to, from);
        return r;
    }
    for (BlockEdge* e : moving)
        if (e->parent_node()) e->parent_node()->refresh_limits();
    return {};
}

Result<void> BlockNode::check_not_blocked() const {
    assert_in_main_thread();
    if (op_blocker_.empty()) return {};
    return fail(EBUSY, "Node '" + node_name_ + "' is busy: " + op_blocker_);
}

Result<void> BlockNode::check_not_backing() const {
    assert_in_main_thread();
    for (const BlockEdge* e : parents_)
        if (e->role() == ChildRole::backing && e->parent_node())
            return fail(EBUSY, "Node '" + node_name_ + "' is busy: node is used as backing hd of '" +
                                   e->parent_node()->node_name() + "'");
    return {};
}

void BlockNode::detach_child(BlockEdge& edge) {
    assert_in_main_thread();
    std::erase_if(children_, [&edge](const auto& e) { return e.get() == &edge; });
    refresh_limits();
}

BlockEdge* BlockNode::child(ChildRole role) const {
    for (const auto& edge : children_)
        if (edge->role() == role) return edge.get();
    return nullptr;
}

BlockEdge* BlockNode::chain_child() const {
    for (const auto& edge : children_)
        if (edge->role() == ChildRole::backing || edge->role() == ChildRole::filtered) return edge.get();
    return nullptr;
}

bool BlockNode::has_parent_nodes() const {
    return std::ranges::any_of(parents_, [](const BlockEdge* e) { return e->parent_node() != nullptr; });
}

namespace {

// Nodes reachable from `start`, each once, `start` first; `up` also follows
// edges to parent nodes.
std::vector<BlockNode*> reachable(BlockNode* start, bool up) {
    std::vector<BlockNode*> out{start};
    std::unordered_set<BlockNode*> seen{start};
    for (size_t i = 0; i < out.size(); i++) {
        for (const auto& edge : out[i]->children())
            if (seen.insert(&edge->child()).second) out.push_back(&edge->child());
        if (up)
            for (const BlockEdge* edge : out[i]->parents())
                if (BlockNode* p = edge->parent_node(); p && seen.insert(p).second) out.push_back(p);
    }
    return out;
}

}  // namespace

std::vector<BlockNode*> BlockNode::component() { return reachable(this, true); }
std::vector<BlockNode*> BlockNode::subtree() { return reachable(this, false); }

// The node and its storage children (file, data, a filter's child; not the
// backing chain) change together, as children opened with the node inherit
// read-only from it. Permissions are checked for the new state first; then
// drivers reopen their files, the lowest first when becoming writable.
// A driver may write in its reopen (a format going read-only writes back
// its caches and bitmaps; one going writable marks its header and bitmaps),
// so the writable state, flags and edge permissions, holds around every
// reopen: going read-only the old state stays until all are done, as
// QEMU's prepare steps run in it; going writable the new one comes first.
Result<void> BlockNode::set_read_only(bool read_only) {
    assert_in_main_thread();
    IOPLANE_ASSERT(quiesced());
    std::vector<BlockNode*> nodes{this};
    for (size_t i = 0; i < nodes.size(); i++)
        for (const auto& edge : nodes[i]->children_)
            if (edge->role() != ChildRole::backing && edge->child().read_only_ != read_only)
                nodes.push_back(&edge->child());
    if (!read_only) std::reverse(nodes.begin(), nodes.end());
    std::vector<BlockNode*> changed;
    auto set_flags = [&changed](bool ro) {
        for (BlockNode* n : changed) n->read_only_ = ro;
    };
    PermissionUpdate update;
    for (BlockNode* n : nodes) {
        if (n->read_only_ == read_only) continue;
        changed.push_back(n);
        update.refresh(*n);
    }
    set_flags(read_only);
    if (auto r = update.check(); !r) {
        set_flags(!read_only);
        return r;
    }
    if (read_only)
        set_flags(false);
    else
        update.apply();
    for (size_t i = 0; i < changed.size(); i++) {
        if (auto r = changed[i]->driver_->reopen(read_only); !r) {
            // Those reopened go back, in the state they were reopened in;
            // then flags and permissions are the old ones again (fewer
            // needs going back to read-only never conflict).
            for (size_t j = 0; j < i; j++) (void)changed[j]->driver_->reopen(!read_only);
            set_flags(!read_only);
            if (!read_only) {
                PermissionUpdate back;
                for (BlockNode* n : changed) back.refresh(*n);
                (void)back.commit();
            }
            return r;
        }
    }
    if (read_only) {
        set_flags(true);
        update.apply();
    }
    return {};
}

namespace {

template <class Fn>
void tell_users(BlockNode& n, Fn fn) {
    for (BlockBackend* user : n.users())
        if (auto* l = user->owner()) fn(*l);
}

bool anything_in_flight(const std::vector<std::shared_ptr<BlockNode>>& nodes) {
    for (const auto& n : nodes) {
        if (n->in_flight() > 0) return true;
        for (const BlockBackend* user : n->users())
            if (user->in_flight() > 0) return true;
    }
    return false;
}

}  // namespace

void drained_begin(BlockNode& node) {
    assert_in_main_thread();
    std::vector<std::shared_ptr<BlockNode>> nodes;
    for (BlockNode* n : node.component()) nodes.push_back(n->shared_from_this());
    for (auto& n : nodes) {
        if (n->quiesce_count_.fetch_add(1, std::memory_order_seq_cst) == 0)
            tell_users(*n, [](BlockBackend::Owner& l) { l.drained_begin(); });
    }
    // Users' requests that got in before the increment finish; those after
    // it park. A request inside a node only exists while one of its users'
    // (or its parent's) does, so one pass that sees nothing in flight
    // anywhere is the end. Completions run in the node's context and kick
    // this wait.
    aio_wait_while(node.ctx(), [&nodes] { return anything_in_flight(nodes); });
    node.drained_sets_.push_back(std::move(nodes));
}

// Ends the section on the nodes it began on: a graph change inside it may
// have moved nodes into or out of the component since (and keeps them
// alive until here).
void drained_end(BlockNode& node) {
    assert_in_main_thread();
    IOPLANE_ASSERT(!node.drained_sets_.empty());
    std::vector<std::shared_ptr<BlockNode>> nodes = std::move(node.drained_sets_.back());
    node.drained_sets_.pop_back();
    for (auto& n : nodes) {
        if (n->quiesce_count_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
            // Parked requests re-check quiesced() under the queue's lock, so
            // none can miss this.
            n->parked_.restart_all();
            tell_users(*n, [](BlockBackend::Owner& l) { l.drained_end(); });
        }
    }
}

Result<void> change_aio_context(BlockNode& node, AioContext& ctx) {
    assert_in_main_thread();
    if (&node.ctx() == &ctx) return {};
    DrainedSection drained(node);
    std::vector<BlockNode*> nodes = node.component();
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
