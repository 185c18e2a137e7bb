#include "qemu_json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ioplane::monitor {

using nlohmann::json;

namespace {

constexpr unsigned kQdictBuckets = 512;  // QEMU's QDICT_BUCKET_MAX

// Keys that share a bucket with another key of the same object in what
// ioplane sends. QEMU inserts an object's members in QAPI schema order and
// prints the later one of such a pair first; these are the later ones. The
// pairs were found by hashing every key ioplane sends
// (QemuJson.KeysThatShareABucketPrintInQemusOrder lists them):
constexpr std::string_view kPrintsFirstInItsBucket[] = {
    "micro",            // VersionTriple {major, minor, micro}: with "minor"
    "write_threshold",  // BlockDeviceInfo: with "backing_file", earlier in the schema
};

bool prints_first_in_its_bucket(std::string_view key) {
    return std::ranges::find(kPrintsFirstInItsBucket, key) != std::end(kPrintsFirstInItsBucket);
}

// Where QEMU's QDict iteration puts a member: by bucket, then (our stand-in
// for "inserted last") the table above, then by name.
struct MemberOrder {
    unsigned bucket;
    bool not_first;
    const std::string* key;
    const json* value;
    bool operator<(const MemberOrder& o) const {
        if (bucket != o.bucket) return bucket < o.bucket;
        if (not_first != o.not_first) return not_first < o.not_first;
        return *key < *o.key;
    }
};

// One character of `s` at `pos` as QEMU's mod_utf8_codepoint() reads it
// (modified UTF-8: "\xC0\x80" is U+0000): its code point, or -1 for an
// invalid sequence. `pos` moves past the bytes the sequence took, so that an
// invalid sequence is one \uFFFD and the next character is read after it.
long next_code_point(std::string_view s, size_t& pos) {
    const unsigned lead = static_cast<unsigned char>(s[pos++]);
    if (lead < 0x80) return long(lead);
    if (lead >= 0xFE || (lead & 0x40) == 0) return -1;  // impossible byte, or a stray continuation byte
    unsigned len = 0;
    unsigned mask = 0x80;
    for (; lead & mask; mask >>= 1) len++;  // 2 to 6 bytes
    uint32_t cp = lead & (mask - 1);
    for (unsigned i = 1; i < len; i++) {
        // A missing continuation byte ends the sequence before that byte.
        if (pos == s.size() || (static_cast<unsigned char>(s[pos]) & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (static_cast<unsigned char>(s[pos++]) & 0x3F);
    }
    static constexpr uint32_t kSmallest[] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};  // by length 2..6
    const bool overlong = cp < kSmallest[len - 2] && !(cp == 0 && len == 2);
    const bool noncharacter = (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
    const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    if (cp > 0x10FFFF || overlong || noncharacter || surrogate) return -1;
    return long(cp);
}

void append_u_escape(std::string& out, unsigned unit) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(unit >> shift) & 0xF];
}

void append_string(std::string& out, std::string_view s) {
    out += '"';
    for (size_t pos = 0; pos < s.size();) {
        long cp = next_code_point(s, pos);
        switch (cp) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (cp < 0) cp = 0xFFFD;  // the replacement character
                if (cp > 0xFFFF) {
                    append_u_escape(out, unsigned(0xD800 + ((cp - 0x10000) >> 10)));
                    append_u_escape(out, unsigned(0xDC00 + ((cp - 0x10000) & 0x3FF)));
                } else if (cp < 0x20 || cp >= 0x7F) {
                    append_u_escape(out, unsigned(cp));
                } else {
                    out += char(cp);
                }
        }
    }
    out += '"';
}

void append_double(std::string& out, double d) {
    if (!std::isfinite(d)) {
        out += "null";
        return;
    }
    char buf[64];
    // to_chars with a precision is printf's %.*g in the C locale.
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::general, 17);
    out.append(buf, end);
}

class Writer {
public:
    explicit Writer(bool pretty) : pretty_(pretty) {}

    void value(const json& v, unsigned depth) {
        switch (v.type()) {
            case json::value_t::object: object(v, depth); break;
            case json::value_t::array: array(v, depth); break;
            case json::value_t::string: append_string(out_, v.get_ref<const std::string&>()); break;
            case json::value_t::boolean: out_ += v.get<bool>() ? "true" : "false"; break;
            case json::value_t::number_integer: out_ += std::to_string(v.get<int64_t>()); break;
            case json::value_t::number_unsigned: out_ += std::to_string(v.get<uint64_t>()); break;
            case json::value_t::number_float: append_double(out_, v.get<double>()); break;
            // null, and what no QMP value is (binary, discarded)
            default: out_ += "null"; break;
        }
    }

    std::string take() { return std::move(out_); }

private:
    void object(const json& v, unsigned depth) {
        std::vector<MemberOrder> members;
        members.reserve(v.size());
        for (auto it = v.begin(); it != v.end(); ++it)
            members.push_back({qdict_bucket(it.key()), !prints_first_in_its_bucket(it.key()), &it.key(), &*it});
        std::sort(members.begin(), members.end());
        out_ += '{';
        for (size_t i = 0; i < members.size(); i++) {
            separator(i == 0, depth + 1);
            append_string(out_, *members[i].key);
            out_ += ": ";
            value(*members[i].value, depth + 1);
        }
        close('}', depth);
    }

    void array(const json& v, unsigned depth) {
        out_ += '[';
        size_t i = 0;
        for (const json& element : v) {
            separator(i++ == 0, depth + 1);
            value(element, depth + 1);
        }
        close(']', depth);
    }

    // Before a member or element at `depth`.
    void separator(bool first, unsigned depth) {
        if (!first) out_ += ',';
        if (pretty_)
            newline(depth);
        else if (!first)
            out_ += ' ';
    }

    // QEMU's pretty form closes every container on a new line, an empty one
    // too ("{" newline "}").
    void close(char bracket, unsigned depth) {
        if (pretty_) newline(depth);
        out_ += bracket;
    }

    void newline(unsigned depth) {
        out_ += '\n';
        out_.append(size_t(depth) * 4, ' ');
    }

    const bool pretty_;
    std::string out_;
};

}  // namespace

unsigned qdict_bucket(std::string_view key) {
    // QEMU's tdb_hash(), in 32-bit unsigned arithmetic, over the key as QEMU
    // holds it: a C string, in which U+0000 (from "\u0000") is "\xC0\x80".
    const size_t length = key.size() + size_t(std::ranges::count(key, '\0'));
    uint32_t value = 0x238F13AFu * uint32_t(length);
    size_t i = 0;
    auto add = [&](unsigned char byte) { value += uint32_t(byte) << (i++ * 5 % 24); };
    for (char c : key) {
        if (c == '\0') {
            add(0xC0);
            add(0x80);
        } else {
            add(static_cast<unsigned char>(c));
        }
    }
    return (1103515243u * value + 12345u) % kQdictBuckets;
}

std::string to_qemu_json(const json& value, bool pretty) {
    Writer w(pretty);
    w.value(value, 0);
    return w.take();
}

}  // namespace ioplane::monitor
