// BlockNode (QEMU's BlockDriverState): one node of the block graph — a driver
// instance, a node-name, the edges to its children (which it owns) and the
// edges into it from its parents and users (which it lists). A whole graph
// lives in one AioContext at a time. Nodes are reference counted
// (std::shared_ptr): the graph holds the ones the monitor created, edges hold
// their children.
//
// Thread contract: graph changes (edges, context moves, drains, reopen) in
// the main thread; requests (through an edge, io.cc) in the node's context;
// accessors below say which.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioplane/block/dirty_bitmap.h"
#include "ioplane/block/driver.h"
#include "ioplane/block/edge.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

class BlockBackend;
struct TrackedRequest;

// What the request path needs from the driver on every request, read from
// it once (QEMU's BlockLimits): a virtual call per request and limit would
// cost a measurable share of the cheapest requests.
struct NodeLimits {
    uint32_t request_alignment = 1;
    uint32_t memory_alignment = 1;
    uint64_t max_transfer = 0;  // 0: none
    bool native_fua = false;    // DriverCaps::can_fua
};

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
    // Any thread; changes only while drained (reopen).
    bool read_only() const { return read_only_; }
    // Any thread, constant after open: discard=unmap (else discards do
    // nothing and write-zeroes never deallocate, QEMU's default), and
    // force-share=on (the node lets others do anything beside it).
    bool unmap() const { return unmap_; }
    bool force_share() const { return force_share_; }
    // Main thread, before the node is used.
    void set_discard_and_sharing(bool unmap, bool force_share) {
        unmap_ = unmap;
        force_share_ = force_share;
    }

    // Any thread: the context the graph lives in (changes only while drained).
    AioContext& ctx() const { return *ctx_.load(std::memory_order_acquire); }

    // Any thread (changes only while drained, or before the node is used).
    const NodeLimits& limits() const { return limits_; }
    // The node's context (the main thread before it is used): its size in
    // bytes, read from the driver at open and after a truncate through the
    // request path.
    uint64_t length() const { return length_; }
    // Main thread: reads the driver's limits again, then the parents'
    // (theirs may follow from this node's). replace_child and
    // BlockGraph::open call it; code that builds a node itself calls it once
    // the node's children are attached (a driver may read its limits from
    // them).
    void refresh_limits();

    // Main thread. Adds an edge to `child` with the permissions this node's
    // driver takes for `role` (Driver::child_perms). Refused, naming both
    // users, when they conflict with the child's other parents, or when the
    // child is in another context.
    Result<BlockEdge*> attach_child(ChildRole role, std::shared_ptr<BlockNode> child);
    // Main thread, inside a drained section of this node: `edge` (one of
    // this node's) points to `child` instead, permissions moving with it.
    // What a snapshot, a stream, a commit or a mirror pivot does.
    Result<void> replace_child(BlockEdge& edge, std::shared_ptr<BlockNode> child);
    // Main thread: removes one of this node's edges (undoing attach_child).
    void detach_child(BlockEdge& edge);
    // Any thread: the edge to the child with `role`, or null.
    BlockEdge* child(ChildRole role) const;
    // Any thread: the next node down a chain, the backing child or a
    // filter's child (QEMU's bdrv_filter_or_cow_child); null at the bottom.
    BlockEdge* chain_child() const;
    // Main thread.
    const std::vector<std::unique_ptr<BlockEdge>>& children() const { return children_; }
    // Main thread: every edge into this node, from parent nodes and users.
    const std::vector<BlockEdge*>& parents() const { return parents_; }
    bool has_parent_nodes() const;
    // Main thread: BlockBackends attached to this node (exports, jobs).
    const std::vector<BlockBackend*>& users() const { return users_; }
    // Main thread: this node and every node connected to it through edges,
    // each once, this one first (what a drained section and a context move
    // cover).
    std::vector<BlockNode*> component();
    // Main thread: this node and every node below it, each once.
    std::vector<BlockNode*> subtree();

    // Main thread: why operations (jobs, snapshots) may not use this node
    // now, as QEMU's op blockers say it ("block device is in use by block
    // job: stream"); empty when nothing holds it.
    const std::string& op_blocker() const { return op_blocker_; }
    void set_op_blocker(std::string reason) { op_blocker_ = std::move(reason); }
    // Main thread: "Node 'x' is busy: <op_blocker>" if it is blocked.
    Result<void> check_not_blocked() const;
    // Main thread: QEMU's backing blocker: "Node 'x' is busy: node is used
    // as backing hd of 'y'" if a node has this one as its backing file.
    Result<void> check_not_backing() const;

    // Main thread: the options the node was opened with (its own subtree of
    // --blockdev or blockdev-add), for blockdev-reopen's comparison.
    const nlohmann::json& open_options() const { return open_options_; }
    void set_open_options(nlohmann::json options) { open_options_ = std::move(options); }

    // Main thread, drained: reopen read-only or read-write. Refused when a
    // parent needs write on a node going read-only; the driver reopens its
    // file if it must.
    Result<void> set_read_only(bool read_only);

    // The node's dirty bitmaps (their own thread contract: dirty_bitmap.h).
    DirtyBitmaps& dirty_bitmaps() { return dirty_bitmaps_; }
    const DirtyBitmaps& dirty_bitmaps() const { return dirty_bitmaps_; }

    // Requests in flight in this node's request path (any thread).
    uint64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
    // Whether a drained section is active (any thread).
    bool quiesced() const { return quiesce_count_.load(std::memory_order_seq_cst) > 0; }

