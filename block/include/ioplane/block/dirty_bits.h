// DirtyBits: the bits of a dirty bitmap (QEMU's HBitmap). One bit per
// `granularity` bytes (a "chunk") of a device `length` bytes long; the last
// chunk may be partial. Ranges are given in bytes; a set touches every chunk
// the range touches, a reset only the chunks it covers whole (the partial
// last chunk counts as covered when the range reaches the end), so that a
// reset never loses a dirty byte outside its range.
//
// Finding the next dirty or clean chunk is O(log64 n): above the bit array
// sit two summary trees, one bit per word of the level below, one saying
// "this word has a set bit", the other "this word is all set". A 1 TiB
// device at 64 KiB is 16M bits (2 MiB) with summaries of 32 KiB each and
// four levels; iteration skips empty (or full) regions a word of 64 words
// at a time, and a set or reset of a few chunks updates a handful of words
// (docs/BENCHMARKS.md, bench/dirty_bits_bench.cc).
//
// The serialised form is qcow2's bitmap data (qcow2.rst, "Bitmaps"): bit k
// of byte n is chunk 8n + k, bits past the last chunk zero. It is the byte
// image of the bit array's 64-bit words stored little-endian, so any byte
// range of it can be read or written on its own (qcow2 stores it cluster by
// cluster).
//
// Thread contract: not thread-safe; its owner decides (a node's bitmaps:
// dirty_bitmap.h). The exception is dirty_chunks()/dirty_bytes(), which
// may be read from any thread while one thread changes the bits: a snapshot.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane::block {

// A run of dirty bytes.
struct DirtyExtent {
    uint64_t offset = 0;
    uint64_t bytes = 0;
    bool operator==(const DirtyExtent&) const = default;
};

// How far the state at an offset (dirty or clean) holds.
struct DirtyRun {
    bool dirty = false;
    uint64_t bytes = 0;
    bool operator==(const DirtyRun&) const = default;
};

class DirtyBits {
public:
    // `granularity`: a power of two.
    DirtyBits(uint64_t length, uint64_t granularity);
    DirtyBits(const DirtyBits& other);
    DirtyBits& operator=(const DirtyBits& other);
    // Takes the bits without copying them (a bitmap loaded from an image
    // into the node's bitmap); `other` is left empty (length 0).
    DirtyBits(DirtyBits&& other) noexcept;
    DirtyBits& operator=(DirtyBits&& other) noexcept;

    // The memory (bytes) the bits of such a device take, summaries included.
    static uint64_t memory_needed(uint64_t length, uint64_t granularity);

    uint64_t length() const { return length_; }
    uint64_t granularity() const { return uint64_t{1} << shift_; }
    uint64_t chunks() const { return bottom_.bits; }

    // Ranges past the length are clipped.
    void set(uint64_t offset, uint64_t bytes);
    void reset(uint64_t offset, uint64_t bytes);
    void set_all();
    void clear();
    // Whether the chunk holding `offset` is dirty (false past the end).
    bool test(uint64_t offset) const;

    // Any thread (see the thread contract): dirty chunks, and dirty bytes
    // as QEMU counts them (chunks times granularity, so a dirty partial
    // last chunk counts whole).
    uint64_t dirty_chunks() const { return dirty_chunks_.load(std::memory_order_relaxed); }
    uint64_t dirty_bytes() const { return dirty_chunks() << shift_; }
    bool empty() const { return dirty_chunks() == 0; }

    // Searches [offset, offset + limit), clipped to the length. The first
    // dirty (clean) byte: `offset` itself or the start of a later chunk.
    std::optional<uint64_t> next_dirty(uint64_t offset, uint64_t limit = UINT64_MAX) const;
    std::optional<uint64_t> next_clean(uint64_t offset, uint64_t limit = UINT64_MAX) const;
    // The first dirty extent in [offset, offset + limit), at most
    // `max_bytes` long, cut at the end of that window (what a mirror or
    // backup job copies next).
    std::optional<DirtyExtent> next_dirty_extent(uint64_t offset, uint64_t limit = UINT64_MAX,
                                                 uint64_t max_bytes = UINT64_MAX) const;
    // Whether `offset` is dirty and for how many bytes that holds within
    // [offset, offset + limit) (what an NBD block-status reply says of a
    // qemu:dirty-bitmap context). `offset` must be below the length.
    DirtyRun run_at(uint64_t offset, uint64_t limit = UINT64_MAX) const;

    // Marks dirty everything `other` says is dirty, over the bytes both
    // cover; granularities may differ (a coarser source dirties whole
    // chunks of its own size, a finer one the chunks holding its bits).
    void merge(const DirtyBits& other);
    // The device is now `length` bytes: chunks past the new end are
    // dropped, new ones are clean. A partial last chunk keeps its bit.
    void resize(uint64_t length);

    // qcow2's bitmap data: serialized_size() bytes.
    uint64_t serialized_size() const { return (bottom_.bits + 7) / 8; }
    // Bytes [pos, pos + out.size()) of it; bytes past its end are zero.
    void serialize(uint64_t pos, std::span<uint8_t> out) const;
    // Replaces bytes [pos, pos + in.size()) of it, which must lie within
    // serialized_size(). Bits past the last chunk are ignored.
    Result<void> deserialize(uint64_t pos, std::span<const uint8_t> in);
    // The same with every byte 0x00 or 0xff (qcow2's unallocated bitmap
    // clusters read as all zeroes or all ones).
    Result<void> deserialize_fill(uint64_t pos, uint64_t bytes, bool ones);

private:
    struct Level {
        std::vector<uint64_t> words;
        uint64_t bits = 0;
    };
    // Which summary tree: bits set where the word below has any bit set,
    // or has all its bits set.
    enum class Tree { any, full };

    // Lays out (empty) summary levels for the bottom's size.
    void shape();
    void forget();
    // Recomputes every summary bit and the count from the bottom.
    void rebuild();
    // Words [a, b] of the bottom changed: their summary bits follow, up
    // until a level where nothing changes.
    void refresh(uint64_t a, uint64_t b);
    void refresh_tree(Tree tree, uint64_t a, uint64_t b);
    void set_chunks(uint64_t first, uint64_t last);
    void reset_chunks(uint64_t first, uint64_t last);
    // The first set (clear) bit at or after `i` at level `l` of a tree
    // (level 0 is the bottom), or kNone.
    uint64_t find_set(size_t l, uint64_t i) const;
    uint64_t find_clear(size_t l, uint64_t i) const;
    const Level& level(Tree tree, size_t l) const { return l == 0 ? bottom_ : (tree == Tree::any ? any_ : full_)[l - 1]; }
    // Words [a, b] of the bottom were rewritten by `write`: count and
    // summaries follow, bits past the end are cleared.
    template <class Fn>
    void rewrite_words(uint64_t a, uint64_t b, Fn write);
    void add_count(int64_t delta) {
        dirty_chunks_.store(uint64_t(int64_t(dirty_chunks_.load(std::memory_order_relaxed)) + delta),
                            std::memory_order_relaxed);
    }

    uint64_t length_;
    unsigned shift_;     // log2(granularity)
    Level bottom_;       // one bit per chunk; bits past the end are zero
    std::vector<Level> any_;   // any_[0] summarises the bottom, any_[k] any_[k - 1]
    std::vector<Level> full_;  // the same shape
    // Written by the one thread that changes the bits, read by any
    // (relaxed: a statistic, ordered with nothing else).
    std::atomic<uint64_t> dirty_chunks_{0};
};

}  // namespace ioplane::block
