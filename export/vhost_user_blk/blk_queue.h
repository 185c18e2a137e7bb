// BlkQueue: one virtqueue of the vhost-user-blk device, run in its IOThread
// (the dataplane). A kick (or the poll handler) pops descriptor chains; each
// becomes a coroutine that does its I/O through the export's BlockBackend
// and completes in the queue's context: status byte, used element published
// at once, and a call notification if the driver asked for one.
//
// The front end's setup (SET_VRING_*) is kept in QueueSetup by the session
// in the main thread. start() builds the ring from it and starts the kick
// notifier in the queue's context; stop() deassigns the notifier and, for
// GET_VRING_BASE, a reset or a disconnect, waits until every popped request
// has completed (the spec: complete in-flight I/O before stopping).
//
// With in-flight tracking (INFLIGHT_SHMFD), the queue records in the shared
// area each request it takes and completes (inflight.h); a ring built over
// an area a killed back end used resumes where that back end stopped and
// first resubmits the requests it left in flight.
//
// A request counts in the BlockBackend from its pop to its used element, so
// a drained section (a context move) waits for whole requests; one popped
// while the node is drained waits (parked) before its I/O.
//
// Thread contract: main thread for every public member except where noted;
// they run work in the queue's context and wait for it.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/core/unique_fd.h"
#include "inflight.h"
#include "kick_notifier.h"
#include "split_ring.h"
#include "virtio_blk.h"

namespace ioplane::vhost_user {

// What the front end said about one queue.
struct QueueSetup {
    uint32_t num = 0;
    std::optional<VringAddr> addr;
    uint16_t base = 0;
    bool kick_given = false;  // SET_VRING_KICK came (kick may still be -1: poll)
    UniqueFd kick;
    UniqueFd call;            // -1: the front end polls the used ring
    UniqueFd err;
    bool enabled = false;
};

// What a queue needs from its device to run.
struct QueueFeatures {
    bool event_idx = false;
    bool indirect = false;
    bool writethrough = false;  // FLUSH not negotiated, or a writethrough cache chosen (CONFIG_WCE)
};

class BlkQueue {
public:
    BlkQueue(uint32_t index, block::BlockBackend& blk, const BlkDeviceConfig& config, AioContext& ctx,
             std::string log_name);
    // Must be stopped.
    ~BlkQueue();
    BlkQueue(const BlkQueue&) = delete;
    BlkQueue& operator=(const BlkQueue&) = delete;

    QueueSetup& setup() { return setup_; }
    bool running() const { return kick_.state() != KickNotifier::State::deassigned; }
    bool broken() const { return broken_.load(std::memory_order_relaxed); }
    // Whether the setup is complete enough to run (and the queue not broken).
    bool startable() const;

    // Starts processing (startable() must hold): builds the ring over `mem`
    // unless stopped without waiting (tracked in `inflight` if it has a
    // region for this queue), then assigns the kick notifier.
    Result<void> start(std::shared_ptr<const GuestMemory> mem, QueueFeatures features,
                       std::shared_ptr<InflightArea> inflight = nullptr);
    // Stops processing. With `wait_for_requests`, also waits until every
    // popped request completed, publishes the used ring, and forgets the
    // ring: the next start() begins at setup().base. Returns the next avail
    // index to process (the ring's, or setup().base if it had none).
    uint16_t stop(bool wait_for_requests);
    // Replaces the call or error eventfd, also while running.
    void set_call_fd(UniqueFd fd);
    // The driver switched the cache mode (CONFIG_WCE): requests that start
    // from now on make their writes durable on completion, or not.
    void set_writethrough(bool on) { writethrough_.store(on, std::memory_order_relaxed); }
    void set_err_fd(UniqueFd fd);
    // Moves the queue to `ctx` (inside a drained section of the node; a
    // running queue's notifier is stopped in the old context and started in
    // the new one).
    void move_to(AioContext& ctx);
    AioContext& context() const { return *ctx_.load(std::memory_order_acquire); }

private:
    struct Slot;
    // In the queue's context:
    void process();
    // The chain in scratch_ was popped: checks it and runs it as a request.
    bool begin_request();
    void resubmit(const std::vector<uint16_t>& heads);
    bool has_work();
    void set_kick_notifications(bool on);
    Task<void> run_request(Slot& slot);
    void complete(Slot& slot, uint32_t written);
    void mark_broken(const std::string& why);
    // Main thread: waits until every popped request has completed.
    void wait_until_idle();

    const uint32_t index_;
    block::BlockBackend& blk_;
    const BlkDeviceConfig& config_;
    const std::string log_name_;  // "vhost-user-blk export 'e0' queue 1"
    std::atomic<AioContext*> ctx_;
    QueueSetup setup_;
    std::shared_ptr<const GuestMemory> mem_;  // while the ring exists
    std::optional<SplitRing> ring_;
    std::shared_ptr<InflightArea> inflight_;  // while the ring is tracked
    std::optional<InflightTracker> tracker_;
    std::vector<std::unique_ptr<Slot>> slots_;  // by head index
    DescriptorChain scratch_;                   // what pop() fills, then swapped into its slot
    KickNotifier kick_;
    std::atomic<int> call_fd_{-1};  // setup_.call's fd, read in the queue's context
    bool polling_ = false;          // the loop busy-polls: kicks stay off
    std::atomic<bool> broken_{false};  // set in the queue's context, cleared by stop(true)
    std::atomic<bool> writethrough_{false};  // main thread writes, requests read
    size_t in_flight_ = 0;              // popped, not completed (queue's context)
    bool idle_wanted_ = false;          // queue's context: wait_until_idle() waits for in_flight_ == 0
    std::atomic<bool> idle_{false};     // ... and is told here
    uint64_t requests_ = 0;  // popped since the ring was built (queue's context; logged at stop)
};

}  // namespace ioplane::vhost_user
