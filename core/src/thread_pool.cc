#include "ioplane/core/thread_pool.h"

#include <pthread.h>

#include <cerrno>
#include <chrono>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/log.h"

namespace ioplane {
namespace {

// The item behind ThreadPool::submit(fn, done); owned by the pool until its
// completion has run.
class FunctionWorkItem final : public WorkItem {
public:
    FunctionWorkItem(std::move_only_function<int()> fn, std::move_only_function<void(int)> done)
        : fn_(std::move(fn)), done_(std::move(done)) {}

private:
    void work() override { ret_ = fn_(); }
    void complete(bool cancelled) override {
        std::unique_ptr<FunctionWorkItem> self(this);
        done_(cancelled ? -ECANCELED : ret_);
    }
    void discard() override { delete this; }

    std::move_only_function<int()> fn_;
    std::move_only_function<void(int)> done_;
    int ret_ = 0;
};

}  // namespace

ThreadPool::ThreadPool(AioContext& ctx, Limits limits)
    : ctx_(ctx), thread_name_((ctx.name() + "-w").substr(0, 15)), limits_(limits) {}

ThreadPool::~ThreadPool() {
    assert_in_context(ctx_);
    std::list<std::thread> threads;
    std::vector<WorkItem*> cancelled;
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
        while (WorkItem* item = pop_front()) cancelled.push_back(item);
        threads.swap(threads_);
    }
    work_ready_.notify_all();
    for (std::thread& t : threads) t.join();
    join_retired();
    for (WorkItem* item : cancelled) {
        item->cancelled_ = true;
        ctx_.schedule_node(*item);
    }
}

void ThreadPool::submit(WorkItem& item) {
    assert_in_context(ctx_);
    join_retired();
    std::lock_guard lk(mu_);
    IOPLANE_ASSERT(item.state_ == WorkItem::State::idle && !stopping_);
    item.state_ = WorkItem::State::queued;
    item.cancelled_ = false;
    item.prev_ = tail_;
    item.next_ = nullptr;
    (tail_ ? tail_->next_ : head_) = &item;
    tail_ = &item;
    ++queued_;
    // More queued items than workers about to pick them up: add a worker.
    if (queued_ > idle_ && threads_.size() < limits_.max_threads) {
        threads_.emplace_front();
        auto self = threads_.begin();
        *self = std::thread([this, self] { worker_main(self); });
    } else {
        work_ready_.notify_one();
    }
}

WorkItem* ThreadPool::submit(std::move_only_function<int()> fn, std::move_only_function<void(int)> done) {
    auto* item = new FunctionWorkItem(std::move(fn), std::move(done));
    submit(*item);
    return item;
}

bool ThreadPool::cancel(WorkItem& item) {
    assert_in_context(ctx_);
    {
        std::lock_guard lk(mu_);
        if (item.state_ != WorkItem::State::queued) return false;
        (item.prev_ ? item.prev_->next_ : head_) = item.next_;
        (item.next_ ? item.next_->prev_ : tail_) = item.prev_;
        --queued_;
        item.state_ = WorkItem::State::idle;
    }
    item.cancelled_ = true;
    ctx_.schedule_node(item);
    return true;
}

WorkItem* ThreadPool::pop_front() {
    WorkItem* item = head_;
    if (item == nullptr) return nullptr;
    head_ = item->next_;
    (head_ ? head_->prev_ : tail_) = nullptr;
    --queued_;
    return item;
}

void ThreadPool::worker_main(std::list<std::thread>::iterator self) {
    pthread_setname_np(pthread_self(), thread_name_.c_str());
    std::unique_lock lk(mu_);
    for (;;) {
        while (head_ == nullptr && !stopping_) {
            ++idle_;
            bool woken = work_ready_.wait_for(lk, std::chrono::nanoseconds(limits_.idle_timeout_ns),
                                              [this] { return head_ != nullptr || stopping_; });
            --idle_;
            if (!woken) {
                // Idle too long: retire. The home context joins the thread.
                retired_.push_back(std::move(*self));
                threads_.erase(self);
                return;
            }
        }
        WorkItem* item = pop_front();
        if (item == nullptr) return;  // stopping; the destructor joins us
        item->state_ = WorkItem::State::running;
        lk.unlock();
        item->work();
        // The completion may free the item: do not touch it after this.
        ctx_.schedule_node(*item);
        lk.lock();
    }
}

void ThreadPool::join_retired() {
    std::vector<std::thread> retired;
    {
        std::lock_guard lk(mu_);
        retired.swap(retired_);
    }
    for (std::thread& t : retired) t.join();
}

void ThreadPool::set_limits(Limits limits) {
    assert_in_context(ctx_);
    std::lock_guard lk(mu_);
    limits_ = limits;
    work_ready_.notify_all();  // idle workers re-read the timeout
}

size_t ThreadPool::thread_count() const {
    std::lock_guard lk(mu_);
    return threads_.size();
}

size_t ThreadPool::idle_count() const {
    std::lock_guard lk(mu_);
    return idle_;
}

}  // namespace ioplane
