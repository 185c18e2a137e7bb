// BlockBackend: a user's handle on a node (QEMU's BlockBackend). Exports and
// jobs do all I/O through one. It holds an edge ("root") into the node with
// the permissions its user needs (consistent read; write if writable) and
// sharing everything, counts its user's requests (what drained sections
// wait for), parks new requests while the node is drained, and tells its
// owner when a drained section begins and ends and when the node moves to
// another AioContext. Requests go on through the edge into the node's
// request path (io.cc).
//
// Thread contract: constructor, destructor, can_attach and set_owner in the
// main thread; co_* functions in a coroutine in the node's context (a
// request parked by a drained section that ends after a context move
// continues in the node's new context).
#pragma once

#include <memory>

#include "ioplane/block/edge.h"
#include "ioplane/block/node.h"
#include "ioplane/core/co_queue.h"

namespace ioplane::block {

// What permission messages call a user without a name, as QEMU calls its
// anonymous BlockBackends (an export's): tools match these messages.
inline constexpr const char* kAnonymousUser = "an unnamed block device";

class BlockBackend {
public:
    // What the backend's owner (an export) is told: QEMU's BlockDevOps. Main
    // thread, each call.
    class Owner {
    public:
        // The node's first drained section began (its requests in flight are
        // being waited for), or its last one ended. Sections nest: one call
        // each for the outermost. An owner whose requests can wait on a peer
        // (a reply to a client that does not read) makes sure they end.
        virtual void drained_begin() {}
        virtual void drained_end() {}
        // Inside a drained section: the node moves to another context.
        virtual void detach_aio_context() = 0;
        virtual void attach_aio_context(AioContext& ctx) = 0;

    protected:
        ~Owner() = default;
    };

    // Main thread: whether a user called `name` ("export 'e0'") may attach
    // to `node`, reading or also writing, given the node's other users and
    // parents; the error names the one it conflicts with.
    // `resize`: the user also resizes the node (block_resize,
    // blockdev-create).
    static Result<void> can_attach(BlockNode& node, bool writable, const std::string& name, bool resize = false);
    // Main thread: the same for a user that takes `perm` and shares only
    // `shared` (a job).
    static Result<void> can_attach(BlockNode& node, uint32_t perm, uint32_t shared, const std::string& name);
    // Main thread: attaches; can_attach() must have said yes.
    BlockBackend(std::shared_ptr<BlockNode> node, bool writable, std::string name = "a block backend",
                 bool resize = false);
    BlockBackend(std::shared_ptr<BlockNode> node, uint32_t perm, uint32_t shared, std::string name);
    ~BlockBackend();
    BlockBackend(const BlockBackend&) = delete;
    BlockBackend& operator=(const BlockBackend&) = delete;

    BlockNode& node() const { return root_.child(); }
    // The edge into the node: where walks down the node's chain start
    // (chain.h), inside a request of this user.
    BlockEdge& root_edge() { return root_; }
    const std::shared_ptr<BlockNode>& node_ptr() const { return root_.child_ptr(); }
    AioContext& ctx() const { return node().ctx(); }
    bool writable() const { return writable_; }
    uint64_t length() const { return node().driver().length(); }
    void set_owner(Owner* owner) { owner_ = owner; }
    Owner* owner() const { return owner_; }
    // Any thread: requests of this user in flight.
    uint64_t in_flight() const { return in_flight_.load(std::memory_order_seq_cst); }

    // `flags`: kCopyOnRead copies what the backing chain supplies into the
    // node (needs the write-unchanged permission).
    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t flags = 0);
    // kWriteFua: durable on return (native FUA or a flush after the write).
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t flags);
    Task<Result<void>> co_flush();
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes);
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags);
    // Needs the resize permission (the constructor's `resize`).
    Task<Result<void>> co_truncate(uint64_t size);
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes,
                                              StatusQuery query = StatusQuery::exact);

    // For users that count their own requests (an export counts a request
    // from its receipt to its reply, so that drained sections also wait for
    // replies): co_begin_request() waits while the node is drained, then
    // counts one request and continues in the node's context; end_request()
    // ends it. With queuing disabled, the co_* functions above must run inside
    // such a request: they neither wait (that would deadlock a drain) nor
    // count again (Checked builds assert that a request is counted).
    Task<void> co_begin_request() { return enter(); }
    void end_request() { leave(); }
    void disable_request_queuing() { queue_requests_ = false; }

private:
    Task<void> enter();  // waits while drained, then counts
    void leave();
    // Runs `request` (a Task made by a call on root_) counted: inside
    // enter()/leave() unless the owner counts its requests itself.
    template <class T>
    Task<T> counted(Task<T> request);
    template <class T>
    Task<T> queued(Task<T> request);

    BlockEdge root_;
    const bool writable_;  // takes kPermWrite
    Owner* owner_ = nullptr;
    bool queue_requests_ = true;
    // Pairs with BlockNode::quiesce_count_ (see there).
    std::atomic<uint64_t> in_flight_{0};
};

}  // namespace ioplane::block
