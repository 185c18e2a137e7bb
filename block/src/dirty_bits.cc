#include "ioplane/block/dirty_bits.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "ioplane/core/thread_contract.h"

namespace ioplane::block {
namespace {

constexpr uint64_t kAll = ~uint64_t{0};
constexpr uint64_t kNone = UINT64_MAX;

uint64_t words_for(uint64_t bits) { return bits / 64 + (bits % 64 != 0); }

// Bits lo..hi (inclusive, 0 <= lo <= hi <= 63) of a word.
uint64_t span_mask(unsigned lo, unsigned hi) { return (kAll >> (63 - hi)) & (kAll << lo); }

// The bits of word `w` that lie below `bits` (the others are padding).
uint64_t valid_mask(uint64_t bits, uint64_t w) {
    const uint64_t rest = bits - w * 64;
    return rest >= 64 ? kAll : (uint64_t{1} << rest) - 1;
}

uint64_t chunks_for(uint64_t length, unsigned shift) {
    return (length >> shift) + ((length & ((uint64_t{1} << shift) - 1)) != 0);
}

// The last byte of [offset, offset + bytes) clipped to `length` (offset <
// length, bytes > 0), without overflowing.
uint64_t last_byte(uint64_t offset, uint64_t bytes, uint64_t length) {
    return bytes > length - offset ? length - 1 : offset + bytes - 1;
}

// The end of [offset, offset + limit) clipped to `length` (offset < length).
uint64_t window_end(uint64_t offset, uint64_t limit, uint64_t length) {
    return limit > length - offset ? length : offset + limit;
}

int64_t popcount_words(const uint64_t* w, uint64_t n) {
    int64_t c = 0;
    for (uint64_t i = 0; i < n; i++) c += std::popcount(w[i]);
    return c;
}

}  // namespace

DirtyBits::DirtyBits(uint64_t length, uint64_t granularity)
    : length_(length), shift_(unsigned(std::countr_zero(granularity))) {
    IOPLANE_ASSERT(std::has_single_bit(granularity));
    bottom_.bits = chunks_for(length, shift_);
    bottom_.words.assign(words_for(bottom_.bits), 0);
    shape();
}

DirtyBits::DirtyBits(const DirtyBits& other)
    : length_(other.length_),
      shift_(other.shift_),
      bottom_(other.bottom_),
      any_(other.any_),
      full_(other.full_),
      dirty_chunks_(other.dirty_chunks()) {}

DirtyBits& DirtyBits::operator=(const DirtyBits& other) {
    if (this == &other) return *this;
    length_ = other.length_;
    shift_ = other.shift_;
    bottom_ = other.bottom_;
    any_ = other.any_;
    full_ = other.full_;
    dirty_chunks_.store(other.dirty_chunks(), std::memory_order_relaxed);
    return *this;
}

DirtyBits::DirtyBits(DirtyBits&& other) noexcept
    : length_(other.length_),
      shift_(other.shift_),
      bottom_(std::move(other.bottom_)),
      any_(std::move(other.any_)),
      full_(std::move(other.full_)),
      dirty_chunks_(other.dirty_chunks()) {
    other.forget();
}

DirtyBits& DirtyBits::operator=(DirtyBits&& other) noexcept {
    if (this == &other) return *this;
    length_ = other.length_;
    shift_ = other.shift_;
    bottom_ = std::move(other.bottom_);
    any_ = std::move(other.any_);
    full_ = std::move(other.full_);
    dirty_chunks_.store(other.dirty_chunks(), std::memory_order_relaxed);
    other.forget();
    return *this;
}

// What a moved-from object holds: no chunks, consistent summaries.
void DirtyBits::forget() {
    length_ = 0;
    bottom_ = Level{};
    shape();
    dirty_chunks_.store(0, std::memory_order_relaxed);
}

uint64_t DirtyBits::memory_needed(uint64_t length, uint64_t granularity) {
    uint64_t words = words_for(chunks_for(length, unsigned(std::countr_zero(granularity))));
    uint64_t total = words;
    while (words > 1) {
        words = words_for(words);
        total += 2 * words;  // both trees
    }
    return total * sizeof(uint64_t);
}

// Levels are added until one fits in a word: for 2^31 chunks (1 TiB at
// 512 B) that is five summary levels per tree.
void DirtyBits::shape() {
    any_.clear();
    full_.clear();
    for (uint64_t n = bottom_.words.size(); n > 1; n = words_for(n)) {
        any_.push_back(Level{std::vector<uint64_t>(words_for(n), 0), n});
        full_.push_back(Level{std::vector<uint64_t>(words_for(n), 0), n});
    }
}

void DirtyBits::rebuild() {
    for (auto* tree : {&any_, &full_})
        for (Level& l : *tree) std::fill(l.words.begin(), l.words.end(), 0);
    dirty_chunks_.store(uint64_t(popcount_words(bottom_.words.data(), bottom_.words.size())),
                        std::memory_order_relaxed);
    if (!bottom_.words.empty()) {
        // Every summary bit computed afresh: mark them all as changed.
        for (Tree t : {Tree::any, Tree::full}) {
            uint64_t a = 0, b = bottom_.words.size() - 1;
            auto& tree = t == Tree::any ? any_ : full_;
            for (size_t l = 0; l < tree.size(); l++) {
                const Level& below = level(t, l);
                Level& up = tree[l];
                for (uint64_t j = a; j <= b; j++) {
                    const uint64_t w = below.words[j];
                    const bool v = t == Tree::any ? w != 0 : (w | ~valid_mask(below.bits, j)) == kAll;
                    if (v) up.words[j / 64] |= uint64_t{1} << (j % 64);
                }
                a /= 64;
                b /= 64;
            }
        }
    }
}

void DirtyBits::refresh(uint64_t a, uint64_t b) {
    refresh_tree(Tree::any, a, b);
    refresh_tree(Tree::full, a, b);
}

// A level's bits only depend on the words below them, so once a level
// comes out unchanged the ones above it are too.
void DirtyBits::refresh_tree(Tree t, uint64_t a, uint64_t b) {
    auto& tree = t == Tree::any ? any_ : full_;
    for (size_t l = 0; l < tree.size(); l++) {
        const Level& below = level(t, l);
        Level& up = tree[l];
        bool changed = false;
        for (uint64_t j = a; j <= b; j++) {
            const uint64_t w = below.words[j];
            const bool v = t == Tree::any ? w != 0 : (w | ~valid_mask(below.bits, j)) == kAll;
            uint64_t& s = up.words[j / 64];
            const uint64_t bit = uint64_t{1} << (j % 64);
            if (bool(s & bit) != v) {
                s ^= bit;
                changed = true;
            }
        }
        if (!changed) return;
        a /= 64;
        b /= 64;
    }
}

void DirtyBits::set_chunks(uint64_t first, uint64_t last) {
    uint64_t* w = bottom_.words.data();
    const uint64_t wa = first / 64, wb = last / 64;
    int64_t added = 0;
    auto or_word = [&](uint64_t i, uint64_t m) {
        added += std::popcount(m & ~w[i]);
        w[i] |= m;
    };
    if (wa == wb) {
        or_word(wa, span_mask(unsigned(first % 64), unsigned(last % 64)));
    } else {
        or_word(wa, kAll << (first % 64));
        for (uint64_t i = wa + 1; i < wb; i++) or_word(i, kAll);
        or_word(wb, kAll >> (63 - last % 64));
    }
    if (added == 0) return;  // all dirty already: the common repeated write
    add_count(added);
    refresh(wa, wb);
}

void DirtyBits::reset_chunks(uint64_t first, uint64_t last) {
    uint64_t* w = bottom_.words.data();
    const uint64_t wa = first / 64, wb = last / 64;
    int64_t removed = 0;
    auto clear_word = [&](uint64_t i, uint64_t m) {
        removed += std::popcount(m & w[i]);
        w[i] &= ~m;
    };
    if (wa == wb) {
        clear_word(wa, span_mask(unsigned(first % 64), unsigned(last % 64)));
    } else {
        clear_word(wa, kAll << (first % 64));
        for (uint64_t i = wa + 1; i < wb; i++) clear_word(i, kAll);
        clear_word(wb, kAll >> (63 - last % 64));
    }
    if (removed == 0) return;
    add_count(-removed);
    refresh(wa, wb);
}

void DirtyBits::set(uint64_t offset, uint64_t bytes) {
    if (bytes == 0 || offset >= length_) return;
    set_chunks(offset >> shift_, last_byte(offset, bytes, length_) >> shift_);
}

void DirtyBits::reset(uint64_t offset, uint64_t bytes) {
    if (bytes == 0 || offset >= length_) return;
    const uint64_t g = granularity();
    const uint64_t end = last_byte(offset, bytes, length_) + 1;
    const uint64_t first = (offset >> shift_) + (offset % g != 0);
    // A chunk ending at or past the end of the range is whole only if the
    // range ends at a chunk boundary or at the end of the device.
    const uint64_t stop = end == length_ ? bottom_.bits : end >> shift_;  // chunks [first, stop)
    if (first < stop) reset_chunks(first, stop - 1);
}

void DirtyBits::set_all() {
    if (bottom_.bits > 0) set_chunks(0, bottom_.bits - 1);
}

void DirtyBits::clear() {
    std::fill(bottom_.words.begin(), bottom_.words.end(), 0);
    for (auto* tree : {&any_, &full_})
        for (Level& l : *tree) std::fill(l.words.begin(), l.words.end(), 0);
    dirty_chunks_.store(0, std::memory_order_relaxed);
}

bool DirtyBits::test(uint64_t offset) const {
    if (offset >= length_) return false;
    const uint64_t i = offset >> shift_;
    return (bottom_.words[i / 64] >> (i % 64)) & 1;
}

uint64_t DirtyBits::find_set(size_t l, uint64_t i) const {
    const Level& lv = level(Tree::any, l);
    if (i >= lv.bits) return kNone;
    const uint64_t w = i / 64;
    if (const uint64_t m = lv.words[w] & (kAll << (i % 64))) return w * 64 + uint64_t(std::countr_zero(m));
    uint64_t next = kNone;
    if (l == any_.size()) {  // the top: at most one word, nothing above
        for (uint64_t j = w + 1; j < lv.words.size(); j++)
            if (lv.words[j]) {
                next = j;
                break;
            }
    } else {
        next = find_set(l + 1, w + 1);  // the next word with a set bit
    }
    if (next == kNone) return kNone;
    return next * 64 + uint64_t(std::countr_zero(lv.words[next]));
}

uint64_t DirtyBits::find_clear(size_t l, uint64_t i) const {
    const Level& lv = level(Tree::full, l);
    if (i >= lv.bits) return kNone;
    const uint64_t w = i / 64;
    auto clear_bits = [&lv](uint64_t j) { return ~lv.words[j] & valid_mask(lv.bits, j); };
    if (const uint64_t m = clear_bits(w) & (kAll << (i % 64))) return w * 64 + uint64_t(std::countr_zero(m));
    uint64_t next = kNone;
    if (l == full_.size()) {
        for (uint64_t j = w + 1; j < lv.words.size(); j++)
            if (clear_bits(j)) {
                next = j;
                break;
            }
    } else {
        next = find_clear(l + 1, w + 1);  // the next word that is not full
    }
    if (next == kNone) return kNone;
    return next * 64 + uint64_t(std::countr_zero(clear_bits(next)));
}

std::optional<uint64_t> DirtyBits::next_dirty(uint64_t offset, uint64_t limit) const {
    if (offset >= length_ || limit == 0) return std::nullopt;
    const uint64_t end = window_end(offset, limit, length_);
    const uint64_t i = find_set(0, offset >> shift_);
    if (i == kNone || (i << shift_) >= end) return std::nullopt;
    return std::max(offset, i << shift_);
}

std::optional<uint64_t> DirtyBits::next_clean(uint64_t offset, uint64_t limit) const {
    if (offset >= length_ || limit == 0) return std::nullopt;
    const uint64_t end = window_end(offset, limit, length_);
    const uint64_t i = find_clear(0, offset >> shift_);
    if (i == kNone || (i << shift_) >= end) return std::nullopt;
    return std::max(offset, i << shift_);
}

std::optional<DirtyExtent> DirtyBits::next_dirty_extent(uint64_t offset, uint64_t limit, uint64_t max_bytes) const {
    if (max_bytes == 0) return std::nullopt;
    auto start = next_dirty(offset, limit);
    if (!start) return std::nullopt;
    const uint64_t end = std::min(window_end(offset, limit, length_), window_end(*start, max_bytes, length_));
    const uint64_t stop = next_clean(*start, end - *start).value_or(end);
    return DirtyExtent{*start, stop - *start};
}

DirtyRun DirtyBits::run_at(uint64_t offset, uint64_t limit) const {
    IOPLANE_ASSERT(offset < length_ && limit > 0);
    const uint64_t end = window_end(offset, limit, length_);
    if (test(offset)) return {true, next_clean(offset, end - offset).value_or(end) - offset};
    return {false, next_dirty(offset, end - offset).value_or(end) - offset};
}

void DirtyBits::merge(const DirtyBits& other) {
    if (&other == this || other.empty()) return;
    if (other.shift_ == shift_) {
        // Chunk for chunk: OR the words both have.
        const uint64_t bits = std::min(bottom_.bits, other.bottom_.bits);
        const uint64_t n = words_for(bits);
        if (n == 0) return;
        for (uint64_t i = 0; i < n; i++) bottom_.words[i] |= other.bottom_.words[i] & valid_mask(bits, i);
        rebuild();
        return;
    }
    const uint64_t common = std::min(length_, other.length_);
    for (uint64_t pos = 0; pos < common;) {
        auto e = other.next_dirty_extent(pos, common - pos);
        if (!e) break;
        set(e->offset, e->bytes);
        pos = e->offset + e->bytes;
    }
}

void DirtyBits::resize(uint64_t length) {
    const uint64_t bits = chunks_for(length, shift_);
    if (bits < bottom_.bits) reset_chunks(bits, bottom_.bits - 1);
    length_ = length;
    if (bits == bottom_.bits) return;
    bottom_.bits = bits;
    bottom_.words.resize(words_for(bits), 0);
    shape();
    rebuild();
}

void DirtyBits::serialize(uint64_t pos, std::span<uint8_t> out) const {
    const uint64_t size = serialized_size();
    const uint64_t n = pos >= size ? 0 : std::min<uint64_t>(out.size(), size - pos);
    if constexpr (std::endian::native == std::endian::little) {
        if (n) std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(bottom_.words.data()) + pos, n);
    } else {
        for (uint64_t i = 0; i < n; i++)
            out[i] = uint8_t(bottom_.words[(pos + i) / 8] >> (8 * ((pos + i) % 8)));
    }
    std::fill(out.begin() + ptrdiff_t(n), out.end(), 0);
}

