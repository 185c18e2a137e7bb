// Timers with nanosecond deadlines on the monotonic clock (now_ns()). Any
// number per context; arming, re-arming and cancelling are O(log n) with no
// allocation (an indexed binary heap in the context).
//
// Thread contract: home context only, for every member. To arm a timer from
// another thread, schedule a BH into its context.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ioplane/core/bottom_half.h"

namespace ioplane {

class Timer {
public:
    Timer(AioContext& ctx, Callback cb) : ctx_(ctx), cb_(std::move(cb)) {}
    ~Timer() { cancel(); }
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;

    void arm_at(int64_t deadline_ns);
    void arm_in(int64_t delay_ns);
    void cancel();
    bool armed() const { return heap_index_ != kNotArmed; }
    int64_t deadline() const { return deadline_; }
    AioContext& context() const { return ctx_; }

private:
    friend class TimerHeap;
    static constexpr size_t kNotArmed = ~size_t(0);
    AioContext& ctx_;
    Callback cb_;
    int64_t deadline_ = 0;
    size_t heap_index_ = kNotArmed;
};

}  // namespace ioplane

namespace ioplane {

// The timers of one AioContext, ordered by deadline. Used by AioContext only.
class TimerHeap {
public:
    void insert(Timer& t);
    void remove(Timer& t);
    void update(Timer& t);  // after its deadline changed
    Timer* earliest() const { return heap_.empty() ? nullptr : heap_.front(); }
    size_t size() const { return heap_.size(); }
    // Fires expired timers; at most the number armed on entry, so a callback
    // that re-arms its timer for "now" cannot live-lock the loop.
    bool run_expired(int64_t now);
    // Disarms every timer without running it (the context is going away).
    void detach_all();

private:
    void sift_up(size_t i);
    void sift_down(size_t i);
    void place(size_t i, Timer* t);
    std::vector<Timer*> heap_;
};

}  // namespace ioplane
