#include "ioplane/core/keyval.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <utility>

#include "ioplane/core/thread_contract.h"

namespace ioplane {

using nlohmann::json;

namespace {

// QEMU limits each key fragment to 127 characters (keyval.c's key_in_cur[128]).
constexpr size_t kMaxFragmentLength = 127;

std::unexpected<Error> invalid(std::string message) { return fail(EINVAL, std::move(message)); }

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }

// Length of the QAPI name that `s` starts with, 0 if none (QEMU's
// parse_qapi_name(s, false)): a letter, then letters, digits, '-' and '_',
// optionally after a downstream-extension prefix "__RFQDN_".
size_t qapi_name_length(std::string_view s) {
    size_t p = 0;
    if (!s.empty() && s[0] == '_') {
        if (s.size() < 2 || s[1] != '_') return 0;
        p = 2;
        while (p < s.size() && (is_alnum(s[p]) || s[p] == '-' || s[p] == '.')) p++;
        if (p >= s.size() || s[p] != '_') return 0;
        p++;
    }
    if (p >= s.size() || !is_alpha(s[p])) return 0;
    p++;
    while (p < s.size() && (is_alnum(s[p]) || s[p] == '-' || s[p] == '_')) p++;
    return p;
}

size_t digits_length(std::string_view s) {
    size_t n = 0;
    while (n < s.size() && is_digit(s[n])) n++;
    return n;
}

// Whether a (canonical) key is an array index.
bool is_index(std::string_view key) { return !key.empty() && digits_length(key) == key.size(); }

// "007" and "7" name the same array element; keep one spelling so that they
// count as the same key.
std::string canonical_index(std::string_view digits) {
    size_t zeros = 0;
    while (zeros + 1 < digits.size() && digits[zeros] == '0') zeros++;
    return std::string(digits.substr(zeros));
}

// Replaces, bottom-up, every object whose keys are all indexes by an array
// (keyval.c's keyval_listify). `path` is the dotted key of `node` plus '.'.
Result<void> listify(json& node, std::string& path) {
    bool has_index = false;
    bool has_member = false;
    for (auto it = node.begin(); it != node.end(); ++it) {
        if (is_index(it.key())) {
            has_index = true;
        } else {
            has_member = true;
        }
        if (it.value().is_object()) {
            const size_t saved = path.size();
            path += it.key();
            path += '.';
            auto r = listify(it.value(), path);
            if (!r) return r;
            path.resize(saved);
        }
    }
    if (has_index && has_member) return invalid("parameters " + in_quotes(path + "*") + " used inconsistently");
    if (!has_index) return {};

    const size_t n = node.size();
    std::vector<json> elements(n);
    std::vector<bool> present(n, false);
    for (auto it = node.begin(); it != node.end(); ++it) {
        // Keys are canonical and distinct, so n keys that are all below n are
        // exactly 0..n-1; a longer key is out of range anyway.
        const std::string& key = it.key();
        if (key.size() > 9) continue;
        const size_t index = std::stoul(key);
        if (index >= n) continue;
        elements[index] = std::move(it.value());
        present[index] = true;
    }
    for (size_t i = 0; i < n; i++) {
        if (!present[i]) return invalid("parameter " + in_quotes(path + std::to_string(i)) + " missing");
    }
    node = json::array();
    for (auto& e : elements) node.push_back(std::move(e));
    return {};
}

// The key's fragments, or an error naming the key. Index fragments (digits,
// not first) are made canonical.
Result<std::vector<std::string>> split_key(std::string_view key) {
    std::vector<std::string> fragments;
    size_t s = 0;
    for (;;) {
        const std::string_view rest = key.substr(s);
        size_t len = 0;
        std::string fragment;
        if (s != 0 && !rest.empty() && is_digit(rest[0])) {
            len = digits_length(rest);
            fragment = canonical_index(rest.substr(0, len));
        } else {
            len = qapi_name_length(rest);
            fragment = std::string(rest.substr(0, len));
        }
        if (len == 0 || (len < rest.size() && rest[len] != '.')) return invalid("invalid parameter " + in_quotes(key));
        if (len > kMaxFragmentLength) {
            return invalid(std::string(fragments.empty() && len == key.size() ? "parameter " : "parameter fragment ") +
                           in_quotes(rest.substr(0, len)) + " is too long");
        }
        fragments.push_back(std::move(fragment));
        s += len;
        if (s >= key.size()) break;
        s++;  // the '.'
    }
    if (fragments.size() > static_cast<size_t>(kMaxOptionDepth)) {
        return invalid("parameter " + in_quotes(key) + " is nested too deeply");
    }
    return fragments;
}

// Stores `value` at the path `fragments` below `root`; `key` names the
// parameter in messages.
Result<void> put(json& root, const std::vector<std::string>& fragments, std::string_view key, std::string value) {
    json* cur = &root;
    std::string prefix;
    for (size_t i = 0; i + 1 < fragments.size(); i++) {
        if (i) prefix += '.';
        prefix += fragments[i];
        auto it = cur->find(fragments[i]);
        if (it == cur->end()) {
            cur = &((*cur)[fragments[i]] = json::object());
        } else if (!it->is_object()) {
            return invalid("parameters " + in_quotes(prefix + ".*") + " used inconsistently");
        } else {
            cur = &*it;
        }
    }
    auto it = cur->find(fragments.back());
    if (it != cur->end()) {
        if (it->is_object()) {
            return invalid("parameters " + in_quotes(std::string(key) + ".*") + " used inconsistently");
        }
        return invalid("parameter " + in_quotes(key) + " is given twice");
    }
    (*cur)[fragments.back()] = std::move(value);
    return {};
}

// Reads a value up to an unescaped ',' (',,' is a literal comma), starting at
// `pos`; returns the value and moves `pos` past the terminating ','.
std::string read_value(std::string_view text, size_t& pos) {
    std::string value;
    while (pos < text.size()) {
        const char c = text[pos++];
        if (c == ',') {
            if (pos < text.size() && text[pos] == ',') {
                pos++;
            } else {
                break;
            }
        }
        value += c;
    }
    return value;
}

bool is_help_word(std::string_view s) { return s == "help" || s == "?"; }

// ---------------------------------------------------------------- JSON

// QEMU's JSON parser accepts single-quoted strings and the escape \' in
// strings; standard JSON has neither. Rewrites them into standard JSON.
std::string requote(std::string_view in) {
    enum class State { outside, dq, sq } state = State::outside;
    std::string out;
    out.reserve(in.size() + 8);
    for (size_t i = 0; i < in.size(); i++) {
        const char c = in[i];
        if (state == State::outside) {
            if (c == '"') {
                state = State::dq;
            } else if (c == '\'') {
                state = State::sq;
                out += '"';
                continue;
            }
            out += c;
            continue;
        }
        if (c == '\\' && i + 1 < in.size()) {
            if (in[i + 1] == '\'') {
                out += '\'';
            } else {
                out += c;
                out += in[i + 1];
            }
            i++;
            continue;
        }
        if (state == State::dq) {
            if (c == '"') state = State::outside;
            out += c;
        } else if (c == '\'') {
            state = State::outside;
            out += '"';
        } else if (c == '"') {
            out += "\\\"";
        } else {
            out += c;
        }
    }
    return out;
}

// A SAX consumer for nlohmann's parser that builds the tree like the library's
// own DOM builder, but rejects duplicate keys and deep nesting and never
// throws: errors are kept in error_ and stop the parse.
class JsonBuilder {
public:
    using number_integer_t = json::number_integer_t;
    using number_unsigned_t = json::number_unsigned_t;
    using number_float_t = json::number_float_t;
    using string_t = json::string_t;
    using binary_t = json::binary_t;

