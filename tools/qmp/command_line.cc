#include "command_line.h"

#include <cctype>

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

std::unexpected<std::string> error(std::string message) { return std::unexpected(std::move(message)); }

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// Integers beyond 64 bits parse as doubles: sending a rounded size would be
// worse than the server rejecting a string, so those stay strings.
json typed_value(const std::string& text) {
    if (text.empty() || trim(text).size() != text.size()) return text;
    json v = json::parse(text, nullptr, false);
    if (v.is_boolean() || v.is_null() || v.is_number_integer()) return v;
    if (v.is_number_float() && text.find_first_of(".eE") != std::string::npos) return v;
    return text;
}

std::expected<void, std::string> set_path(json& root, std::string_view key, json value) {
    json* node = &root;
    for (size_t start = 0;;) {
        size_t dot = key.find('.', start);
        std::string part(key.substr(start, dot == key.npos ? key.npos : dot - start));
        if (part.empty()) return error("empty part in key '" + std::string(key) + "'");
        auto it = node->find(part);
        if (dot == key.npos) {
            if (it != node->end()) return error("key '" + std::string(key) + "' given twice");
            (*node)[part] = std::move(value);
            return {};
        }
        if (it == node->end()) node = &((*node)[part] = json::object());
        else if (it->is_object()) node = &*it;
        else return error("key '" + std::string(key.substr(0, dot)) + "' is both a value and an object");
        start = dot + 1;
    }
}
}  // namespace

std::expected<json, std::string> build_command(std::string name, std::span<const std::string> args) {
    if (name.empty()) return error("empty command name");
    json arguments = json::object();
    if (args.size() == 1 && args[0].starts_with('{')) {
        arguments = json::parse(args[0], nullptr, false);
        if (!arguments.is_object()) return error("arguments are not a valid JSON object: " + args[0]);
    } else {
        for (const std::string& arg : args) {
            size_t eq = arg.find('=');
            if (eq == arg.npos || eq == 0) return error("expected key=value or key:=JSON, got '" + arg + "'");
            std::string_view key(arg.data(), eq);
            json value;
            if (key.ends_with(':')) {
                key.remove_suffix(1);
                value = json::parse(arg.substr(eq + 1), nullptr, false);
                if (value.is_discarded()) return error("invalid JSON after '" + std::string(key) + ":='");
            } else {
                value = typed_value(arg.substr(eq + 1));
            }
            if (auto r = set_path(arguments, key, std::move(value)); !r) return std::unexpected(r.error());
        }
    }
    json command = {{"execute", std::move(name)}};
    if (!arguments.empty()) command["arguments"] = std::move(arguments);
    return command;
}

std::expected<std::vector<std::string>, std::string> split_words(std::string_view line) {
    std::vector<std::string> words;
    std::string word;
    bool in_word = false;
    for (size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (std::isspace(static_cast<unsigned char>(c))) {
            if (in_word) words.push_back(std::move(word));
            word.clear();
            in_word = false;
            continue;
        }
        in_word = true;
        if (c == '\'') {
            size_t end = line.find('\'', i + 1);
            if (end == line.npos) return error("unterminated ' quote");
            word.append(line.substr(i + 1, end - i - 1));
            i = end;
        } else if (c == '"') {
            for (++i; i < line.size() && line[i] != '"'; ++i) {
                if (line[i] == '\\' && i + 1 < line.size()) ++i;
                word += line[i];
            }
            if (i >= line.size()) return error("unterminated \" quote");
        } else if (c == '\\') {
            if (++i == line.size()) return error("backslash at end of line");
            word += line[i];
        } else {
            word += c;
        }
    }
    if (in_word) words.push_back(std::move(word));
    return words;
}

std::expected<std::optional<json>, std::string> parse_line(std::string_view line) {
    line = trim(line);
    if (line.empty()) return std::nullopt;
    if (line.front() == '{') {
        json command = json::parse(line, nullptr, false);
        if (!command.is_object()) return error("not a valid JSON object");
        return command;
    }
    size_t blank = line.find_first_of(" \t");
    std::string name(line.substr(0, blank));
    std::string_view rest = blank == line.npos ? std::string_view() : trim(line.substr(blank));
    if (rest.starts_with('{')) {
        std::string verbatim(rest);
        return build_command(std::move(name), std::span(&verbatim, 1));
    }
    auto words = split_words(rest);
    if (!words) return std::unexpected(words.error());
    return build_command(std::move(name), *words);
}

}  // namespace ioplane::qmp_tool
