// Recycling of coroutine frames. A request served through the block layer
// creates and frees half a dozen Task frames; a small per-thread cache of
// freed frames, by size class, makes that cheaper than malloc and free (and
// keeps the frames of a busy thread warm in its cache).
//
// Frames may be freed by another thread than the one that allocated them (a
// coroutine that moved between contexts): each thread caches what it frees,
// up to a bound, and returns the rest to the heap. ASan builds bypass the
// cache so that use-after-free of a frame is still caught.
//
// Thread contract: any thread; each thread's cache is its own.
#pragma once

#include <cstddef>

namespace ioplane::detail {

void* alloc_frame(std::size_t size);
void free_frame(void* p, std::size_t size) noexcept;

}  // namespace ioplane::detail
