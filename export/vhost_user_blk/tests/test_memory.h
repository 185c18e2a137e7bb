// Test helpers: fake guest memory (a memfd, mapped through GuestMemory as
// the daemon maps a front end's region, and mapped a second time for the
// test, which plays the driver) and a split ring laid out inside it.
//
// The guest-physical base (kGpa) and the front end's user address (kUaddr)
// differ on purpose: rings are located by user address, buffers by
// guest-physical address, and a mix-up between the two then misses.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <vector>

#include "guest_memory.h"
#include "split_ring.h"

namespace ioplane::vhost_user::test {

// Descriptor flags and ring flags (virtio-split-ring.tex).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kUsedFNoNotify = 1;
constexpr uint16_t kAvailFNoInterrupt = 1;

// A memfd of `size` bytes with our own shared mapping of it.
class Memfd {
public:
    explicit Memfd(size_t size) : size_(size) {
        fd_ = UniqueFd(memfd_create("ioplane-test-guest", MFD_CLOEXEC));
        EXPECT_TRUE(fd_) << "memfd_create: " << strerror(errno);
        EXPECT_EQ(ftruncate(fd_.get(), off_t(size)), 0);
        void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
        EXPECT_NE(p, MAP_FAILED);
        data_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    }
    ~Memfd() {
        if (data_) munmap(data_, size_);
    }
    Memfd(const Memfd&) = delete;
    Memfd& operator=(const Memfd&) = delete;

    // A new fd for the same file: GuestMemory::map borrows the fds it is
    // given, and the session closes them after mapping.
    UniqueFd dup() const { return UniqueFd(::dup(fd_.get())); }
    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    UniqueFd fd_;
    uint8_t* data_ = nullptr;
    size_t size_;
};

// Maps `regions`, each backed by a dup of the matching memfd.
inline Result<std::shared_ptr<const GuestMemory>> map_regions(std::vector<MemRegion> regions,
                                                              std::vector<const Memfd*> files) {
    std::vector<UniqueFd> fds;
    for (const Memfd* f : files) fds.push_back(f->dup());
    return GuestMemory::map(regions, fds);
}

// One region of guest memory: guest-physical [kGpa, kGpa+size), front-end
// user addresses [kUaddr, kUaddr+size), file offset 0.
class FakeGuest {
public:
    static constexpr uint64_t kGpa = 0x100000;
    static constexpr uint64_t kUaddr = 0x7f0000000000;

    explicit FakeGuest(size_t size = 1 << 20) : file_(size) {
        auto m = map_regions({{.guest_addr = kGpa, .size = size, .user_addr = kUaddr, .mmap_offset = 0}}, {&file_});
        EXPECT_TRUE(m) << m.error().message;
        if (m) mem_ = *m;
    }

    const GuestMemory& mem() const { return *mem_; }
    size_t size() const { return file_.size(); }
    uint64_t gpa(size_t offset) const { return kGpa + offset; }
    uint64_t uaddr(size_t offset) const { return kUaddr + offset; }
    // The driver's view (our own mapping).
    uint8_t* bytes(size_t offset) const { return file_.data() + offset; }
    // Where the daemon's mapping puts guest-physical `gpa` (what iovecs hold).
    const void* daemon_ptr(uint64_t gpa) const { return mem_->gpa_to_host(gpa, 1); }

    template <class T>
    void store(size_t offset, T v) {
        std::memcpy(bytes(offset), &v, sizeof v);
    }
    template <class T>
    T load(size_t offset) const {
        T v;
        std::memcpy(&v, bytes(offset), sizeof v);
        return v;
    }

private:
    Memfd file_;
    std::shared_ptr<const GuestMemory> mem_;
};

// A split ring of `num` entries in a FakeGuest, driven from the driver's
// side: descriptor table at `base`, available ring right after it, used ring
// at the next 4 KiB boundary (the legacy layout; only 4-byte alignment is
// required).
class DriverRing {
public:
    DriverRing(FakeGuest& guest, uint32_t num, size_t base = 0)
        : g_(guest),
          num_(num),
          desc_(base),
          avail_(base + 16 * size_t(num)),
          used_((avail_ + 6 + 2 * size_t(num) + 4095) & ~size_t(4095)) {}

    VringAddr addr() const {
        return {.index = 0, .flags = 0, .desc = g_.uaddr(desc_), .used = g_.uaddr(used_), .avail = g_.uaddr(avail_)};
    }
    // Where the ring ends (the first byte after the used ring's avail_event).
    size_t end() const { return used_ + 6 + 8 * size_t(num_); }
    uint32_t num() const { return num_; }

    // Writes descriptor `i` of the ring's table.
    void set_desc(uint32_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next = 0) {
        write_desc(g_, desc_, i, gpa, len, flags, next);
    }
    // Writes descriptor `i` of a table at `table` (an indirect table).
    static void write_desc(FakeGuest& g, size_t table, uint32_t i, uint64_t gpa, uint32_t len, uint16_t flags,
                           uint16_t next = 0) {
        const size_t o = table + 16 * size_t(i);
        g.store<uint64_t>(o, gpa);
        g.store<uint32_t>(o + 8, len);
        g.store<uint16_t>(o + 12, flags);
        g.store<uint16_t>(o + 14, next);
    }

    // Puts `head` in the next available slot and publishes it.
    void make_available(uint16_t head) {
        const uint16_t idx = avail_idx();
        g_.store<uint16_t>(avail_ + 4 + 2 * (idx % num_), head);
        set_avail_idx(uint16_t(idx + 1));
    }
    uint16_t avail_idx() const { return g_.load<uint16_t>(avail_ + 2); }
    void set_avail_idx(uint16_t v) { g_.store<uint16_t>(avail_ + 2, v); }
    void set_avail_flags(uint16_t v) { g_.store<uint16_t>(avail_, v); }
    void set_used_event(uint16_t v) { g_.store<uint16_t>(avail_ + 4 + 2 * size_t(num_), v); }

    uint16_t used_flags() const { return g_.load<uint16_t>(used_); }
    uint16_t used_idx() const { return g_.load<uint16_t>(used_ + 2); }
    void set_used_idx(uint16_t v) { g_.store<uint16_t>(used_ + 2, v); }
    uint32_t used_id(uint16_t idx) const { return g_.load<uint32_t>(used_ + 4 + 8 * (idx % num_)); }
    uint32_t used_len(uint16_t idx) const { return g_.load<uint32_t>(used_ + 8 + 8 * (idx % num_)); }
    uint16_t avail_event() const { return g_.load<uint16_t>(used_ + 4 + 8 * size_t(num_)); }
    void set_avail_event(uint16_t v) { g_.store<uint16_t>(used_ + 4 + 8 * size_t(num_), v); }

private:
    FakeGuest& g_;
    uint32_t num_;
    size_t desc_, avail_, used_;
};

}  // namespace ioplane::vhost_user::test

namespace ioplane::vhost_user {
// Readable gtest messages for pop() results.
inline void PrintTo(SplitRing::Pop p, std::ostream* os) {
    *os << (p == SplitRing::Pop::ok ? "ok" : p == SplitRing::Pop::empty ? "empty" : "broken");
}
}  // namespace ioplane::vhost_user
