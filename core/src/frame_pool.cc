#include "ioplane/core/detail/frame_pool.h"

#include <new>

#include "ioplane/core/detail/free_lists.h"

namespace ioplane::detail {
namespace {

constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 32;  // frames up to 2 KiB are cached
constexpr std::size_t kMaxPerClass = 256;

void release(void* p) noexcept { ::operator delete(p); }

using FrameCache = FreeLists<kClasses, release>;
thread_local FrameCache t_cache;

// Class c holds frames of (c * kGranule, (c + 1) * kGranule] bytes, allocated
// at the class's full size so that any frame of the class fits.
std::size_t size_class(std::size_t size) { return (size - 1) / kGranule; }

}  // namespace

void* alloc_frame(std::size_t size) {
    const std::size_t cls = size_class(size);
    if (!kRecycleFreedMemory || cls >= kClasses || FrameCache::gone) return ::operator new(size);
    if (void* p = t_cache.take(cls)) return p;
    return ::operator new((cls + 1) * kGranule);
}

void free_frame(void* p, std::size_t size) noexcept {
    const std::size_t cls = size_class(size);
    if (kRecycleFreedMemory && cls < kClasses && !FrameCache::gone && t_cache.give(cls, p, kMaxPerClass)) return;
    ::operator delete(p);
}

}  // namespace ioplane::detail
