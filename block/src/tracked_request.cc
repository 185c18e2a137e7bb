#include "tracked_request.h"


namespace ioplane::block {

void NodeRequest::wake_waiters() { t_.waiters->restart_all(); }

void NodeRequest::make_serialising(uint64_t align) {
    t_.offset -= t_.offset % align;
    t_.end += (align - t_.end % align) % align;
    if (!t_.serialising) node_.serialising_++;
    t_.serialising = true;
}

TrackedRequest* NodeRequest::find_conflict() const {
    for (TrackedRequest* r = t_.next; r != nullptr; r = r->next)  // older ones
        if ((r->serialising || t_.serialising) && r->offset < t_.end && t_.offset < r->end) return r;
    return nullptr;
}

Task<void> NodeRequest::wait_for_conflicts() {
    while (TrackedRequest* older = find_conflict()) {
        if (!older->waiters) older->waiters = std::make_unique<CoQueue>();
        co_await older->waiters->wait();
    }
}

}  // namespace ioplane::block
