#include "blk_queue.h"

#include <unistd.h>

#include <cassert>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::vhost_user {

// A request's buffers, reused by the next request with the same head.
struct BlkQueue::Slot {
    DescriptorChain chain;
};

namespace {

void signal_eventfd(int fd) {
    if (fd < 0) return;
    const uint64_t one = 1;
    // Non-blocking; EAGAIN means the counter is already set, which is all a
    // notification needs.
    (void)!write(fd, &one, sizeof one);
}

}  // namespace

BlkQueue::BlkQueue(uint32_t index, block::BlockBackend& blk, const BlkDeviceConfig& config, AioContext& ctx,
                   std::string log_name)
    : index_(index),
      blk_(blk),
      config_(config),
      log_name_(std::move(log_name)),
      ctx_(&ctx),
      kick_({.process = [this] { process(); },
             .has_work = [this] { return has_work(); },
             .set_notifications = [this](bool on) { set_kick_notifications(on); }}) {}

BlkQueue::~BlkQueue() { assert(!running() && in_flight_ == 0); }

bool BlkQueue::startable() const {
    return !broken_ && setup_.enabled && setup_.kick_given && setup_.addr && setup_.num != 0;
}

Result<void> BlkQueue::start(std::shared_ptr<const GuestMemory> mem, QueueFeatures features,
                             std::shared_ptr<InflightArea> inflight) {
    assert_in_main_thread();
    assert(startable() && !running());
    std::vector<uint16_t> resubmitted;
    if (!ring_) {
        auto ring = SplitRing::create(*mem, setup_.num, *setup_.addr, setup_.base, features.event_idx, features.indirect);
        if (!ring) return fail(ring.error().code, log_name_ + ": " + ring.error().message);
        const bool tracked = inflight && index_ < inflight->num_queues();
        if (tracked) {
            InflightTracker tracker(inflight->region(uint16_t(index_)), inflight->queue_size());
            auto recovered = tracker.recover(ring->used_idx(), setup_.num);
            if (!recovered) return fail(recovered.error().code, log_name_ + ": " + recovered.error().message);
            if (recovered->in_use) {
                const uint16_t resume = uint16_t(ring->used_idx() + recovered->heads.size());
                if (resume != setup_.base || !recovered->heads.empty())
                    LOG_INFO("%s: the previous back end left %zu requests in flight: resubmitted, then avail "
                             "index %u (the front end said %u)",
                             log_name_.c_str(), recovered->heads.size(), resume, setup_.base);
                ring->resume_at(resume);
                resubmitted = std::move(recovered->heads);
            }
            tracker_.emplace(tracker);
            inflight_ = std::move(inflight);
        }
        ring_.emplace(std::move(*ring));
        mem_ = std::move(mem);
        slots_.clear();
        for (uint32_t i = 0; i < setup_.num; i++) slots_.push_back(std::make_unique<Slot>());
        requests_ = 0;
        LOG_INFO("%s: started in '%s' (size %u, avail index %u%s)", log_name_.c_str(), context().name().c_str(),
                 setup_.num, ring_->last_avail_idx(), tracked ? ", in-flight tracking" : "");
    }
    writethrough_.store(features.writethrough, std::memory_order_relaxed);
    Result<void> r;
    run_in_context_sync(context(), [&] {
        resubmit(resubmitted);  // before anything the kicks bring
        r = kick_.start(context(), setup_.kick.get());
    });
    if (!r) return fail(r.error().code, log_name_ + ": " + r.error().message);
    return {};
}

uint16_t BlkQueue::stop(bool wait_for_requests) {
    assert_in_main_thread();
    if (running()) run_in_context_sync(context(), [this] { kick_.stop(); });
    if (!ring_) return setup_.base;
    if (!wait_for_requests) return ring_->last_avail_idx();
    wait_until_idle();
    setup_.base = ring_->last_avail_idx();
    LOG_INFO("%s: stopped at avail index %u after %llu requests", log_name_.c_str(), setup_.base,
             (unsigned long long)requests_);
    broken_.store(false, std::memory_order_relaxed);  // a new ring gets a new chance
    ring_.reset();
    tracker_.reset();
    inflight_.reset();
    slots_.clear();
    mem_.reset();
    return setup_.base;
}

// The count lives in the queue's context, so that a request costs no atomic
// read-modify-write for it; the main thread asks there, and the last request
// to end says so only when asked.
void BlkQueue::wait_until_idle() {
    run_in_context_sync(context(), [this] {
        idle_.store(in_flight_ == 0, std::memory_order_relaxed);
        idle_wanted_ = in_flight_ > 0;
    });
    aio_wait_while(context(), [this] { return !idle_.load(std::memory_order_acquire); });
}

