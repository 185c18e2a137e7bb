#include "permissions.h"

#include <algorithm>

namespace ioplane::block {

std::string perm_names(uint32_t perms) {
    static constexpr std::pair<uint32_t, const char*> kNames[] = {
        {kPermConsistentRead, "consistent read"}, {kPermWrite, "write"}, {kPermWriteUnchanged, "write unchanged"},
        {kPermResize, "resize"}, {kPermGraphChange, "change children"}};
    std::string out;
    for (auto [bit, name] : kNames)
        if (perms & bit) out += (out.empty() ? "" : ", ") + std::string(name);
    return out;
}

const char* role_name(ChildRole role) {
    switch (role) {
        case ChildRole::file: return "file";
        case ChildRole::backing: return "backing";
        case ChildRole::data: return "data-file";
        case ChildRole::filtered: return "file";
        case ChildRole::root: return "root";
        case ChildRole::job: return "job";
        case ChildRole::target: return "target";
    }
    return "?";
}

// QEMU's bdrv_default_perms, with its reasons.
Driver::Perms Driver::child_perms(ChildRole role, uint32_t perm, uint32_t shared) const {
    switch (role) {
        case ChildRole::filtered:
        case ChildRole::root:
        case ChildRole::job:
            return {perm, shared};
        case ChildRole::target:
            // Written with copies; others may do anything but resize it,
            // whose size the copying checked once (QEMU's cbw_child_perm:
            // the target may be an image whose backing file is the source).
            return {kPermWrite, kPermAll & ~kPermResize};
        case ChildRole::backing:
            // Only read from; others may write it only if our parents can
            // live with changing data.
            return {perm & kPermConsistentRead,
                    ((shared & kPermWrite) ? kPermWrite | kPermResize : 0) | kPermConsistentRead | kPermGraphChange |
                        kPermWriteUnchanged};
        case ChildRole::file:
            // Metadata: written whenever the node is writable, even if no
            // parent writes, and always read consistently; nobody else may
            // write or resize under it.
            if (!node().read_only()) perm |= kPermWrite | kPermResize;
            perm |= kPermConsistentRead;
            shared &= ~(kPermWrite | kPermResize);
            [[fallthrough]];
        case ChildRole::data:
            // Data: the driver may have to write what a parent only
            // "writes unchanged" (copied clusters), and grow the file.
            shared &= ~kPermResize;
            if (perm & kPermWriteUnchanged) perm |= kPermWrite;
            if (perm & kPermWrite) perm |= kPermResize;
            return {perm, shared};
    }
    return {perm, shared};
}

void PermissionUpdate::propose(BlockEdge& edge, uint32_t perm, uint32_t shared) {
    proposed_[&edge] = {perm, shared};
    dirty_.push_back(&edge.child());
}

// What the driver takes for the role, given the node's parents; a
// force-share node lets others do anything beside it.
Driver::Perms PermissionUpdate::for_child(const BlockNode& parent, ChildRole role) const {
    const Driver::Perms c = cumulative(parent);
    Driver::Perms p = parent.driver().child_perms(role, c.perm, c.shared);
    if (parent.force_share()) p.shared = kPermAll;
    return p;
}

Driver::Perms PermissionUpdate::of(const BlockEdge& edge) const {
    auto it = proposed_.find(const_cast<BlockEdge*>(&edge));
    return it != proposed_.end() ? it->second : Driver::Perms{edge.perm(), edge.shared()};
}

Driver::Perms PermissionUpdate::cumulative(const BlockNode& node) const {
    Driver::Perms c{0, kPermAll};
    for (const BlockEdge* e : node.parents()) {
        const Driver::Perms p = of(*e);
        c.perm |= p.perm;
        c.shared &= p.shared;
    }
    return c;
}

namespace {

std::string use_of(const BlockEdge& e) {
    return e.parent_name() + " (uses node '" + e.child().node_name() + "' as '" + e.child_name() + "' child)";
}

}  // namespace

// Every parent's needs against every other parent's sharing (QEMU's
// message), and no write on a read-only node.
Result<void> PermissionUpdate::check_node(const BlockNode& node) const {
    for (const BlockEdge* a : node.parents()) {
        const Driver::Perms pa = of(*a);
        if (node.read_only() && (pa.perm & (kPermWrite | kPermResize)))
            return fail(EPERM, "Block node '" + node.node_name() + "' is read-only, but " + use_of(*a) + " needs '" +
                                   perm_names(pa.perm & (kPermWrite | kPermResize)) + "'");
        for (const BlockEdge* b : node.parents()) {
            if (a == b) continue;
            if (const uint32_t clash = pa.perm & ~of(*b).shared)
                return fail(EPERM, "Permission conflict on node '" + node.node_name() + "': permissions '" +
                                       perm_names(clash) + "' are both required by " + use_of(*a) +
                                       " and unshared by " + use_of(*b) + ".");
        }
    }
    return {};
}

// Walks down from the dirty nodes: each recomputes its child edges from its
// parents' (proposed) permissions; a child whose parents changed is checked
// and walked in turn. The graph has no cycles, so this ends.
Result<void> PermissionUpdate::check() {
    for (size_t i = 0; i < dirty_.size(); i++) {
        BlockNode& node = *dirty_[i];
        if (auto r = check_node(node); !r) return r;
        for (auto& edge : node.children()) {
            const Driver::Perms p = for_child(node, edge->role());
            const Driver::Perms now = of(*edge);
            if (p.perm == now.perm && p.shared == now.shared) continue;
            proposed_[edge.get()] = p;
            dirty_.push_back(&edge->child());
        }
    }
    return {};
}

Result<void> PermissionUpdate::commit() {
    if (auto r = check(); !r) return r;
    apply();
    return {};
}

void PermissionUpdate::apply() {
    for (auto& [edge, p] : proposed_) {
        edge->perm_ = p.perm;
        edge->shared_ = p.shared;
    }
}

}  // namespace ioplane::block
