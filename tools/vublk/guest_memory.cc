#include "guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ioplane::vublk {

namespace {

constexpr uint64_t kPage = 4096;
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

std::expected<GuestMemory, std::string> GuestMemory::create(uint64_t total, unsigned regions) {
    if (regions == 0 || total == 0) return std::unexpected("guest memory: no regions or no size");
    GuestMemory mem;
    const uint64_t each = align_up((total + regions - 1) / regions, kPage);
    uint64_t gpa = kGpaBase;
    for (unsigned i = 0; i < regions; i++) {
        GuestRegion r;
        r.fd = ::memfd_create("ioplane-vublk-guest", MFD_CLOEXEC);
        if (r.fd < 0) return std::unexpected(std::string("memfd_create: ") + std::strerror(errno));
        mem.regions_.push_back(r);  // closed by the destructor from here on
        if (::ftruncate(r.fd, off_t(each)) != 0)
            return std::unexpected(std::string("guest memory: ftruncate: ") + std::strerror(errno));
        // MAP_POPULATE: the pages exist before the measured window.
        void* p = ::mmap(nullptr, each, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r.fd, 0);
        if (p == MAP_FAILED) return std::unexpected(std::string("guest memory: mmap: ") + std::strerror(errno));
        auto& back = mem.regions_.back();
        back.host = static_cast<uint8_t*>(p);
        back.size = each;
        back.gpa = gpa;
        gpa = align_up(gpa + each, 2 << 20) + kGpaHole;
    }
    return mem;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::move(other.regions_)), next_(other.next_) {
    other.regions_.clear();
}

GuestMemory::~GuestMemory() {
    for (auto& r : regions_) {
        if (r.host) ::munmap(r.host, r.size);
        if (r.fd >= 0) ::close(r.fd);
    }
}

std::expected<GuestBuffer, std::string> GuestMemory::allocate(uint64_t size, uint64_t align) {
    for (size_t k = 0; k < regions_.size(); k++) {
        GuestRegion& r = regions_[(next_ + k) % regions_.size()];
        // Aligned in GPA terms and in host terms: both bases are page aligned.
        const uint64_t at = align_up(r.used, align);
        if (at + size > r.size) continue;
        r.used = at + size;
        next_ = (next_ + k + 1) % regions_.size();
        std::memset(r.host + at, 0, size);
        return GuestBuffer{r.host + at, r.gpa + at, size};
    }
    return std::unexpected("guest memory exhausted allocating " + std::to_string(size) +
                           " bytes: give a larger --mem-size");
}

std::optional<uint64_t> GuestMemory::gpa_of(const void* p) const {
    const auto* b = static_cast<const uint8_t*>(p);
    for (const auto& r : regions_)
        if (b >= r.host && b < r.host + r.size) return r.gpa + uint64_t(b - r.host);
    return std::nullopt;
}

uint8_t* GuestMemory::host_of(uint64_t gpa, uint64_t len) const {
    for (const auto& r : regions_)
        if (gpa >= r.gpa && gpa - r.gpa <= r.size && len <= r.size - (gpa - r.gpa)) return r.host + (gpa - r.gpa);
    return nullptr;
}

}  // namespace ioplane::vublk
