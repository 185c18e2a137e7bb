#include "ioplane/core/thread_pool.h"

#include <pthread.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <system_error>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/log.h"

namespace ioplane {
namespace {

constexpr int64_t kMaxIdleNs = 86'400'000'000'000;  // one day

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

// In the home context; no worker touches the item any more.
void WorkItem::run() {
    state_ = State::idle;
    pool_->in_flight_--;
    complete(cancelled_);
}

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
    {
        std::lock_guard lk(mu_);
        IOPLANE_ASSERT(item.state_ == WorkItem::State::idle && !stopping_);
        item.state_ = WorkItem::State::queued;
        item.cancelled_ = false;
        item.pool_ = this;
        item.prev_ = tail_;
        item.next_ = nullptr;
        (tail_ ? tail_->next_ : head_) = &item;
        tail_ = &item;
        ++queued_;
        in_flight_++;
        // More queued items than idle workers to pick them up: add a worker.
        if (queued_ > idle_ && threads_.size() < limits_.max_threads && spawn_worker()) return;
        if (threads_.empty()) {
            // No worker exists and none could be started: fail the item
            // rather than leave it queued forever.
            LOG_ERROR("thread pool of '%s': no worker thread; cancelling work", ctx_.name().c_str());
            (item.prev_ ? item.prev_->next_ : head_) = nullptr;
            tail_ = item.prev_;
            --queued_;
            item.state_ = WorkItem::State::idle;
            item.cancelled_ = true;
            ctx_.schedule_node(item);
            return;
        }
    }
    // Outside mu_: a woken worker must not find the lock still held and sleep again.
    work_ready_.notify_one();
}

bool ThreadPool::spawn_worker() {
    threads_.emplace_front();
    auto self = threads_.begin();
    try {
        *self = std::thread([this, self] { worker_main(self); });
        return true;
    } catch (const std::system_error& e) {
        threads_.erase(self);
        LOG_WARN("thread pool of '%s': cannot start a worker: %s", ctx_.name().c_str(), e.what());
        return false;
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
            // Clamped: a huge timeout ("never") must not overflow the deadline.
            const auto idle = std::chrono::nanoseconds(std::min<int64_t>(limits_.idle_timeout_ns, kMaxIdleNs));
            bool woken = work_ready_.wait_for(lk, idle,
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
        // Queue the completion with mu_ held: a submit() that it triggers
        // then finds this worker idle instead of spawning another one. The
        // completion may free the item: do not touch it after this.
        lk.lock();
        ctx_.schedule_node(*item);
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
