// QMP messages (spec: qmp-spec.rst): requests parsed from one JSON text, and
// the server's texts — greeting, success and error responses, events —
// formatted as QEMU formats them, so that clients written for QEMU read them
// unchanged.
//
// Thread contract: every function here is pure; any thread.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ioplane::monitor {

// An error response's "class" and "desc".
struct QmpError {
    std::string cls;
    std::string desc;
};

// Thread contract: any thread; pure.
QmpError generic_error(std::string desc);
QmpError command_not_found(const std::string& command);

// What a command returns: the "return" value, or an error.
using QmpResult = std::expected<nlohmann::json, QmpError>;

struct QmpRequest {
    std::string execute;
    nlohmann::json arguments = nlohmann::json::object();
    std::optional<nlohmann::json> id;  // echoed in the response, any JSON value
    bool oob = false;                  // "exec-oob" rather than "execute"
};

// A request that could not be read, with its id when the id itself was fine.
struct BadRequest {
    QmpError error;
    std::optional<nlohmann::json> id;
};

// Thread contract: any thread; pure.
// Checks one JSON text as QEMU's qmp_dispatch does: an object with a string
// "execute" (or "exec-oob"), an optional object "arguments", an optional
// "id", and no other member.
std::expected<QmpRequest, BadRequest> parse_request(std::string_view text);

// Thread contract: any thread; pure.
// The texts the server sends, each a JSON object followed by "\r\n" as QEMU
// ends them; `pretty` indents as QEMU's pretty=on does.
std::string format_greeting(bool pretty);
std::string format_return(const nlohmann::json& value, const std::optional<nlohmann::json>& id, bool pretty);
std::string format_error(const QmpError& error, const std::optional<nlohmann::json>& id, bool pretty);
// `micros_since_epoch` is the wall-clock time at which the event happened.
std::string format_event(std::string_view name, const nlohmann::json& data, int64_t micros_since_epoch, bool pretty);

// The QEMU version whose QMP interface ioplane implements; what the greeting
// and query-version report, so that tools that check versions accept us.
inline constexpr int kQemuMajor = 7, kQemuMinor = 2, kQemuMicro = 0;
// Thread contract: any thread; pure. query-version's return value.
nlohmann::json version_info();

}  // namespace ioplane::monitor
