// Opening children (used by format drivers).
//
// Thread contract: main thread.
#pragma once

#include <nlohmann/json.hpp>

#include "drivers.h"
#include "ioplane/block/graph.h"

namespace ioplane::block {

// A child given as a node-name (an existing node in the parent's context) or
// as nested options (a new node, named by the graph).
Result<std::shared_ptr<BlockNode>> open_child(BlockGraph& graph, const nlohmann::json& spec, const OpenContext& parent);
// The child the required option `key` ("file", "image") gives.
Result<std::shared_ptr<BlockNode>> open_child(OptionReader& opts, const char* key, const OpenContext& parent);

}  // namespace ioplane::block
