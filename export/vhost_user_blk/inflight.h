// In-flight request tracking for split rings (vhost-user.rst "Inflight I/O
// tracking", VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD).
//
// Requests complete out of order, so after the daemon dies the rings alone
// cannot say which requests were in flight: QEMU restarts a ring at the
// used index, which processes again requests that had completed and skips
// ones that had not (the guest sees a completion twice and breaks the
// queue). With this feature the back end records, in memory that QEMU keeps
// across reconnects, which heads it has taken and which it has completed;
// the next back end resubmits the ones in flight, oldest first.
//
// The area holds one region per queue. A region is the spec's
// QueueRegionSplit (features, version, desc_num, last_batch_head, used_idx,
// then one 16-byte DescStateSplit per descriptor), and regions follow each
// other at the spacing libvhost-user uses, so qemu-storage-daemon and
// ioplane can take over each other's area under a running guest.
//
// The front end is untrusted: recover() checks the region before trusting
// any of it. Every access is atomic (the memory is shared with another
// process), and the order of the stores is the order a back end killed at
// any instant must leave them in.
//
// Thread contract: InflightArea: main thread (create, map; destroyed where
// the last holder lets go). InflightTracker: the queue's context, one
// thread at a time, like the ring it follows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ioplane/core/error.h"
#include "ioplane/core/unique_fd.h"
#include "protocol.h"

namespace ioplane::vhost_user {

// The shared memory of every queue's region, mapped.
class InflightArea {
public:
    // Bytes of one queue's region (libvhost-user's spacing).
    static uint64_t region_size(uint16_t queue_size);
    // EPROTO unless there is at least one queue, of 1 to kMaxQueueSize
    // descriptors.
    static Result<void> check_shape(uint16_t num_queues, uint16_t queue_size);
    // A new zeroed area for GET_INFLIGHT_FD, in a sealed memfd (it cannot
    // shrink under the mapping); `desc` gets its size and `fd` the memfd.
    static Result<void> create(uint16_t num_queues, uint16_t queue_size, InflightDescription& desc, UniqueFd& fd);
    // Maps the area SET_INFLIGHT_FD describes.
    static Result<std::shared_ptr<InflightArea>> map(const InflightDescription& desc, const UniqueFd& fd);
    ~InflightArea();
    InflightArea(const InflightArea&) = delete;
    InflightArea& operator=(const InflightArea&) = delete;

    uint16_t num_queues() const { return num_queues_; }
    uint16_t queue_size() const { return queue_size_; }
    // Queue `index`'s region (index < num_queues()).
    uint8_t* region(uint16_t index) const { return base_ + region_size(queue_size_) * index; }

private:
    InflightArea(uint8_t* base, size_t len, uint16_t num_queues, uint16_t queue_size)
        : base_(base), len_(len), num_queues_(num_queues), queue_size_(queue_size) {}
    uint8_t* base_;
    size_t len_;
    uint16_t num_queues_;
    uint16_t queue_size_;
};

// One queue's region, as its ring uses it.
class InflightTracker {
public:
    // `region` holds `desc_num` descriptor states.
    InflightTracker(uint8_t* region, uint16_t desc_num) : region_(region), desc_num_(desc_num) {}

    struct Recovered {
        bool in_use = false;          // false: a new region, which says nothing
        std::vector<uint16_t> heads;  // in flight, oldest first
    };
    // When a ring is built. A region never used is initialized (the ring
    // starts where the front end says). Otherwise finishes the bookkeeping
    // of the last batch the previous back end published (against the ring's
    // `used_idx` in guest memory) and returns the heads still in flight; the
    // ring resumes at used_idx + their count. Fails (EPROTO) on a region no
    // back end could have left: another descriptor count, heads beyond the
    // ring's `ring_size`, a batch list that leaves the ring.
    Result<Recovered> recover(uint16_t used_idx, uint32_t ring_size);

    // A head was taken from the avail ring.
    void fetched(uint16_t head);
    // `head` is about to be published in the used ring (before used->idx
    // moves), then was published (used->idx is now `used_idx`).
    void publishing(uint16_t head);
    void published(uint16_t head, uint16_t used_idx);

private:
    uint8_t* region_;
    uint16_t desc_num_;
    uint64_t counter_ = 0;  // order of fetching, continued from the region's
};

}  // namespace ioplane::vhost_user