    bool null() { return put(json(nullptr)) != nullptr; }
    bool boolean(bool v) { return put(json(v)) != nullptr; }
    bool number_integer(number_integer_t v) { return put(json(v)) != nullptr; }
    bool number_unsigned(number_unsigned_t v) { return put(json(v)) != nullptr; }
    bool number_float(number_float_t v, const string_t&) { return put(json(v)) != nullptr; }
    bool string(string_t& v) { return put(json(std::move(v))) != nullptr; }
    bool binary(binary_t& v) { return put(json::binary(std::vector<std::uint8_t>(v.begin(), v.end()))) != nullptr; }

    bool start_object(std::size_t) { return open(json::object()); }
    bool end_object() { return close(); }
    bool start_array(std::size_t) { return open(json::array()); }
    bool end_array() { return close(); }

    bool key(string_t& k) {
        json& object = *stack_.back();
        if (object.contains(k)) {
            error_ = "duplicate key " + in_quotes(k);
            return false;
        }
        key_ = std::move(k);
        return true;
    }

    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
        // Drop the library's "[json.exception.parse_error.101] " tag.
        std::string_view what = ex.what();
        if (const size_t tag_end = what.find("] "); tag_end != std::string_view::npos) what.remove_prefix(tag_end + 2);
        error_ = what;
        return false;
    }

