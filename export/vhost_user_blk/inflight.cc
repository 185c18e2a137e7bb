#include "inflight.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <string>

#include "split_ring.h"  // kMaxQueueSize

namespace ioplane::vhost_user {

namespace {

constexpr uint16_t kVersion1 = 1;
constexpr uint64_t kRegionAlign = 64;

// Byte offsets of QueueRegionSplit's header fields and of DescStateSplit's.
namespace at {
constexpr size_t features = 0, version = 8, desc_num = 10, last_batch_head = 12, used_idx = 14, descs = 16;
constexpr size_t desc_size = 16, desc_inflight = 0, desc_next = 6, desc_counter = 8;
}  // namespace at

template <class T>
T load(const uint8_t* p) {
    return std::atomic_ref(*reinterpret_cast<T*>(const_cast<uint8_t*>(p))).load(std::memory_order_acquire);
}
// Release: a back end killed after this store has made every earlier one.
template <class T>
void store(uint8_t* p, T v) {
    std::atomic_ref(*reinterpret_cast<T*>(p)).store(v, std::memory_order_release);
}

uint8_t* desc(uint8_t* region, uint16_t i) { return region + at::descs + at::desc_size * i; }

}  // namespace

uint64_t InflightArea::region_size(uint16_t queue_size) {
    // libvhost-user's formula; it leaves room for the 16-byte header (16 *
    // queue_size + 2 rounded up to 64 is always at least 16 more).
    return (at::desc_size * queue_size + sizeof(uint16_t) + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
}

Result<void> InflightArea::check_shape(uint16_t num_queues, uint16_t queue_size) {
    if (num_queues == 0 || queue_size == 0 || queue_size > kMaxQueueSize)
        return fail(EPROTO, "inflight area for " + std::to_string(num_queues) + " queues of " +
                                std::to_string(queue_size) + " descriptors");
    return {};
}

Result<void> InflightArea::create(uint16_t num_queues, uint16_t queue_size, InflightDescription& desc, UniqueFd& fd) {
    const uint64_t size = region_size(queue_size) * num_queues;
    UniqueFd f(memfd_create("ioplane-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!f) return fail_errno("memfd_create");
    if (ftruncate(f.get(), off_t(size)) != 0) return fail_errno("ftruncate of the inflight area");
    if (fcntl(f.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
        return fail_errno("sealing the inflight area");
    desc = {.mmap_size = size, .mmap_offset = 0, .num_queues = num_queues, .queue_size = queue_size};
    fd = std::move(f);
    return {};
}

Result<std::shared_ptr<InflightArea>> InflightArea::map(const InflightDescription& d, const UniqueFd& fd) {
    if (auto r = check_shape(d.num_queues, d.queue_size); !r) return std::unexpected(r.error());
    const uint64_t need = region_size(d.queue_size) * d.num_queues;
    if (d.mmap_size < need)
        return fail(EPROTO, "inflight area of " + std::to_string(d.mmap_size) + " bytes (" + std::to_string(need) +
                                " needed)");
    const long page = sysconf(_SC_PAGESIZE);
    uint64_t end;
    if (d.mmap_offset % uint64_t(page) != 0 || __builtin_add_overflow(d.mmap_offset, d.mmap_size, &end))
        return fail(EPROTO, "inflight area at offset " + std::to_string(d.mmap_offset));
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return fail_errno("fstat of the inflight area");
    // A mapping past the end of a file faults (SIGBUS) when touched; only
    // the regions are mapped, but a description the file cannot hold is wrong.
    if (!S_ISREG(st.st_mode) || uint64_t(st.st_size) < end)
        return fail(EPROTO, "inflight area reaches past the end of its file");
    void* p = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), off_t(d.mmap_offset));
    if (p == MAP_FAILED) return fail_errno("mmap of the inflight area");
    return std::shared_ptr<InflightArea>(new InflightArea(static_cast<uint8_t*>(p), need, d.num_queues, d.queue_size));
}

InflightArea::~InflightArea() { munmap(base_, len_); }

Result<InflightTracker::Recovered> InflightTracker::recover(uint16_t used_idx, uint32_t ring_size) {
    if (ring_size > desc_num_)
        return fail(EPROTO, "ring of " + std::to_string(ring_size) + " descriptors, inflight region for " +
                                std::to_string(desc_num_));
    const uint16_t version = load<uint16_t>(region_ + at::version);
    if (version == 0) {
        // Never used (a new area after a device reset): nothing in flight.
        store<uint64_t>(region_ + at::features, 0);
        store<uint16_t>(region_ + at::desc_num, desc_num_);
        store<uint16_t>(region_ + at::last_batch_head, 0);
        store<uint16_t>(region_ + at::used_idx, used_idx);
        for (uint16_t i = 0; i < desc_num_; i++) {
            store<uint8_t>(desc(region_, i) + at::desc_inflight, 0);
            store<uint64_t>(desc(region_, i) + at::desc_counter, 0);
        }
        store<uint16_t>(region_ + at::version, kVersion1);
        counter_ = 0;
        return Recovered{};
    }
    if (version != kVersion1) return fail(EPROTO, "inflight region version " + std::to_string(version));
    if (const uint16_t n = load<uint16_t>(region_ + at::desc_num); n != desc_num_)
        return fail(EPROTO, "inflight region for " + std::to_string(n) + " descriptors (" +
                                std::to_string(desc_num_) + " expected)");
    // Killed between moving used->idx and clearing the batch's flags: the
    // batch list says which heads that was.
    const uint16_t recorded = load<uint16_t>(region_ + at::used_idx);
    if (recorded != used_idx) {
        const uint16_t batch = uint16_t(used_idx - recorded);
        if (batch > ring_size)
            return fail(EPROTO, "used index " + std::to_string(used_idx) + " is more than a ring ahead of the " +
                                    "inflight region's " + std::to_string(recorded));
        uint16_t head = load<uint16_t>(region_ + at::last_batch_head);
        for (uint16_t k = 0; k < batch; k++) {
            if (head >= ring_size) return fail(EPROTO, "inflight batch list leaves the ring");
            store<uint8_t>(desc(region_, head) + at::desc_inflight, 0);
            head = load<uint16_t>(desc(region_, head) + at::desc_next);
        }
        store<uint16_t>(region_ + at::used_idx, used_idx);
    }
    struct Entry {
        uint64_t counter;
        uint16_t head;
    };
    std::vector<Entry> in_flight;
    for (uint16_t i = 0; i < desc_num_; i++) {
        const uint8_t flag = load<uint8_t>(desc(region_, i) + at::desc_inflight);
        if (flag == 0) continue;
        if (flag != 1 || i >= ring_size)
            return fail(EPROTO, "inflight region marks descriptor " + std::to_string(i) + " with " +
                                    std::to_string(flag) + " (ring of " + std::to_string(ring_size) + ")");
        in_flight.push_back({load<uint64_t>(desc(region_, i) + at::desc_counter), i});
    }
    std::stable_sort(in_flight.begin(), in_flight.end(),
                     [](const Entry& a, const Entry& b) { return a.counter < b.counter; });
    Recovered out{.in_use = true, .heads = {}};
    counter_ = 0;
    for (const Entry& e : in_flight) {
        out.heads.push_back(e.head);
        counter_ = std::max(counter_, e.counter + 1);
    }
    return out;
}

void InflightTracker::fetched(uint16_t head) {
    store<uint64_t>(desc(region_, head) + at::desc_counter, counter_++);
    store<uint8_t>(desc(region_, head) + at::desc_inflight, 1);
}

void InflightTracker::publishing(uint16_t head) {
    store<uint16_t>(desc(region_, head) + at::desc_next, load<uint16_t>(region_ + at::last_batch_head));
    store<uint16_t>(region_ + at::last_batch_head, head);
}

void InflightTracker::published(uint16_t head, uint16_t used_idx) {
    store<uint8_t>(desc(region_, head) + at::desc_inflight, 0);
    store<uint16_t>(region_ + at::used_idx, used_idx);
}

}  // namespace ioplane::vhost_user