void BlkQueue::set_call_fd(UniqueFd fd) {
    assert_in_main_thread();
    const int new_fd = fd.get();
    // Swapped in the queue's context, so that a notification in progress
    // uses a still-open fd.
    run_in_context_sync(context(), [&] { call_fd_.store(new_fd, std::memory_order_relaxed); });
    setup_.call = std::move(fd);  // closes the old one
}

void BlkQueue::set_err_fd(UniqueFd fd) {
    assert_in_main_thread();
    run_in_context_sync(context(), [&] { std::swap(setup_.err, fd); });
}

void BlkQueue::move_to(AioContext& ctx) {
    assert_in_main_thread();
    AioContext& old = context();
    if (&old == &ctx) return;
    const bool was_running = running();
    run_in_context_sync(old, [this] { kick_.stop(); });
    ctx_.store(&ctx, std::memory_order_release);
    if (!was_running) return;
    Result<void> r;
    run_in_context_sync(ctx, [&] { r = kick_.start(ctx, setup_.kick.get()); });
    // Watching an fd fails only without memory or fds; the queue then stays
    // stopped, and the guest's next requests wait.
    if (!r) LOG_ERROR("%s: not restarted after a move: %s", log_name_.c_str(), r.error().describe().c_str());
}

bool BlkQueue::has_work() { return !broken_ && ring_->has_available(); }

void BlkQueue::set_kick_notifications(bool on) {
    polling_ = !on;
    if (!broken_) ring_->set_kick_notifications(on);
}

void BlkQueue::process() {
    if (broken_) return;
    for (;;) {
        ring_->set_kick_notifications(false);
        for (;;) {
            std::string why;
            auto popped = ring_->pop(scratch_, why);
            if (popped == SplitRing::Pop::empty) break;
            if (popped == SplitRing::Pop::broken) return mark_broken(why);
            if (!begin_request()) return;
        }
        if (polling_) return;  // the loop's poll handler looks again
        ring_->set_kick_notifications(true);
        if (!ring_->has_available()) return;
    }
}

bool BlkQueue::begin_request() {
    Slot& slot = *slots_[scratch_.head];
    std::swap(slot.chain, scratch_);
    if (!blk_chain_is_well_formed(slot.chain)) {
        mark_broken("request without a header or a status byte");
        return false;
    }
    // Recorded before the request can have any effect.
    if (tracker_) tracker_->fetched(slot.chain.head);
    in_flight_++;
    requests_++;
    spawn_now(run_request(slot));
    return true;
}

// The requests a killed back end had taken and not completed, oldest first.
void BlkQueue::resubmit(const std::vector<uint16_t>& heads) {
    for (uint16_t head : heads) {
        std::string why;
        if (ring_->pop_head(head, scratch_, why) != SplitRing::Pop::ok) return mark_broken(why);
        if (!begin_request()) return;
    }
}

Task<void> BlkQueue::run_request(Slot& slot) {
    co_await blk_.co_begin_request();  // continues in the node's context
    const BlkOutcome o =
        co_await execute_blk_request(blk_, config_, writethrough_.load(std::memory_order_relaxed), slot.chain);
    // The ring belongs to the queue's thread, which may differ from the
    // node's (a queue on its own IOThread).
    AioContext& home = context();
    if (AioContext::current() != &home) co_await schedule_on(home);
    complete(slot, o.written);
    blk_.end_request();
    if (--in_flight_ == 0 && idle_wanted_) {
        idle_wanted_ = false;
        idle_.store(true, std::memory_order_release);
        aio_wait_kick();
    }
}

// Each used element is published at once, and the driver called if it
// asked to be: with EVENT_IDX (or the flags) a driver asks again only after
// it has seen the earlier ones, so calls stay at one per driver wake-up. A
// call at the first completion rather than after the loop iteration lets the
// driver refill the ring while the rest of a batch is served: publishing a
// whole batch at once made driver and device take turns, and halved IOPS
// at QD 16 (docs/BENCHMARKS.md).
void BlkQueue::complete(Slot& slot, uint32_t written) {
    const uint16_t head = slot.chain.head;
    if (tracker_) tracker_->publishing(head);
    ring_->push(head, written);
    const bool notify = ring_->publish_used();
    if (tracker_) tracker_->published(head, ring_->used_idx());
    if (notify) signal_eventfd(call_fd_.load(std::memory_order_relaxed));
}

void BlkQueue::mark_broken(const std::string& why) {
    broken_ = true;
    LOG_ERROR("%s: the driver broke the ring (%s): the queue stops until the device is reset", log_name_.c_str(),
              why.c_str());
    signal_eventfd(setup_.err.get());
}

}  // namespace ioplane::vhost_user
