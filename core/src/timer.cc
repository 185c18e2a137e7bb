#include "ioplane/core/timer.h"

#include "ioplane/core/aio_context.h"
#include "ioplane/core/clock.h"

namespace ioplane {

void Timer::arm_at(int64_t deadline_ns) {
    assert_in_context(ctx_);
    deadline_ = deadline_ns;
    if (armed())
        ctx_.timers().update(*this);
    else
        ctx_.timers().insert(*this);
}

// A delay past the clock's range means "never": the deadline saturates.
void Timer::arm_in(int64_t delay_ns) {
    const int64_t now = now_ns();
    arm_at(delay_ns > INT64_MAX - now ? INT64_MAX : now + delay_ns);
}

void Timer::cancel() {
    if (!armed()) return;
    assert_in_context(ctx_);
    ctx_.timers().remove(*this);
}

void TimerHeap::place(size_t i, Timer* t) {
    heap_[i] = t;
    t->heap_index_ = i;
}

void TimerHeap::sift_up(size_t i) {
    Timer* t = heap_[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap_[parent]->deadline_ <= t->deadline_) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, t);
}

void TimerHeap::sift_down(size_t i) {
    Timer* t = heap_[i];
    const size_t n = heap_.size();
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1]->deadline_ < heap_[child]->deadline_) child++;
        if (t->deadline_ <= heap_[child]->deadline_) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, t);
}

void TimerHeap::insert(Timer& t) {
    heap_.push_back(&t);
    sift_up(heap_.size() - 1);
}

void TimerHeap::update(Timer& t) {
    sift_up(t.heap_index_);
    sift_down(t.heap_index_);
}

void TimerHeap::remove(Timer& t) {
    size_t i = t.heap_index_;
    t.heap_index_ = Timer::kNotArmed;
    Timer* last = heap_.back();
    heap_.pop_back();
    if (last == &t) return;
    place(i, last);
    update(*last);
}

void TimerHeap::detach_all() {
    for (Timer* t : heap_) t->heap_index_ = Timer::kNotArmed;
    heap_.clear();
}

bool TimerHeap::run_expired(int64_t now) {
    size_t budget = heap_.size();
    bool ran = false;
    while (budget-- > 0 && !heap_.empty() && heap_.front()->deadline_ <= now) {
        Timer* t = heap_.front();
        remove(*t);
        t->cb_();  // may re-arm or destroy t
        ran = true;
    }
    return ran;
}

}  // namespace ioplane
