#include "nbd/extent_list.h"

#include "ioplane/core/thread_contract.h"

namespace ioplane::nbd {

bool ExtentList::add(uint64_t length, uint32_t flags) {
    IOPLANE_ASSERT(length <= UINT32_MAX);
    if (full_) return false;
    if (length == 0) return true;
    if (!extents_.empty() && extents_.back().flags == flags && extents_.back().length + length <= UINT32_MAX) {
        extents_.back().length += uint32_t(length);
    } else if (extents_.size() < max_) {
        extents_.push_back({uint32_t(length), flags});
    } else {
        full_ = true;
        return false;
    }
    total_ += length;
    return true;
}

}  // namespace ioplane::nbd
