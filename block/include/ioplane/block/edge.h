// BlockEdge (QEMU's BdrvChild): the link from a parent to a child node. A
// parent is another node (its "file", "backing", ... child) or a user of the
// graph (a BlockBackend: an export, a job). The edge records what the parent
// needs from the child and what it lets other parents do (permissions), and
// it is the only way a parent reaches its child: every request goes through
// the edge into the child's request path (io.cc), so replacing a child is one
// change of the edge that every driver sees.
//
// Thread contract: construction, permissions and child replacement in the
// main thread (replacement inside a drained section); the co_* request
// functions in a coroutine in the child's context.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ioplane/block/driver.h"

namespace ioplane::block {

class BlockNode;

// Permissions a parent takes on a child, or shares with the child's other
// parents (QEMU's BLK_PERM_*).
enum Perm : uint32_t {
    kPermConsistentRead = 1u << 0,  // reads see data that does not change under them
    kPermWrite = 1u << 1,           // writes that change what reads return
    kPermWriteUnchanged = 1u << 2,  // writes of data that is already there (copy-on-read)
    kPermResize = 1u << 3,
    kPermGraphChange = 1u << 4,  // replacing this node in the graph (jobs' pivots)
};
inline constexpr uint32_t kPermAll = 0x1f;

// Any thread: "write, resize" (QEMU's names), for messages.
std::string perm_names(uint32_t perms);

// What a child is to its parent. The role decides the permissions a parent
// node takes on it (Driver::child_perms) and how a walk along a chain treats
// it (backing and filtered children continue a chain).
enum class ChildRole {
    file,      // a format driver's image file (data and metadata)
    backing,   // the image below in a chain (read-only, copy-on-write source)
    data,      // a format's external data file
    filtered,  // a filter's only child: same data, passed through
    root,      // the edge of a user (BlockBackend)
    job,       // a job's hold on a node it works on (permissions only): it
               // stays at its node when the node is replaced in the graph
    target,    // where a copy-before-write filter copies old data to
};

// Any thread: the child's name as QEMU gives it ("file", "backing",
// "data-file", "target"; a filter's child is "file", a user's edge "root").
const char* role_name(ChildRole role);

class BlockEdge {
public:
    // Main thread, for every member up to the request functions.
    // `child_name` (a static string) names the child in messages instead of
    // the role's name: a job's "base", "intermediate node".
    BlockEdge(BlockNode* parent, std::string parent_name, ChildRole role, std::shared_ptr<BlockNode> child,
              const char* child_name = nullptr);
    ~BlockEdge();
    BlockEdge(const BlockEdge&) = delete;
    BlockEdge& operator=(const BlockEdge&) = delete;

    // Any thread (the child changes only while drained; a user's request
    // may read it while a drained section begins, and then parks).
    BlockNode& child() const { return *child_raw_.load(std::memory_order_acquire); }
    // Main thread.
    const std::shared_ptr<BlockNode>& child_ptr() const { return child_; }
    ChildRole role() const { return role_; }
    // "file", "backing", "root", "intermediate node": for messages.
    const char* child_name() const { return child_name_ ? child_name_ : role_name(role_); }
    // The parent node; null for a user's edge.
    BlockNode* parent_node() const { return parent_; }
    // "node 'q'", "export 'e0'": who uses the child, for messages.
    const std::string& parent_name() const { return parent_name_; }
    uint32_t perm() const { return perm_.load(std::memory_order_relaxed); }
    uint32_t shared() const { return shared_.load(std::memory_order_relaxed); }

    // Requests into the child's request path (io.cc). In the child's
    // context, inside a request of the parent (or of the user). `flags` are
    // the driver flags (kWriteFua, kMayUnmap, kNoFallback, kCopyOnRead).
    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t flags = 0);
    Task<Result<void>> co_pwritev(uint64_t offset, uint64_t bytes, std::span<const iovec> iov, uint32_t flags = 0);
    Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags = 0);
    Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes);
    Task<Result<void>> co_flush();
    Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes, StatusQuery query = StatusQuery::exact);
    Task<Result<void>> co_truncate(uint64_t size);

private:
    friend class BlockNode;
    friend class PermissionUpdate;
    friend Result<void> replace_node(BlockNode&, const std::shared_ptr<BlockNode>&, const BlockEdge*);

    BlockNode* const parent_;
    const std::string parent_name_;
    const ChildRole role_;
    const char* const child_name_;
    // Main thread, drained: the reference, and a copy of the pointer for
    // child(). A user's request reads that before it sees whether the node
    // is drained (BlockBackend::enter), so it may race with the change of
    // child_ (a filter inserted above a node under an export).
    void set_child(std::shared_ptr<BlockNode> child) {
        child_ = std::move(child);
        child_raw_.store(child_.get(), std::memory_order_release);
    }
    std::shared_ptr<BlockNode> child_;
    std::atomic<BlockNode*> child_raw_;
    // Written in the main thread (PermissionUpdate), also while requests of
    // the node run in an IOThread (a job taking its nodes), which read them:
    // atomics, relaxed, as a request may see the old or the new value.
    std::atomic<uint32_t> perm_{0};
    std::atomic<uint32_t> shared_{kPermAll};
};

}  // namespace ioplane::block
