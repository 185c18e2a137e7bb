#include "tracked_request.h"


namespace ioplane::block {

NodeRequest::NodeRequest(BlockNode& node, uint64_t offset, uint64_t bytes) : node_(node) {
    assert_in_context(node_.ctx());
    // One writer (this context): see BlockNode::in_flight_.
    node_.in_flight_.store(node_.in_flight_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    t_.offset = offset;
    t_.end = offset + bytes;
    t_.id = node_.next_request_id_++;
    t_.next = node_.tracked_;
    if (t_.next) t_.next->prev = &t_;
    node_.tracked_ = &t_;
}

NodeRequest::~NodeRequest() {
    if (t_.prev) t_.prev->next = t_.next;
    else node_.tracked_ = t_.next;
    if (t_.next) t_.next->prev = t_.prev;
    if (t_.serialising) node_.serialising_--;
    if (t_.waiters) t_.waiters->restart_all();
    node_.in_flight_.store(node_.in_flight_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

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
