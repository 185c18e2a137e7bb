// BlockNode (QEMU's BlockDriverState): one node of the block graph — a driver
// instance, a node-name, and named children ("file", "backing"). A whole graph
// lives in one AioContext at a time. Nodes are reference counted
// (std::shared_ptr): the graph holds them by node-name, parents hold their
// children, users hold them through BlockBackends.
//
// Thread contract: graph changes (children, context moves, drains) in the main
// thread; I/O (through BlockBackend) in the node's context; accessors below
// say which.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ioplane/block/driver.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

class BlockBackend;

class BlockNode : public std::enable_shared_from_this<BlockNode> {
public:
    // Main thread.
    BlockNode(std::string node_name, std::unique_ptr<Driver> driver, AioContext& ctx, bool read_only);
    ~BlockNode();
    BlockNode(const BlockNode&) = delete;
    BlockNode& operator=(const BlockNode&) = delete;

    // Any thread (constant).
    const std::string& node_name() const { return node_name_; }
    Driver& driver() const { return *driver_; }
    bool read_only() const { return read_only_; }

    // Any thread: the context the graph lives in (changes only while drained).
    AioContext& ctx() const { return *ctx_.load(std::memory_order_acquire); }

    // Main thread.
    void set_child(const std::string& role, std::shared_ptr<BlockNode> child);
    const std::map<std::string, std::shared_ptr<BlockNode>>& children() const { return children_; }
    // This node and every node below it, each once, parents first.
    std::vector<BlockNode*> subtree();
    // BlockBackends attached to this node (exports and other users).
    const std::vector<BlockBackend*>& users() const { return users_; }
    bool has_parents() const { return parents_ > 0; }

    // Requests in flight through this node's users (any thread).
    uint64_t in_flight() const { return in_flight_.load(std::memory_order_seq_cst); }
    // Whether a drained section is active (any thread).
    bool quiesced() const { return quiesce_count_.load(std::memory_order_seq_cst) > 0; }

private:
    friend class BlockBackend;
    friend void drained_begin(BlockNode&);
    friend void drained_end(BlockNode&);
    friend Result<void> change_aio_context(BlockNode&, AioContext&);

    const std::string node_name_;
    const std::unique_ptr<Driver> driver_;
    const bool read_only_;
    std::atomic<AioContext*> ctx_;
    std::map<std::string, std::shared_ptr<BlockNode>> children_;  // main thread
    unsigned parents_ = 0;                                        // main thread
    std::vector<BlockBackend*> users_;                            // main thread
    // Pairing (SB pattern): a request increments in_flight_ then reads
    // quiesce_count_; drained_begin increments quiesce_count_ then reads
    // in_flight_. All seq_cst: at least one sees the other.
    std::atomic<uint64_t> in_flight_{0};
    std::atomic<int> quiesce_count_{0};
    CoQueue parked_;  // requests waiting for the drained section to end
};

// Main thread. Stops new requests from the users of `node` and of every node
// below it, and waits (running the main loop) until those in flight are done.
// Sections nest.
void drained_begin(BlockNode& node);
// Main thread. Ends a section; when the last one ends, parked requests resume.
void drained_end(BlockNode& node);

class DrainedSection {
public:
    explicit DrainedSection(BlockNode& node) : node_(node) { drained_begin(node_); }
    ~DrainedSection() { drained_end(node_); }
    DrainedSection(const DrainedSection&) = delete;
    DrainedSection& operator=(const DrainedSection&) = delete;

private:
    BlockNode& node_;
};

// Main thread. Moves the graph under `node` (which must be a root) to `ctx`
// inside a drained section: drivers detach and re-attach, users are told so
// that they move their fds and coroutines (QEMU's try_change_aio_context).
Result<void> change_aio_context(BlockNode& node, AioContext& ctx);

}  // namespace ioplane::block