    json& root() { return root_; }
    const std::string& error() const { return error_; }

private:
    json* put(json&& v) {
        if (stack_.empty()) {
            root_ = std::move(v);
            return &root_;
        }
        json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(v));
            return &parent.back();
        }
        json& slot = parent[key_];
        slot = std::move(v);
        return &slot;
    }
    bool open(json&& container) {
        if (stack_.size() >= static_cast<size_t>(kMaxOptionDepth)) {
            error_ = "nested more than " + std::to_string(kMaxOptionDepth) + " levels deep";
            return false;
        }
        // Safe to keep: a container only grows while it is the innermost open
        // one, i.e. after its children have been closed and popped.
        stack_.push_back(put(std::move(container)));
        return true;
    }
    bool close() {
        stack_.pop_back();
        return true;
    }

    json root_;
    std::vector<json*> stack_;  // open containers, innermost last; point into root_
    std::string key_;
    std::string error_;
};

// ---------------------------------------------------------------- numbers

enum class NumberError { none, syntax, range, leading_zero };

// An unsigned magnitude in decimal or 0x hex, the whole of `t`.
NumberError parse_magnitude(std::string_view t, uint64_t& out) {
    out = 0;
    if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
        for (size_t i = 2; i < t.size(); i++) {
            const char c = t[i];
            unsigned d;
            if (is_digit(c)) {
                d = c - '0';
            } else if (c >= 'a' && c <= 'f') {
                d = c - 'a' + 10;
            } else if (c >= 'A' && c <= 'F') {
                d = c - 'A' + 10;
            } else {
                return NumberError::syntax;
            }
            if (out > (UINT64_MAX >> 4)) return NumberError::range;
            out = (out << 4) | d;
        }
        return NumberError::none;
    }
    if (t.empty() || digits_length(t) != t.size()) return NumberError::syntax;
    if (t.size() > 1 && t[0] == '0') return NumberError::leading_zero;
    for (const char c : t) {
        const unsigned d = c - '0';
        if (out > (UINT64_MAX - d) / 10) return NumberError::range;
        out = out * 10 + d;
    }
    return NumberError::none;
}

std::unexpected<Error> number_error(NumberError e, std::string_view text) {
    switch (e) {
        case NumberError::range:
            return invalid(in_quotes(text) + " is out of range");
        case NumberError::leading_zero:
            return invalid(in_quotes(text) + " has a leading zero, which QEMU would read as octal; "
                           "write it in decimal or as 0x hex");
        default:
            return invalid("expected an integer, got " + in_quotes(text));
    }
}

// "a string", "an object", ... for messages about JSON values.
std::string describe_type(const json& v) {
    switch (v.type()) {
        case json::value_t::object:
            return "an object";
        case json::value_t::array:
            return "an array";
        case json::value_t::string:
            return "a string";
        case json::value_t::boolean:
            return "a boolean";
        case json::value_t::null:
            return "null";
        default:
            return "a number";
    }
}

}  // namespace

std::string in_quotes(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '\'';
    out += s;
    out += '\'';
    return out;
}

// ---------------------------------------------------------------- parsers

