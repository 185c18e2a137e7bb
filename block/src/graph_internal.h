// Opening children (used by format drivers).
//
// Thread contract: main thread.
#pragma once

#include <nlohmann/json.hpp>

#include "ioplane/block/graph.h"

namespace ioplane::block {

// A child given as a node-name (an existing node) or as nested options (a
// new node, registered under a generated name).
Result<std::shared_ptr<BlockNode>> open_child(BlockGraph& graph, const nlohmann::json& spec, AioContext& ctx,
                                              const std::string& what, bool read_only);

}  // namespace ioplane::block
