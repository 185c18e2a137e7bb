// Permission updates: what every edge below a change takes and shares,
// recomputed from the parents down (Driver::child_perms), checked against
// each node's other parents and applied only if every node accepts them.
//
// Thread contract: main thread.
#pragma once

#include <map>

#include "ioplane/block/node.h"

namespace ioplane::block {

class PermissionUpdate {
public:
    // `edge` is to take `perm` and share `shared`.
    void propose(BlockEdge& edge, uint32_t perm, uint32_t shared);
    // `node`'s own parents are unchanged, but what it takes on its children
    // may have (it was reopened, or lost a parent).
    void refresh(BlockNode& node) { dirty_.push_back(&node); }
    // Recomputes the edges below the proposals, checks every node they
    // reach, and applies the result; on an error nothing changes.
    Result<void> commit();
    // The same checks without applying anything; apply() then applies what
    // a successful check() computed (without checking again).
    Result<void> check();
    void apply();

    // What the parents of `node` take on it, and the permissions they all
    // share, counting the proposals.
    Driver::Perms cumulative(const BlockNode& node) const;
    // What `parent` takes on a child with `role` and shares, given its
    // parents (counting the proposals).
    Driver::Perms for_child(const BlockNode& parent, ChildRole role) const;

private:
    Driver::Perms of(const BlockEdge& edge) const;
    Result<void> check_node(const BlockNode& node) const;

    std::map<BlockEdge*, Driver::Perms> proposed_;
    std::vector<BlockNode*> dirty_;  // nodes whose parents' permissions changed
};

}  // namespace ioplane::block