Result<OptionTree> parse_keyval(std::string_view text, std::string_view implied_key, bool* help) {
    OptionTree tree;
    bool help_requested = false;
    bool first = true;
    size_t pos = 0;
    while (pos < text.size()) {
        const std::string_view rest = text.substr(pos);
        const size_t len = std::min(rest.find_first_of("=,"), rest.size());
        std::string_view key = rest.substr(0, len);
        const bool may_imply = first && !implied_key.empty();
        first = false;  // QEMU implies the key of the first item only

        if (len > 0 && (len == rest.size() || rest[len] != '=')) {  // a bare word
            if (is_help_word(key)) {
                help_requested = true;
                pos += len + (len < rest.size() ? 1 : 0);
                continue;
            }
            if (may_imply) {
                // The implied value runs to the first ',': no ',,' escapes.
                auto fragments = split_key(implied_key);
                IOPLANE_ASSERT(fragments.has_value());
                if (auto r = put(tree.root, *fragments, implied_key, std::string(key)); !r) {
                    return std::unexpected(r.error());
                }
                pos += len + (len < rest.size() ? 1 : 0);
                continue;
            }
        }
        auto fragments = split_key(key);
        if (!fragments) return std::unexpected(fragments.error());
        if (len == rest.size() || rest[len] != '=') return invalid("expected '=' after parameter " + in_quotes(key));
        pos += len + 1;
        std::string value = read_value(text, pos);
        if (auto r = put(tree.root, *fragments, key, std::move(value)); !r) return std::unexpected(r.error());
    }
    if (help_requested) {
        if (help == nullptr) return invalid("help is not available for this option");
        *help = true;
    } else if (help != nullptr) {
        *help = false;
    }
    std::string path;
    if (auto r = listify(tree.root, path); !r) return std::unexpected(r.error());
    return tree;
}

Result<json> parse_qemu_json(std::string_view text) {
    std::string requoted;
    if (text.find('\'') != std::string_view::npos) {
        requoted = requote(text);
        text = requoted;
    }
    JsonBuilder builder;
    if (!json::sax_parse(text.begin(), text.end(), &builder)) return invalid("invalid JSON: " + builder.error());
    return std::move(builder.root());
}

Result<OptionTree> parse_json_options(std::string_view text) {
    auto root = parse_qemu_json(text);
    if (!root) return std::unexpected(root.error());
    if (!root->is_object()) return invalid("expected a JSON object, got " + describe_type(*root));
    OptionTree tree;
    tree.root = std::move(*root);
    tree.syntax = OptionSyntax::json;
    return tree;
}

Result<OptionTree> parse_option_string(std::string_view text, std::string_view implied_key, bool* help) {
    if (!text.empty() && text[0] == '{') {
        if (help != nullptr) *help = false;
        return parse_json_options(text);
    }
    return parse_keyval(text, implied_key, help);
}

Result<OptionTree> parse_qemu_opts(std::string_view text, std::string_view implied_key,
                                   std::vector<std::string>& warnings, bool* help) {
    OptionTree tree;
    bool help_requested = false;
    bool first = true;
    size_t pos = 0;
    while (pos < text.size()) {
        const std::string_view rest = text.substr(pos);
        const size_t len = std::min(rest.find_first_of("=,"), rest.size());
        const bool may_imply = first && !implied_key.empty();
        first = false;

        std::string name;
        std::string value;
        if (len == rest.size() || rest[len] != '=') {  // a bare word
            const std::string_view word = rest.substr(0, len);
            if (is_help_word(word)) {
                help_requested = true;
                pos += len + (len < rest.size() ? 1 : 0);
                continue;
            }
            if (may_imply) {
                // Unlike keyval, QemuOpts unescapes ',,' in the implied value.
                name = implied_key;
                value = read_value(text, pos);
            } else {
                if (word.starts_with("no")) {
                    name = word.substr(2);
                    value = "off";
                } else {
                    name = word;
                    value = "on";
                }
                pos += len + (len < rest.size() ? 1 : 0);
                if (!name.empty()) {
                    warnings.push_back("short-form boolean option " + in_quotes(word) + " is deprecated; use " + name +
                                       "=" + value + " instead");
                }
            }
        } else {
            name = rest.substr(0, len);
            pos += len + 1;
            value = read_value(text, pos);
        }
        if (name.empty()) return invalid("invalid parameter ''");
        if (tree.root.contains(name)) return invalid("parameter " + in_quotes(name) + " is given twice");
        tree.root[name] = std::move(value);
    }
    if (help_requested) {
        if (help == nullptr) return invalid("help is not available for this option");
        *help = true;
    } else if (help != nullptr) {
        *help = false;
    }
    return tree;
}

// ---------------------------------------------------------------- scalars

