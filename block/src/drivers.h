// Driver factories, one per driver file; used by BlockGraph::open.
//
// Thread contract: main thread.
#pragma once

#include <memory>

#include "ioplane/block/driver.h"
#include "ioplane/block/node.h"
#include <nlohmann/json.hpp>

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

// The "backing" option of a format node: absent (the image's own backing
// file is opened), null (no backing child), or a child (a node-name or
// options).
struct BackingOption {
    bool given = false;
    nlohmann::json spec;  // null: none
};
// Reads it (keyval syntax spells null as an empty value, as QEMU's does).
Result<BackingOption> read_backing_option(OptionReader& opts);

// A driver and the children its node is to have (edges are made by the
// node, with the permissions the driver asks for). A driver that supports
// backing gets its backing child after its co_open.
struct Opened {
    std::unique_ptr<Driver> driver;
    std::vector<std::pair<ChildRole, std::shared_ptr<BlockNode>>> children = {};
    bool fell_back_to_read_only = false;  // auto-read-only applied
    BackingOption backing = {};
};

// Each reads its own options from `opts` (the caller checks that no key is
// left unread).
Result<Opened> open_null(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_file(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_raw(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_blkdebug(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_throttle(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_copy_on_read(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_qcow2(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_copy_before_write(OptionReader& opts, const OpenContext& oc);
Result<Opened> open_snapshot_access(OptionReader& opts, const OpenContext& oc);

}  // namespace ioplane::block
