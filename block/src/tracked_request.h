// Tracked requests: every request in a node's request path is counted in the
// node's in_flight_ and listed with its range, so that a serialising request
// (the read-modify-write of an unaligned write, a copy-on-read) waits for the
// overlapping requests that came before it, and the overlapping requests
// that come after it wait for it (QEMU's BdrvTrackedRequest). The result of
// racing overlapping requests is then that of some sequential order.
//
// Thread contract: the node's context (the list is not shared).
#pragma once

#include <memory>

#include "ioplane/block/node.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

struct TrackedRequest {
    uint64_t offset = 0;  // range for overlap checks: a serialising request's
    uint64_t end = 0;     // is widened to its alignment
    bool serialising = false;
    TrackedRequest* prev = nullptr;  // newer
    TrackedRequest* next = nullptr;  // older: the list is in order of arrival
    // Requests waiting for this one to end; made by the first of them, so
    // that the common request (nobody waits) carries no queue.
    std::unique_ptr<CoQueue> waiters;
};

// Inline: every request of every node constructs one.
class NodeRequest {
public:
    NodeRequest(BlockNode& node, uint64_t offset, uint64_t bytes) : node_(node) {
        assert_in_context(node_.ctx());
        // One writer (this context): see BlockNode::in_flight_.
        node_.in_flight_.store(node_.in_flight_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        t_.offset = offset;
        t_.end = offset + bytes;
        t_.next = node_.tracked_;
        if (t_.next) t_.next->prev = &t_;
        node_.tracked_ = &t_;
    }
    ~NodeRequest() {
        if (t_.prev) t_.prev->next = t_.next;
        else node_.tracked_ = t_.next;
        if (t_.next) t_.next->prev = t_.prev;
        if (t_.serialising) node_.serialising_--;
        if (t_.waiters) wake_waiters();
        node_.in_flight_.store(node_.in_flight_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }
    NodeRequest(const NodeRequest&) = delete;
    NodeRequest& operator=(const NodeRequest&) = delete;

    // Widens the range outward to `align` and makes this request one that
    // overlapping requests do not run beside.
    void make_serialising(uint64_t align);
    // Whether the node has a serialising request, so wait_for_conflicts()
    // is worth its coroutine.
    bool may_conflict() const { return node_.serialising_ > 0; }
    // Waits while an older overlapping request conflicts with this one
    // (either of them serialises). Waiting only for older ones keeps the
    // waits free of cycles.
    Task<void> wait_for_conflicts();

private:
    TrackedRequest* find_conflict() const;
    void wake_waiters();

    BlockNode& node_;
    TrackedRequest t_;
};

}  // namespace ioplane::block