Result<bool> parse_bool_value(std::string_view text) {
    if (text == "on" || text == "yes" || text == "true" || text == "y") return true;
    if (text == "off" || text == "no" || text == "false" || text == "n") return false;
    return invalid("expected 'on' or 'off', got " + in_quotes(text));
}

Result<uint64_t> parse_uint64_value(std::string_view text) {
    uint64_t v;
    if (const NumberError e = parse_magnitude(text, v); e != NumberError::none) return number_error(e, text);
    return v;
}

Result<int64_t> parse_int64_value(std::string_view text) {
    const bool negative = !text.empty() && text[0] == '-';
    uint64_t magnitude;
    if (const NumberError e = parse_magnitude(negative ? text.substr(1) : text, magnitude); e != NumberError::none) {
        return number_error(e, text);
    }
    if (negative) {
        if (magnitude > static_cast<uint64_t>(INT64_MAX) + 1) return number_error(NumberError::range, text);
        return magnitude == static_cast<uint64_t>(INT64_MAX) + 1 ? INT64_MIN : -static_cast<int64_t>(magnitude);
    }
    if (magnitude > static_cast<uint64_t>(INT64_MAX)) return number_error(NumberError::range, text);
    return static_cast<int64_t>(magnitude);
}

Result<uint64_t> parse_size_value(std::string_view text) {
    const auto bad = [&] { return invalid("expected a size (such as 4096, 64K or 1.5G), got " + in_quotes(text)); };
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        uint64_t v;
        const NumberError e = parse_magnitude(text, v);
        if (e == NumberError::range) return number_error(e, text);
        if (e != NumberError::none) return bad();
        return v;
    }
    // Decimal: leading zeros are harmless here, QEMU reads sizes in base 10.
    const size_t int_len = digits_length(text);
    if (int_len == 0) return bad();
    unsigned __int128 whole = 0;
    for (size_t i = 0; i < int_len; i++) {
        whole = whole * 10 + static_cast<unsigned>(text[i] - '0');
        if (whole > UINT64_MAX) return number_error(NumberError::range, text);
    }
    size_t p = int_len;
    uint64_t frac_num = 0;  // the fraction is frac_num / frac_den
    uint64_t frac_den = 1;
    bool has_fraction = false;
    if (p < text.size() && text[p] == '.') {
        const size_t frac_len = digits_length(text.substr(p + 1));
        if (frac_len == 0) return bad();
        has_fraction = true;
        // 18 digits are exact in 64 bits; later ones cannot change a byte count.
        for (size_t i = 0; i < frac_len && i < 18; i++) {
            frac_num = frac_num * 10 + static_cast<unsigned>(text[p + 1 + i] - '0');
            frac_den *= 10;
        }
        p += 1 + frac_len;
    }
    uint64_t unit = 1;
    if (p < text.size()) {
        if (p + 1 != text.size()) return bad();
        switch (text[p]) {
            case 'b': case 'B': unit = 1; break;
            case 'k': case 'K': unit = uint64_t{1} << 10; break;
            case 'm': case 'M': unit = uint64_t{1} << 20; break;
            case 'g': case 'G': unit = uint64_t{1} << 30; break;
            case 't': case 'T': unit = uint64_t{1} << 40; break;
            case 'p': case 'P': unit = uint64_t{1} << 50; break;
            case 'e': case 'E': unit = uint64_t{1} << 60; break;
            default: return bad();
        }
        if (has_fraction && unit == 1) return invalid(in_quotes(text) + " is a fraction of a byte");
    } else if (has_fraction) {
        return invalid(in_quotes(text) + " is a fraction of a byte");
    }
    const unsigned __int128 total =
        whole * unit + static_cast<unsigned __int128>(frac_num) * unit / frac_den;
    if (total > UINT64_MAX) return number_error(NumberError::range, text);
    return static_cast<uint64_t>(total);
}

// ---------------------------------------------------------------- OptionReader

OptionReader::OptionReader(const json& object, OptionSyntax syntax, std::string path)
    : object_(&object), syntax_(syntax), path_(std::move(path)) {
    IOPLANE_ASSERT(object.is_object());
}

std::string OptionReader::full_name(std::string_view key) const {
    std::string name = path_;
    name += key;
    return name;
}

