// Driver factories, one per driver file; used by BlockGraph::open.
//
// Thread contract: main thread.
#pragma once

#include <memory>

#include "ioplane/block/driver.h"
#include "ioplane/block/node.h"
#include "ioplane/core/keyval.h"

namespace ioplane::block {

class BlockGraph;

// The generic options of a node (QEMU's BDRV_O_* flags). Children opened
// inline inherit them unless their own options say otherwise.
struct NodeFlags {
    bool read_only = false;
    bool auto_read_only = false;  // open read-only if read-write is not allowed
    bool unmap = false;           // discard=unmap (QEMU's default is ignore)
    bool force_share = false;     // share every permission (read-only nodes only)
};

struct OpenContext {
    BlockGraph& graph;
    AioContext& ctx;
    const std::string& node_name;
    NodeFlags flags;
    OptionSyntax syntax;  // of the tree the options came from (children inherit it)
};

// A driver and the children its node is to have (edges are made by the
// node, with the permissions the driver asks for).
struct Opened {
    std::unique_ptr<Driver> driver;
    std::vector<std::pair<ChildRole, std::shared_ptr<BlockNode>>> children = {};
    bool fell_back_to_read_only = false;  // auto-read-only applied
};

// Each reads its own options from `opts` (the caller checks that no key is
// left unread).
Result<Opened> open_null(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_file(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_raw(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_blkdebug(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_throttle(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_copy_on_read(OptionReader& opts, const OpenContext& oc);

}  // namespace ioplane::block
