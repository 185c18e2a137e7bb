// Drives one started queue with a set of BlkSlots: puts requests on the
// ring, publishes them with one notification at most per batch, and waits
// for completions either by busy-polling the used ring or by sleeping on
// the call eventfd (re-arming used-buffer notifications first, then
// re-checking the ring, so that a completion racing with the re-arm is not
// lost).
//
// Thread contract: one thread per QueueRunner (the one that drives the queue).
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "blk_request.h"
#include "frontend.h"

namespace ioplane::vublk {

enum class WaitMode { kPoll, kEvent };

struct Completion {
    uint16_t slot;
    uint8_t status;
    uint32_t used_len;
};

// Notification counts, for "kicks per I/O" and "wake-ups per I/O".
struct RunnerCounters {
    uint64_t publishes = 0;  // batches made visible
    uint64_t kicks = 0;      // batches the device wanted to hear about
    uint64_t sleeps = 0;     // event mode: waits on the call eventfd
};

class QueueRunner {
public:
    // `hangup_fd` (the control socket) is watched while waiting: the back
    // end closing it fails the wait at once instead of at the timeout.
    QueueRunner(Queue& q, std::vector<BlkSlot> slots, WaitMode mode, bool indirect, int hangup_fd,
                std::chrono::milliseconds timeout);

    size_t slot_count() const { return slots_.size(); }
    BlkSlot& slot(size_t i) { return slots_[i]; }
    uint16_t outstanding() const { return q_.vq.outstanding(); }
    const RunnerCounters& counters() const { return counters_; }
    bool indirect() const { return indirect_; }

    // Puts the request for `slot` on the ring; the device sees it after
    // publish(). The slot must not have a request outstanding.
    std::expected<void, std::string> submit(uint16_t slot, const BlkRequest& r);
    // Makes the submitted requests visible and kicks if the device asks.
    void publish();
    // Waits until at least one request completed and appends every
    // completion there is. Fails on a protocol error, when the back end hangs
    // up, or when nothing completes within the timeout.
    std::expected<void, std::string> wait(std::vector<Completion>& out);
    // submit + publish + wait for that one request (only one outstanding).
    std::expected<Completion, std::string> execute(uint16_t slot, const BlkRequest& r);

private:
    std::expected<size_t, std::string> harvest(std::vector<Completion>& out);
    std::expected<void, std::string> sleep_on_call(std::chrono::steady_clock::time_point deadline);
    std::string stall_message() const;

    Queue& q_;
    std::vector<BlkSlot> slots_;
    std::vector<int32_t> slot_of_head_;  // -1: not outstanding
    WaitMode mode_;
    bool indirect_;
    int hangup_fd_;
    std::chrono::milliseconds timeout_;
    RunnerCounters counters_;
};

}  // namespace ioplane::vublk
