// Changing a backing chain at the end of a stream or a commit: a node's
// image names a new backing file and the node's backing edge points to it.
//
// Thread contract: main thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "ioplane/block/node.h"

namespace ioplane::block {

// QEMU's bdrv_set_backing_hd plus bdrv_change_backing_file, in one drained
// section of `node`: `node` gets `base` (null: none) as its backing child,
// and its image names it (`name`, else base's file name, with base's
// format). If the image cannot be rewritten the graph is left as it was.
Result<void> set_backing(BlockNode& node, const std::shared_ptr<BlockNode>& base,
                         const std::optional<std::string>& name);

}  // namespace ioplane::block
