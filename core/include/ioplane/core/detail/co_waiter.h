// A coroutine suspended in a CoMutex/CoQueue/CoRwLock wait list, woken in the
// context it was suspended from. Lives in the awaiter, so waiting allocates
// nothing.
//
// Thread contract: the list is guarded by its owner's mutex; wake() any thread.
#pragma once

#include "ioplane/core/coroutine.h"

namespace ioplane::detail {

struct CoWaiter {
    CoroutineWakeup wakeup;
    AioContext* ctx = nullptr;
    CoWaiter* next = nullptr;
    bool exclusive = false;  // CoRwLock: waits to write

    // Records the coroutine and its context before it goes on a list.
    void prepare(std::coroutine_handle<> h) {
        wakeup.arm(h);
        ctx = AioContext::current();
        IOPLANE_ASSERT(ctx != nullptr);
    }
    // Resumes it in its own context's next iteration (never nested in the caller).
    void wake() { wakeup.wake_in(*ctx); }
};

// FIFO of waiters: fairness is first come, first served.
class WaiterFifo {
public:
    bool empty() const { return head_ == nullptr; }
    CoWaiter* front() const { return head_; }
    void push(CoWaiter& w) {
        w.next = nullptr;
        (tail_ ? tail_->next : head_) = &w;
        tail_ = &w;
    }
    CoWaiter* pop() {
        CoWaiter* w = head_;
        if (w != nullptr) {
            head_ = w->next;
            if (head_ == nullptr) tail_ = nullptr;
        }
        return w;
    }

private:
    CoWaiter* head_ = nullptr;
    CoWaiter* tail_ = nullptr;
};

}  // namespace ioplane::detail
