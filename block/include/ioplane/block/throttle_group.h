// Throttle groups (QEMU's throttle-group object): I/O limits shared by the
// `throttle` filter nodes that name the group, in whatever contexts they
// run. Requests of each direction go one at a time, the members taking
// turns and each member's requests in arrival order; a request waits until
// the group's leaky buckets (throttle.txt) let it go.
//
// Thread contract: the registry and set_limits/limits_json in the main
// thread; co_throttle in a coroutine in the member node's context.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ioplane/core/co_queue.h"
#include "ioplane/core/error.h"
#include "ioplane/core/keyval.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

class BlockNode;
class ThrottleState;

class ThrottleGroup {
public:
    explicit ThrottleGroup(std::string id);
    ~ThrottleGroup();
    ThrottleGroup(const ThrottleGroup&) = delete;
    ThrottleGroup& operator=(const ThrottleGroup&) = delete;

    const std::string& id() const { return id_; }
    // Main thread: reads QEMU's `limits` members (iops-total, bps-read-max,
    // ...) over the current limits, as qom-set does; validated, and applied
    // only if valid.
    Result<void> set_limits(OptionReader& limits);
    // Main thread: the limits as QMP shows them (qom-get).
    nlohmann::json limits_json() const;

    // In `member`'s context: waits until a request of `bytes` in this
    // direction may go, then charges it. A request of a drained member goes
    // at once (QEMU: drains are not throttled), so drains end promptly.
    Task<void> co_throttle(bool write, uint64_t bytes, const BlockNode& member);

private:
    // Requests of one direction go one at a time: the one being served waits
    // for the buckets; the others wait in their member's queue, and the
    // members take turns (QEMU's round robin over a group's members), so
    // that a member with many requests in flight cannot starve one with few.
    struct Direction {
        uint64_t next_ticket = 0;                                   // guarded by mu_
        bool busy = false;                                          // a request is being served; mu_
        std::map<const BlockNode*, std::deque<uint64_t>> waiting;  // tickets by member, in order; mu_
        std::atomic<uint64_t> serving{UINT64_MAX};                  // the ticket that may go now
        CoQueue turn;                                               // requests waiting for their ticket
    };
    Task<void> co_wait_for_turn(Direction& d, uint64_t ticket);
    // Under mu_: the ticket served after `last`'s request: the first waiting
    // one of the next member (by the members' order, wrapping) that has one.
    static std::optional<uint64_t> next_turn(Direction& d, const BlockNode* last);

    const std::string id_;
    mutable std::mutex mu_;
    std::unique_ptr<ThrottleState> state_;  // guarded by mu_
    Direction dirs_[2];                     // read, write
};

// The groups of a daemon by id (--object throttle-group, object-add/del).
class ThrottleGroups {
public:
    // Main thread: a new group `id` with the `limits` members of `options`.
    Result<void> add(const std::string& id, OptionReader& options);
    // Main thread: refused while a throttle node uses the group.
    Result<void> remove(const std::string& id);
    std::shared_ptr<ThrottleGroup> find(const std::string& id) const;

private:
    std::map<std::string, std::shared_ptr<ThrottleGroup>> groups_;
};

}  // namespace ioplane::block
