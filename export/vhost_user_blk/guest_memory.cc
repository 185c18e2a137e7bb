#include "guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

namespace ioplane::vhost_user {

namespace {

// [addr, addr+len) inside [base, base+size), without overflow.
bool contains(uint64_t base, uint64_t size, uint64_t addr, uint64_t len) {
    return addr >= base && addr - base <= size && len <= size - (addr - base);
}

}  // namespace

Result<std::shared_ptr<const GuestMemory>> GuestMemory::map(std::span<const MemRegion> regions,
                                                            std::span<UniqueFd> fds) {
    if (regions.size() != fds.size()) return fail(EPROTO, "memory regions and fds do not match");
    std::shared_ptr<GuestMemory> mem(new GuestMemory);
    for (size_t i = 0; i < regions.size(); i++) {
        const MemRegion& r = regions[i];
        const std::string name = "memory region " + std::to_string(i);
        uint64_t end;
        if (r.size == 0) return fail(EPROTO, name + " is empty");
        if (__builtin_add_overflow(r.guest_addr, r.size, &end) || __builtin_add_overflow(r.user_addr, r.size, &end) ||
            __builtin_add_overflow(r.mmap_offset, r.size, &end))
            return fail(EPROTO, name + ": addresses wrap around");
        for (const Region& other : mem->regions_) {
            const MemRegion& o = other.desc;
            if (r.guest_addr < o.guest_addr + o.size && o.guest_addr < r.guest_addr + r.size)
                return fail(EPROTO, name + " overlaps another in guest addresses");
        }
        struct stat st;
        if (fstat(fds[i].get(), &st) != 0) return fail_errno(name + ": fstat");
        // A mapping past the end of a file faults (SIGBUS) when touched.
        if (S_ISREG(st.st_mode) && uint64_t(st.st_size) < r.mmap_offset + r.size)
            return fail(EPROTO, name + " reaches past the end of its file (" + std::to_string(st.st_size) + " bytes)");
        if (r.mmap_offset + r.size > SIZE_MAX / 2) return fail(EPROTO, name + " is too large");
        const size_t len = r.mmap_offset + r.size;
        void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i].get(), 0);
        if (p == MAP_FAILED) return fail_errno(name + ": mmap of " + std::to_string(len) + " bytes");
        mem->regions_.push_back({r, static_cast<uint8_t*>(p) + r.mmap_offset, p, len});
    }
    return std::shared_ptr<const GuestMemory>(std::move(mem));
}

GuestMemory::~GuestMemory() {
    for (const Region& r : regions_) munmap(r.mapping, r.mapping_len);
}

const GuestMemory::Region* GuestMemory::find_gpa(uint64_t gpa) const {
    for (const Region& r : regions_)
        if (gpa >= r.desc.guest_addr && gpa - r.desc.guest_addr < r.desc.size) return &r;
    return nullptr;
}

void* GuestMemory::gpa_to_host(uint64_t gpa, uint64_t len) const {
    const Region* r = find_gpa(gpa);
    if (!r || !contains(r->desc.guest_addr, r->desc.size, gpa, len)) return nullptr;
    return r->host + (gpa - r->desc.guest_addr);
}

void* GuestMemory::uaddr_to_host(uint64_t uaddr, uint64_t len) const {
    for (const Region& r : regions_)
        if (contains(r.desc.user_addr, r.desc.size, uaddr, len)) return r.host + (uaddr - r.desc.user_addr);
    return nullptr;
}

bool GuestMemory::gpa_to_iovecs(uint64_t gpa, uint64_t len, std::vector<iovec>& out, size_t max_iovecs) const {
    while (len > 0) {
        const Region* r = find_gpa(gpa);
        if (!r || out.size() >= max_iovecs) return false;
        const uint64_t chunk = std::min(len, r->desc.size - (gpa - r->desc.guest_addr));
        out.push_back({r->host + (gpa - r->desc.guest_addr), size_t(chunk)});
        gpa += chunk;  // cannot wrap: chunk ends inside a region that does not wrap
        len -= chunk;
    }
    return true;
}

}  // namespace ioplane::vhost_user
