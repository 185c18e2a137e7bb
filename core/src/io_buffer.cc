#include "ioplane/core/io_buffer.h"

#include <cstdlib>

#include "ioplane/core/detail/free_lists.h"

namespace ioplane {
namespace {

constexpr std::size_t kPage = 4096;
constexpr int kClasses = 9;                     // 4 KiB .. 1 MiB
constexpr std::size_t kCacheBytes = 16u << 20;  // per thread and class

std::size_t class_size(int cls) { return kPage << cls; }

void release(void* p) noexcept { std::free(p); }

using BufferCache = detail::FreeLists<kClasses, release>;
thread_local BufferCache t_cache;

}  // namespace

IoBuffer IoBuffer::allocate(std::size_t len) {
    int cls = 0;
    while (cls < kClasses && class_size(cls) < len) cls++;
    if (cls == kClasses) {  // large: straight from the heap
        const std::size_t size = (len + kPage - 1) & ~(kPage - 1);
        return IoBuffer(static_cast<char*>(std::aligned_alloc(kPage, size)), -1);
    }
    if (detail::kRecycleFreedMemory && !BufferCache::gone) {
        if (void* p = t_cache.take(size_t(cls))) return IoBuffer(static_cast<char*>(p), cls);
    }
    return IoBuffer(static_cast<char*>(std::aligned_alloc(kPage, class_size(cls))), cls);
}

void IoBuffer::release() noexcept {
    char* p = std::exchange(data_, nullptr);
    if (p == nullptr) return;
    if (detail::kRecycleFreedMemory && cls_ >= 0 && !BufferCache::gone &&
        t_cache.give(size_t(cls_), p, kCacheBytes / class_size(cls_)))
        return;
    std::free(p);
}

}  // namespace ioplane
