// 9P wire primitives: little-endian integers, length-prefixed strings and
// qids, read from and written to byte buffers with every length checked.
// A WireReader that runs out of bytes latches "bad" and yields zeros from
// then on, so a decoder reads a whole message and checks once at the end.
//
// Thread contract: plain values; any thread, one at a time per object.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ioplane::fs9p {

// type[1] version[4] path[8]
struct Qid {
    uint8_t type = 0;
    uint32_t version = 0;
    uint64_t path = 0;
    bool operator==(const Qid&) const = default;
};
inline constexpr size_t kQidSize = 13;

class WireReader {
public:
    explicit WireReader(std::span<const uint8_t> bytes) : p_(bytes.data()), left_(bytes.size()) {}

    uint8_t u8() { return uint8_t(le(1)); }
    uint16_t u16() { return uint16_t(le(2)); }
    uint32_t u32() { return uint32_t(le(4)); }
    uint64_t u64() { return le(8); }
    // A view into the message; empty (and bad) if the length lies.
    std::string_view str() {
        const uint16_t n = u16();
        if (!take(n)) return {};
        return {reinterpret_cast<const char*>(p_ - n), n};
    }
    std::span<const uint8_t> bytes(uint32_t n) {
        if (!take(n)) return {};
        return {p_ - n, n};
    }
    Qid qid() {
        Qid q;
        q.type = u8();
        q.version = u32();
        q.path = u64();
        return q;
    }

    bool ok() const { return ok_; }
    size_t left() const { return left_; }

private:
    bool take(size_t n) {
        if (!ok_ || n > left_) {
            ok_ = false;
            left_ = 0;
            return false;
        }
        p_ += n;
        left_ -= n;
        return true;
    }
    uint64_t le(size_t n) {
        if (!take(n)) return 0;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= uint64_t(p_[int(i) - int(n)]) << (8 * i);
        return v;
    }

    const uint8_t* p_;
    size_t left_;
    bool ok_ = true;
};

// Appends to a byte vector. A message starts with begin(type, tag), which
// leaves room for size[4]; finish() fills it in.
class WireWriter {
public:
    explicit WireWriter(std::vector<uint8_t>& out) : out_(out) {}

    void begin(uint8_t type, uint16_t tag) {
        start_ = out_.size();
        u32(0);
        u8(type);
        u16(tag);
    }
    // The size field covers everything from begin() on, plus `trailing`
    // bytes the caller sends after these (an Rread's data).
    void finish(uint32_t trailing = 0) {
        const uint32_t size = uint32_t(out_.size() - start_) + trailing;
        for (int i = 0; i < 4; i++) out_[start_ + i] = uint8_t(size >> (8 * i));
    }

    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { le(v, 2); }
    void u32(uint32_t v) { le(v, 4); }
    void u64(uint64_t v) { le(v, 8); }
    // Callers keep strings under 64 KiB (names are at most NAME_MAX, paths
    // at most PATH_MAX).
    void str(std::string_view s) {
        u16(uint16_t(s.size()));
        out_.insert(out_.end(), s.begin(), s.end());
    }
    void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    void qid(const Qid& q) {
        u8(q.type);
        u32(q.version);
        u64(q.path);
    }
    size_t size() const { return out_.size(); }

private:
    void le(uint64_t v, int n) {
        for (int i = 0; i < n; i++) out_.push_back(uint8_t(v >> (8 * i)));
    }

    std::vector<uint8_t>& out_;
    size_t start_ = 0;
};

}  // namespace ioplane::fs9p
