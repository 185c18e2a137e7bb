// BlockGraph: the nodes of the daemon by node-name (what --blockdev and
// blockdev-add create and blockdev-del removes).
//
// Thread contract: main thread, for every member.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ioplane/block/node.h"
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

    std::shared_ptr<BlockNode> find(const std::string& node_name) const;
    // Refused (EBUSY) while the node has users (exports) or parents.
    Result<void> remove(const std::string& node_name);
    std::vector<std::shared_ptr<BlockNode>> nodes() const;

    // Names for children opened inline, unique in this graph.
    std::string anonymous_name();

private:
    std::map<std::string, std::shared_ptr<BlockNode>> nodes_;
    unsigned anonymous_ = 0;
};

}  // namespace ioplane::block
