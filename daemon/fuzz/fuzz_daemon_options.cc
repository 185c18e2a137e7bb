// libFuzzer target over the daemon's option parsers: keyval, JSON and QemuOpts
// strings, the typed reader and the per-option parsers on what they produce,
// and the whole command line. Besides "no crash, no sanitizer report" it
// checks properties that must hold for every input:
//  - a keyval tree written back as keyval parses to the same tree;
//  - an integer or size that parses prints back to the same value.
//
// Input: the first byte picks the mode, the rest is the text (for the command
// line: arguments separated by NUL bytes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ioplane/core/keyval.h"
#include "daemon/options.h"

using namespace ioplane;
using namespace ioplane::daemon;
using nlohmann::json;

namespace {

void check(bool cond) {
    if (!cond) std::abort();
}

// Writes a keyval tree back as keyval text: "a.b=v,l.0=x", commas doubled.
void flatten(const json& v, const std::string& prefix, std::string& out) {
    if (v.is_object()) {
        for (auto it = v.begin(); it != v.end(); ++it) {
            flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
        }
    } else if (v.is_array()) {
        for (size_t i = 0; i < v.size(); i++) flatten(v[i], prefix + "." + std::to_string(i), out);
    } else {
        check(v.is_string());
        if (!out.empty()) out += ',';
        out += prefix;
        out += '=';
        for (const char c : v.get_ref<const std::string&>()) {
            out += c;
            if (c == ',') out += ',';
        }
    }
}

// Every typed getter on every member, recursively: conversions must fail
// cleanly, never crash.
void read_everything(OptionReader r, const json& object, int depth) {
    for (auto it = object.begin(); it != object.end(); ++it) {
        const std::string& key = it.key();
        (void)r.get_string(key);
        (void)r.get_bool(key);
        (void)r.get_uint64(key);
        (void)r.get_int64(key);
        (void)r.get_size(key);
        auto sub = r.get_object(key);
        if (sub && *sub && depth < 4) read_everything(**sub, it.value(), depth + 1);
    }
    (void)r.check_all_used();
    (void)r.unused();
}

void check_scalars(std::string_view text) {
    if (auto v = parse_uint64_value(text)) check(parse_uint64_value(std::to_string(*v)) == *v);
    if (auto v = parse_int64_value(text)) check(parse_int64_value(std::to_string(*v)) == *v);
    if (auto v = parse_size_value(text)) check(parse_size_value(std::to_string(*v)) == *v);
    (void)parse_bool_value(text);
}

void run_option_parsers(const OptionTree& tree) {
    read_everything(OptionReader(tree), tree.root, 0);
    std::vector<std::string> warnings;
    (void)parse_blockdev(tree);
    (void)parse_object(tree, warnings);
    (void)parse_nbd_server(tree);
    (void)parse_export(tree);
    (void)parse_monitor(tree);
    (void)parse_chardev(tree);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint8_t mode = data[0] % 6;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

    switch (mode) {
        case 0:
        case 1: {
            bool help = false;
            auto tree = parse_keyval(text, mode == 0 ? std::string_view{} : std::string_view{"driver"}, &help);
            if (!tree) break;
            std::string again;
            flatten(tree->root, "", again);
            auto reparsed = parse_keyval(again);
            check(reparsed.has_value());
            check(reparsed->root == tree->root);
            run_option_parsers(*tree);
            break;
        }
        case 2: {
            auto tree = parse_json_options(text);
            if (tree) run_option_parsers(*tree);
            break;
        }
        case 3: {
            std::vector<std::string> warnings;
            bool help = false;
            auto tree = parse_qemu_opts(text, "backend", warnings, &help);
            if (tree) run_option_parsers(*tree);
            break;
        }
        case 4:
            check_scalars(text);
            break;
        case 5: {
            // NUL-separated arguments.
            std::vector<std::string> args{"ioplane-storage-daemon"};
            size_t start = 0;
            for (size_t i = 0; i <= text.size() && args.size() < 64; i++) {
                if (i == text.size() || text[i] == '\0') {
                    args.emplace_back(text.substr(start, i - start));
                    start = i + 1;
                }
            }
            std::vector<const char*> argv;
            for (const auto& a : args) argv.push_back(a.c_str());
            argv.push_back(nullptr);
            auto config = parse_command_line(static_cast<int>(args.size()), argv.data());
            if (config) {
                for (const auto& b : config->blockdevs) (void)blockdev_node_names(b);
            }
            break;
        }
    }
    return 0;
}
