// Image creation (QMP blockdev-create, QEMU's BlockdevCreateOptions): a
// file of a size ("file"), or a qcow2 image written to a node ("qcow2").
//
// Thread contract: a coroutine in the main context (the job's).
#pragma once

#include "ioplane/block/graph.h"
#include "ioplane/core/keyval.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

Task<Result<void>> co_create_image(BlockGraph& graph, const OptionTree& options);

}  // namespace ioplane::block
