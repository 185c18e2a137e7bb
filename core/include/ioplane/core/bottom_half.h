// Bottom halves (BHs): callbacks that an AioContext runs at the start of its
// next loop iteration. Scheduling is lock-free and allowed from any thread;
// that is how all cross-thread work enters a context.
//
// Three kinds share one mechanism, the intrusive BhNode:
//   - BottomHalf: a reusable BH with schedule/cancel/delete (AioContext::new_bh);
//   - one-shot BHs: AioContext::schedule_oneshot(fn), freed after running;
//   - nodes embedded in other objects (coroutine wake-ups, thread-pool
//     completions), scheduled with AioContext::schedule_node, no allocation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace ioplane {

class AioContext;
class ReentrancyGuard;
using Callback = std::move_only_function<void()>;

class BhNode {
public:
    BhNode() = default;
    BhNode(const BhNode&) = delete;
    BhNode& operator=(const BhNode&) = delete;

    // Home context only. The guard (if any) defers this node while the guard is
    // engaged instead of running it nested (see ReentrancyGuard).
    void set_guard(ReentrancyGuard* guard) { guard_ = guard; }

protected:
    ~BhNode() = default;
    // Runs in the home context. May free the node; the loop does not touch the
    // node after run() returns.
    virtual void run() = 0;
    // The context is being destroyed with this node still queued: release what
    // the node owns without running it.
    virtual void discard() {}

private:
    friend class AioContext;
    friend class BottomHalf;
    friend class ReentrancyGuard;

    // kQueued: the node is on a context's pending list (or a guard's deferred
    //          list) and must not be pushed again.
    // kScheduled: run it when popped; cleared by cancel().
    // kDeleted: its owner deleted it while queued; the loop frees it.
    static constexpr uint32_t kQueued = 1, kScheduled = 2, kDeleted = 4;

    std::atomic<uint32_t> flags_{0};
    BhNode* next_ = nullptr;  // link in the pending list; owned by whoever holds kQueued
    ReentrancyGuard* guard_ = nullptr;
};

// A reusable bottom half. Create with AioContext::new_bh; destroy by dropping
// the BhPtr.
class BottomHalf final : public BhNode {
public:
    // Any thread. Runs the callback once in the home context's next iteration,
    // however often schedule() is called before then.
    void schedule();
    // Any thread. Undoes schedule() if the callback has not started yet.
    void cancel();
    // Any thread.
    bool scheduled() const { return flags_.load(std::memory_order_relaxed) & kScheduled; }

    struct Deleter {
        // Home context only (the loop may be about to run the BH otherwise).
        void operator()(BottomHalf* bh) const;
    };

private:
    friend class AioContext;
    BottomHalf(AioContext& ctx, Callback cb) : ctx_(ctx), cb_(std::move(cb)) {}
    void run() override;
    void discard() override;

    AioContext& ctx_;
    Callback cb_;
    bool running_ = false;  // home context only: inside cb_
};

using BhPtr = std::unique_ptr<BottomHalf, BottomHalf::Deleter>;

// A device's re-entrancy guard (QEMU's MemReentrancyGuard): while it is
// engaged, BHs and fd handlers bound to it that a nested event loop would run
// are deferred until the guard is released, instead of re-entering the device.
//
// Thread contract: home context only; a guard belongs to one AioContext.
class ReentrancyGuard {
public:
    ReentrancyGuard() = default;
    ReentrancyGuard(const ReentrancyGuard&) = delete;
    ReentrancyGuard& operator=(const ReentrancyGuard&) = delete;
    ~ReentrancyGuard();

    bool engaged() const { return engaged_; }

    // Engages the guard for its lifetime. Scopes nest; the outermost one
    // releases what was deferred when it ends.
    class Scope {
    public:
        explicit Scope(ReentrancyGuard& guard) : guard_(guard), outermost_(!guard.engaged_) {
            guard_.engaged_ = true;
        }
        ~Scope();
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        ReentrancyGuard& guard_;
        bool outermost_;
    };

private:
    friend class AioContext;
    struct DeferredFd {
        AioContext* ctx;
        int fd;
    };
    bool engaged_ = false;
    std::vector<std::pair<AioContext*, BhNode*>> deferred_bhs_;
    std::vector<DeferredFd> deferred_fds_;
};

}  // namespace ioplane