private:
    friend class BlockEdge;
    friend class BlockBackend;
    friend class PermissionUpdate;
    friend class NodeRequest;
    friend void drained_begin(BlockNode&);
    friend void drained_end(BlockNode&);
    friend Result<void> change_aio_context(BlockNode&, AioContext&);
    friend Result<void> replace_node(BlockNode&, const std::shared_ptr<BlockNode>&, const BlockEdge*);

    const std::string node_name_;
    const std::unique_ptr<Driver> driver_;
    bool read_only_;  // main thread, drained
    bool unmap_ = false;
    bool force_share_ = false;
    std::atomic<AioContext*> ctx_;
    std::vector<std::unique_ptr<BlockEdge>> children_;  // main thread
    std::vector<BlockEdge*> parents_;                   // main thread
    std::vector<BlockBackend*> users_;                  // main thread
    NodeLimits limits_;                                 // main thread (refresh_limits)
    uint64_t length_ = 0;                               // refresh_limits, then the request path
    nlohmann::json open_options_;                       // main thread
    std::string op_blocker_;                            // main thread

    // The request path (node's context). Only the node's context writes
    // in_flight_, so it is a plain load and store, no locked instruction;
    // drains read it in the main thread. They need no kick from it: a
    // request in a node lives inside a request of a user, and the user's
    // count (seq_cst, with a kick at zero) drops after it, in the same
    // thread, so the wake-up that follows the user's decrement also
    // publishes this one.
    std::atomic<uint64_t> in_flight_{0};
    TrackedRequest* tracked_ = nullptr;  // requests in flight, newest first
    unsigned serialising_ = 0;           // how many of them serialise

    // Pairing (SB pattern): a user's request increments its BlockBackend's
    // count then reads quiesce_count_; drained_begin increments
    // quiesce_count_ then reads the counts. All seq_cst: at least one sees
    // the other.
    std::atomic<int> quiesce_count_{0};
    CoQueue parked_;  // users' requests waiting for the drained section to end
    // The nodes each drained section begun on this node quiesced, innermost
    // last (main thread).
    std::vector<std::vector<std::shared_ptr<BlockNode>>> drained_sets_;

    // Go with the node: QEMU releases a node's bitmaps when it closes it.
    DirtyBitmaps dirty_bitmaps_{*this};
};

// Main thread. Stops new requests from every user of the node's component
// (its parents, their parents, ..., its children and theirs) and waits
// (running the main loop) until the requests in flight through any of them
// are done. Sections nest. A graph change inside a section that brings in
// nodes from outside drains them first (their own section).
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

// Main thread, inside a drained section of `from`: every edge into `from`
// (parents' and users') but `keep` points to `to` instead, permissions
// checked on `to` for all of them at once (QEMU's bdrv_replace_node). What
// a snapshot does with `keep` the overlay's new backing edge. Parents
// below `to` keep pointing to `from`.
Result<void> replace_node(BlockNode& from, const std::shared_ptr<BlockNode>& to, const BlockEdge* keep);

// Main thread: runs `task` in `ctx` and waits for it, running the main loop
// meanwhile (a driver's co_open and co_close, and the monitor's synchronous
// commands that do I/O: block_resize, blockdev-snapshot-sync).
Result<void> run_to_completion(AioContext& ctx, Task<Result<void>> task);

// Main thread. Moves the node's component to `ctx` inside a drained
// section: drivers detach and re-attach, users are told so that they move
// their fds and coroutines (QEMU's bdrv_try_change_aio_context).
Result<void> change_aio_context(BlockNode& node, AioContext& ctx);

}  // namespace ioplane::block