template <class Fn>
void DirtyBits::rewrite_words(uint64_t a, uint64_t b, Fn write) {
    uint64_t* w = bottom_.words.data();
    const int64_t before = popcount_words(w + a, b - a + 1);
    write();
    const uint64_t last = bottom_.words.size() - 1;
    if (b == last) w[last] &= valid_mask(bottom_.bits, last);
    add_count(popcount_words(w + a, b - a + 1) - before);
    refresh(a, b);
}

Result<void> DirtyBits::deserialize(uint64_t pos, std::span<const uint8_t> in) {
    const uint64_t size = serialized_size();
    if (pos > size || in.size() > size - pos)
        return fail(EINVAL, "bitmap data [" + std::to_string(pos) + ", +" + std::to_string(in.size()) +
                                ") past its end (" + std::to_string(size) + " bytes)");
    if (in.empty()) return {};
    rewrite_words(pos / 8, (pos + in.size() - 1) / 8, [&] {
        if constexpr (std::endian::native == std::endian::little) {
            std::memcpy(reinterpret_cast<uint8_t*>(bottom_.words.data()) + pos, in.data(), in.size());
        } else {
            for (uint64_t i = 0; i < in.size(); i++) {
                uint64_t& w = bottom_.words[(pos + i) / 8];
                const unsigned s = 8 * unsigned((pos + i) % 8);
                w = (w & ~(uint64_t{0xff} << s)) | (uint64_t{in[i]} << s);
            }
        }
    });
    return {};
}

Result<void> DirtyBits::deserialize_fill(uint64_t pos, uint64_t bytes, bool ones) {
    const uint64_t size = serialized_size();
    if (pos > size || bytes > size - pos)
        return fail(EINVAL, "bitmap data [" + std::to_string(pos) + ", +" + std::to_string(bytes) +
                                ") past its end (" + std::to_string(size) + " bytes)");
    if (bytes == 0) return {};
    rewrite_words(pos / 8, (pos + bytes - 1) / 8, [&] {
        // Byte i of the data is byte i % 8 of word i / 8 (little-endian):
        // a byte range is a bit range.
        const uint64_t first = pos * 8, last = (pos + bytes) * 8 - 1;
        uint64_t* w = bottom_.words.data();
        for (uint64_t i = first / 64; i <= last / 64; i++) {
            const unsigned lo = i == first / 64 ? unsigned(first % 64) : 0;
            const unsigned hi = i == last / 64 ? unsigned(last % 64) : 63;
            const uint64_t m = span_mask(lo, hi);
            w[i] = ones ? w[i] | m : w[i] & ~m;
        }
    });
    return {};
}

}  // namespace ioplane::block
