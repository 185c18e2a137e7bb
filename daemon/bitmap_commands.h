// The dirty bitmap commands of the monitor, as QEMU 7.2's
// (block/monitor/bitmap-qmp-cmds.c): block-dirty-bitmap-add, -remove,
// -clear, -enable, -disable and -merge, with QEMU's checks and messages;
// and the "dirty-bitmaps" member of a node's BlockDeviceInfo
// (query-named-block-nodes). Each command is a transaction action
// (transaction.h; the parsers are in transaction_actions.h), run alone or
// in a `transaction`; each change happens in a drained section of the
// nodes it touches (dirty_bitmap.h's thread contract), and its abort
// restores what it changed.
#pragma once

#include <nlohmann/json.hpp>

#include "daemon/storage_daemon.h"

namespace ioplane::daemon {

// Thread contract: main thread, under the BQL (at startup, before monitors).
// The commands; `transaction` itself is registered by transaction.cc.
void register_bitmap_commands(StorageDaemon& daemon);

// A bitmap found by node-name and name.
struct FoundBitmap {
    std::shared_ptr<block::BlockNode> node;
    block::DirtyBitmap* bitmap;
};

// Thread contract: main thread. QEMU's block_dirty_bitmap_lookup, with its
// messages ("Node 'x' not found", "Dirty bitmap 'b' not found").
Result<FoundBitmap> lookup_bitmap(const block::BlockGraph& graph, const std::string& node_name,
                                  const std::string& name);

// Thread contract: main thread. QEMU's BlockDirtyInfo list for the node's
// bitmaps, anonymous ones (a job's) included without a name, newest first;
// null when the node has none (the member is then left out).
nlohmann::json dirty_bitmaps_info(const block::BlockNode& node);

}  // namespace ioplane::daemon
