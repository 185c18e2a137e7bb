// BlockGraph: the nodes of the daemon by node-name. The nodes --blockdev and
// blockdev-add create are the monitor's (the graph holds them until
// blockdev-del); children opened with them get their own node-name (the one
// given, e.g. file.node-name=f, or a generated "#blockN") and are listed and
// found by it while their parents hold them, as in QEMU.
//
// Thread contract: main thread, for every member.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ioplane/block/node.h"
#include "ioplane/block/throttle_group.h"
#include "ioplane/core/keyval.h"

namespace ioplane::block {

class BlockGraph {
public:
    BlockGraph() = default;
    BlockGraph(const BlockGraph&) = delete;
    BlockGraph& operator=(const BlockGraph&) = delete;

    // Opens a node from qemu-storage-daemon's --blockdev options (a keyval or
    // JSON option tree), with nested children, in `ctx`. The node gets the
    // options' node-name, which must be new. Errors name the node.
    Result<std::shared_ptr<BlockNode>> open(const OptionTree& options, AioContext& ctx);
    // A node the daemon opens for itself (blockdev-snapshot-sync's overlay
    // without snapshot-node-name): named "#blockN", not the monitor's, alive
    // while something holds it.
    Result<std::shared_ptr<BlockNode>> open_unnamed(const OptionTree& options, AioContext& ctx);
    // The same, named by the options' node-name if they have one (a job's
    // filter given a filter-node-name): found by it while it lives.
    Result<std::shared_ptr<BlockNode>> open_internal(const OptionTree& options, AioContext& ctx);

    // blockdev-reopen: each element holds the complete options of an
    // existing node (see reopen.cc for what may change). All are checked
    // before any node changes; each node then changes in a drained section.
    Result<void> reopen(const std::vector<OptionTree>& options_list);

    std::shared_ptr<BlockNode> find(const std::string& node_name) const;
    // Whether a node the daemon makes itself (a job's filter-node-name) may
    // be called `name`, refused with QEMU's messages
    // (bdrv_assign_node_name): "Invalid node-name: 'x'", "Duplicate nodes
    // with node-name='x'", "Node name too long".
    Result<void> check_new_node_name(const std::string& name) const;
    // blockdev-del: refused (EBUSY) while the node has users (exports) or
    // parents, and for a node the monitor did not create.
    Result<void> check_removable(const std::string& node_name) const;
    Result<void> remove(const std::string& node_name);
    // Every node, by name.
    std::vector<std::shared_ptr<BlockNode>> nodes() const;

    // For opening children (graph_internal.h): whether `name` is free, and
    // listing a child by its name.
    bool name_in_use(const std::string& name) const { return find(name) != nullptr; }
    void add_child_node(const std::shared_ptr<BlockNode>& node);
    // Names for children opened without one, unique in this graph.
    std::string anonymous_name();

    // The throttle groups `throttle` nodes name.
    ThrottleGroups& throttle_groups() { return throttle_groups_; }
    const ThrottleGroups& throttle_groups() const { return throttle_groups_; }

private:
    struct Entry {
        std::weak_ptr<BlockNode> node;
        std::shared_ptr<BlockNode> owned;  // set for the monitor's nodes
    };
    std::map<std::string, Entry> nodes_;  // entries of destroyed children expire
    ThrottleGroups throttle_groups_;
    unsigned anonymous_ = 0;
};

}  // namespace ioplane::block
