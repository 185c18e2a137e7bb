// Driver factories, one per driver file; used by BlockGraph::open.
//
// Thread contract: main thread.
#pragma once

#include <memory>

#include "ioplane/block/driver.h"
#include "ioplane/block/node.h"
#include "options.h"

namespace ioplane::block {

class BlockGraph;

struct OpenContext {
    BlockGraph& graph;
    AioContext& ctx;
    const std::string& node_name;
    bool read_only;
};

struct Opened {
    std::unique_ptr<Driver> driver;
    std::shared_ptr<BlockNode> file_child;  // for format drivers
};

Result<Opened> open_null(opts::Reader& opts, const OpenContext& oc);
Result<Opened> open_file(opts::Reader& opts, const OpenContext& oc);
Result<Opened> open_raw(opts::Reader& opts, const OpenContext& oc);

}  // namespace ioplane::block