bool OptionReader::has(std::string_view key) const { return object_->contains(std::string(key)); }

const json* OptionReader::find(std::string_view key) {
    auto it = object_->find(std::string(key));
    if (it == object_->end()) return nullptr;
    used_.emplace(key);
    return &*it;
}

const json* OptionReader::get_raw(std::string_view key) { return find(key); }

namespace {

// "parameter 'x': expected an integer, got 'abc'"
Error about(std::string_view name, const Error& e) {
    return Error{e.code, "parameter " + in_quotes(name) + ": " + e.message};
}

std::unexpected<Error> wrong_type(std::string_view name, std::string_view expected, const json& v) {
    return invalid("parameter " + in_quotes(name) + ": expected " + std::string(expected) + ", got " +
                   describe_type(v));
}

// A JSON number that must be a non-negative integer. A tree built in code may
// hold such a value as signed.
Result<std::optional<uint64_t>> json_unsigned(std::string_view name, std::string_view expected, const json& v) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer()) {
        if (v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
        return invalid("parameter " + in_quotes(name) + ": must not be negative");
    }
    return wrong_type(name, expected, v);
}

}  // namespace

Result<std::optional<std::string>> OptionReader::get_string(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return wrong_type(full_name(key), "a string", *v);
    return v->get<std::string>();
}

Result<std::string> OptionReader::require_string(std::string_view key) {
    auto v = get_string(key);
    if (!v) return std::unexpected(v.error());
    if (!*v) return invalid("missing " + in_quotes(full_name(key)));
    return std::move(**v);
}

Result<std::optional<bool>> OptionReader::get_bool(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (syntax_ == OptionSyntax::json) {
        if (!v->is_boolean()) return wrong_type(full_name(key), "a boolean", *v);
        return v->get<bool>();
    }
    if (!v->is_string()) return wrong_type(full_name(key), "'on' or 'off'", *v);
    auto b = parse_bool_value(v->get_ref<const std::string&>());
    if (!b) return std::unexpected(about(full_name(key), b.error()));
    return *b;
}

Result<std::optional<uint64_t>> OptionReader::get_uint64(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (syntax_ == OptionSyntax::json) return json_unsigned(full_name(key), "an integer", *v);
    if (!v->is_string()) return wrong_type(full_name(key), "an integer", *v);
    auto n = parse_uint64_value(v->get_ref<const std::string&>());
    if (!n) return std::unexpected(about(full_name(key), n.error()));
    return *n;
}

Result<std::optional<int64_t>> OptionReader::get_int64(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (syntax_ == OptionSyntax::json) {
        if (v->is_number_unsigned()) {
            if (v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
                return invalid("parameter " + in_quotes(full_name(key)) + ": out of range");
            }
            return static_cast<int64_t>(v->get<uint64_t>());
        }
        if (v->is_number_integer()) return v->get<int64_t>();
        return wrong_type(full_name(key), "an integer", *v);
    }
    if (!v->is_string()) return wrong_type(full_name(key), "an integer", *v);
    auto n = parse_int64_value(v->get_ref<const std::string&>());
    if (!n) return std::unexpected(about(full_name(key), n.error()));
    return *n;
}

Result<std::optional<uint64_t>> OptionReader::get_size(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (syntax_ == OptionSyntax::json) return json_unsigned(full_name(key), "a size in bytes", *v);
    if (!v->is_string()) return wrong_type(full_name(key), "a size", *v);
    auto n = parse_size_value(v->get_ref<const std::string&>());
    if (!n) return std::unexpected(about(full_name(key), n.error()));
    return *n;
}

Result<std::optional<OptionReader>> OptionReader::get_object(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_object()) return wrong_type(full_name(key), "an object", *v);
    return OptionReader(*v, syntax_, full_name(key) + ".");
}

Result<void> OptionReader::check_all_used() const {
    for (auto it = object_->begin(); it != object_->end(); ++it) {
        if (!used_.contains(it.key())) return invalid("unexpected parameter " + in_quotes(full_name(it.key())));
    }
    return {};
}

json OptionReader::unused() const {
    json out = json::object();
    for (auto it = object_->begin(); it != object_->end(); ++it) {
        if (!used_.contains(it.key())) out[it.key()] = it.value();
    }
    return out;
}

}  // namespace ioplane
