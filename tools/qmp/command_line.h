// What the user types, turned into QMP commands. Typing JSON for every
// argument is tedious, so arguments may be written `key=value`, with dotted
// keys nesting (`file.driver=file`) and values that read as a JSON number,
// true, false or null taking that type; anything else is a string. `key:=JSON`
// gives any JSON value (`key:='"123"'` forces a string), and a single
// argument starting with '{' is the whole arguments object.
#pragma once

#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ioplane::qmp_tool {

// `{"execute": name, "arguments": {...}}` from the words after the command
// name; "arguments" is left out when there are none.
// Thread contract: any thread; pure.
std::expected<nlohmann::json, std::string> build_command(std::string name, std::span<const std::string> args);

// Shell-like word splitting for interactive lines: blanks separate words,
// '...' is literal, "..." and a backslash escape one character.
// Thread contract: any thread; pure.
std::expected<std::vector<std::string>, std::string> split_words(std::string_view line);

// One interactive line: raw JSON (starts with '{', sent as is), or `COMMAND
// ARGS...` where ARGS is either words as above or JSON taken verbatim up to
// the end of the line (no quoting needed). nullopt for a blank line.
// Thread contract: any thread; pure.
std::expected<std::optional<nlohmann::json>, std::string> parse_line(std::string_view line);

}  // namespace ioplane::qmp_tool
