// QEMU option strings, turned into a tree and read back with types.
//
// qemu-storage-daemon's options take a string that QEMU first parses into a
// tree of strings (a QDict) and only then types, member by member, with the
// schema of the object being created. ioplane keeps that split: the parsers
// here produce an OptionTree, and the code that owns an option (the command
// line for --export, a block driver for its --blockdev keys) reads it through
// an OptionReader, which types values the way QEMU's visitors do and reports
// keys nobody asked for.
//
// Three syntaxes reach the tree:
//  - keyval (util/keyval.c): `driver=file,cache.direct=on,server.0.host=h`;
//    dotted keys nest, numeric fragments make arrays, every leaf is a string.
//  - JSON, used when the string starts with '{' (qobject_input_visitor_new_str):
//    leaves keep their JSON types, which the reader then checks strictly.
//  - QemuOpts (util/qemu-option.c), which --chardev still uses: flat keys, and
//    bare words are booleans (`server,nowait`).
//
// Deliberate differences from QEMU, each because a silent surprise on a
// storage daemon's command line costs more than an error message:
//  - a key given twice is an error (QEMU: the last one wins);
//  - integers with a leading zero are an error (QEMU reads them as octal;
//    sizes, which QEMU reads in decimal, accept them);
//  - unsigned integers reject a sign (QEMU wraps "-1" to 2^64-1), and no
//    number may have surrounding whitespace;
//  - nesting deeper than kMaxOptionDepth levels is an error, so that no input
//    can exhaust the stack.
//
// Thread contract: every function here is pure (no globals, no I/O); any
// thread. An OptionReader is a plain value used by one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioplane/core/error.h"

namespace ioplane {

// Which syntax a tree came from: it decides how the reader types leaves.
enum class OptionSyntax {
    keyval,  // leaves are strings; the reader converts "on", "42", "1G" ...
    json,    // leaves are JSON values; the reader requires the JSON type
};

// One option string, parsed. `root` is always a JSON object.
struct OptionTree {
    nlohmann::json root = nlohmann::json::object();
    OptionSyntax syntax = OptionSyntax::keyval;
};

// Thread contract: any thread; pure. 'text' in single quotes, for messages.
std::string in_quotes(std::string_view s);

// Objects and arrays may nest this deep (the root object is level 1).
inline constexpr int kMaxOptionDepth = 32;

// Thread contract: any thread; pure.
// Parses QEMU's keyval syntax:
//   key-vals = [ key-val { ',' key-val } [ ',' ] ]
//   key-val  = key '=' value | 'help' | '?'
//   key      = fragment { '.' fragment }   (fragment: QAPI name, or digits below the root)
//   value    = any characters, with ',,' standing for one ','
// If `implied_key` is not empty, the first item may be a bare value (no '=' and
// no ',' in it), standing for implied_key=value (`file,node-name=x` is
// `driver=file,...` for --blockdev). A bare `help` or `?` sets *help when
// `help` is not null and is an error otherwise. Objects whose keys are all
// indexes become arrays, which must have no gaps.
Result<OptionTree> parse_keyval(std::string_view text, std::string_view implied_key = {}, bool* help = nullptr);

// Thread contract: any thread; pure.
// Parses a JSON object, as QEMU's JSON parser would: duplicate keys are an
// error, and single-quoted strings (a QEMU extension) are accepted.
Result<OptionTree> parse_json_options(std::string_view text);

// Thread contract: any thread; pure.
// Any JSON value, with the same rules (QMP requests use it).
Result<nlohmann::json> parse_qemu_json(std::string_view text);

// Thread contract: any thread; pure.
// QEMU's rule for QAPI-based options: JSON if the text starts with '{',
// keyval otherwise. JSON never requests help.
Result<OptionTree> parse_option_string(std::string_view text, std::string_view implied_key = {},
                                       bool* help = nullptr);

// Thread contract: any thread; pure.
// Parses the QemuOpts syntax that --chardev uses. Keys are flat (no nesting,
// any characters but '=' and ','); a bare first item is implied_key=value; a
// later bare word `flag` means flag=on and `noflag` flag=off, which QEMU
// deprecates, so each one adds a line to `warnings`. A bare `help` or `?` sets
// *help when `help` is not null and is an error otherwise.
Result<OptionTree> parse_qemu_opts(std::string_view text, std::string_view implied_key,
                                   std::vector<std::string>& warnings, bool* help = nullptr);

// Thread contract: any thread; pure.
// Scalar conversions for keyval values. Their error messages are predicates
// ("expects an integer, got 'x'") that OptionReader prefixes with the key.
// Booleans: on/yes/true/y and off/no/false/n, as qapi_bool_parse().
Result<bool> parse_bool_value(std::string_view text);
// Integers: decimal, or hexadecimal with 0x; signed ones may start with '-'.
Result<uint64_t> parse_uint64_value(std::string_view text);
Result<int64_t> parse_int64_value(std::string_view text);
// Sizes: an integer (decimal or 0x hex) of bytes, or a decimal number with a
// suffix B, K, M, G, T, P or E (any case, powers of 1024); a fraction such as
// 1.5G needs a suffix other than B and is rounded down to whole bytes.
Result<uint64_t> parse_size_value(std::string_view text);

// Typed, checked read access to one object of an OptionTree, for the code
// that owns an option. Every get_* marks its key as used, so that
// check_all_used() can reject what nobody asked for, as QEMU's visitors do.
// Values of the wrong type are errors that name the full key ("cache.direct").
//
// The reader refers to the tree's JSON object, which must outlive it.
class OptionReader {
public:
    explicit OptionReader(const OptionTree& tree) : OptionReader(tree.root, tree.syntax, {}) {}
    // `object` must be a JSON object; `path` prefixes keys in messages
    // ("addr." for the members of addr).
    OptionReader(const nlohmann::json& object, OptionSyntax syntax, std::string path);

    OptionSyntax syntax() const { return syntax_; }
    // The dotted name of `key` in messages: path + key.
    std::string full_name(std::string_view key) const;

    // Whether the object has `key` (does not mark it used).
    bool has(std::string_view key) const;

    // Absent key: std::nullopt. Present with the wrong type: an error.
    Result<std::optional<std::string>> get_string(std::string_view key);
    Result<std::optional<bool>> get_bool(std::string_view key);
    Result<std::optional<uint64_t>> get_uint64(std::string_view key);
    Result<std::optional<int64_t>> get_int64(std::string_view key);
    Result<std::optional<uint64_t>> get_size(std::string_view key);
    // A nested object, as a reader whose path extends this one's. Its own
    // keys are checked by calling check_all_used() on it.
    Result<std::optional<OptionReader>> get_object(std::string_view key);

    // Like get_string, but absence is the error "missing 'key'".
    Result<std::string> require_string(std::string_view key);

    // The raw value (for options whose type depends on it, such as a block
    // child given either as a node name or as an object); marks it used.
    // Null when absent.
    const nlohmann::json* get_raw(std::string_view key);

    // Error "unexpected parameter 'key'" for the first (in key order) key no
    // get_* asked for.
    Result<void> check_all_used() const;
    // The members no get_* asked for, as an object: what a more specific
    // owner (an export type) will read.
    nlohmann::json unused() const;

private:
    const nlohmann::json* find(std::string_view key);

    const nlohmann::json* object_;  // not owned: a member of the caller's tree
    OptionSyntax syntax_;
    std::string path_;
    std::set<std::string, std::less<>> used_;
};

}  // namespace ioplane
