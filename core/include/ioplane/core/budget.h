// Budget: how much of a resource the daemon lets its clients hold, shared
// by every connection of every export; BudgetShare: one connection's part
// of it. Two budgets: the bytes of buffered requests and replies (request
// payloads read from clients, replies not yet sent), and file descriptors
// (9P fids).
//
// Bytes: a connection charges what a request may hold before it reads the
// request (its payload and the largest reply it can make). When the charge
// does not fit, the connection reads nothing more from its socket until one
// of its own requests ends and releases memory (back pressure), then asks
// again. Descriptors: a 9P walk or attach that does not fit fails (EMFILE).
// A connection that holds nothing may always take one request's worth, so
// every client makes progress whatever the others hold: clients hold at
// most the limit plus that much per connection.
//
// Thread contract: Budget, any thread (atomic counters). A BudgetShare
// belongs to one connection: its coroutines, in whichever context they run,
// one at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

namespace ioplane {

class BudgetCharge;

class Budget {
public:
    explicit Budget(uint64_t limit) : limit_(limit) {}
    Budget(const Budget&) = delete;
    Budget& operator=(const Budget&) = delete;

    uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
    // What is charged already stays; only new charges see the new limit.
    void set_limit(uint64_t limit) { limit_.store(limit, std::memory_order_relaxed); }
    uint64_t used() const { return used_.load(std::memory_order_relaxed); }
    // The most used at any time since the start.
    uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }

    // Takes `amount` if the total stays within the limit, or unconditionally
    // if `always` (a holder with nothing charged).
    bool try_charge(uint64_t amount, bool always);
    void release(uint64_t amount);
    // `amount` if it fits, held until the charge is destroyed (a client
    // socket's descriptor, for as long as its connection lives).
    std::optional<BudgetCharge> charge(uint64_t amount);

private:
    std::atomic<uint64_t> limit_;
    std::atomic<uint64_t> used_{0};
    std::atomic<uint64_t> peak_{0};
};

// A charge that gives itself back when destroyed. Movable.
class BudgetCharge {
public:
    BudgetCharge(Budget& budget, uint64_t amount) : budget_(&budget), amount_(amount) {}
    BudgetCharge(BudgetCharge&& o) noexcept : budget_(o.budget_), amount_(o.amount_) { o.budget_ = nullptr; }
    BudgetCharge& operator=(BudgetCharge&&) = delete;
    BudgetCharge(const BudgetCharge&) = delete;
    ~BudgetCharge() {
        if (budget_) budget_->release(amount_);
    }

private:
    Budget* budget_;
    uint64_t amount_;
};

// An eighth of the machine's RAM: the default daemon-wide budget.
uint64_t default_buffer_memory();

class BudgetShare {
public:
    // `cap`: the most this connection may hold, whatever the budget has left.
    BudgetShare(Budget& budget, uint64_t cap) : budget_(budget), cap_(cap) {}
    ~BudgetShare() { budget_.release(held_); }
    BudgetShare(const BudgetShare&) = delete;
    BudgetShare& operator=(const BudgetShare&) = delete;

    // True: charged. False: over this connection's cap, or the daemon's
    // budget is spent; the caller waits for one of its requests to end (this
    // share then holds less) and asks again. Never false while nothing is held.
    bool try_charge(uint64_t amount);
    void release(uint64_t amount);
    uint64_t held() const { return held_; }

private:
    Budget& budget_;
    const uint64_t cap_;
    uint64_t held_ = 0;
};

}  // namespace ioplane
