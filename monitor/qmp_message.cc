#include "qmp_message.h"

#include "ioplane/core/keyval.h"
#include "qemu_json.h"

namespace ioplane::monitor {

using nlohmann::json;

QmpError generic_error(std::string desc) { return {"GenericError", std::move(desc)}; }
QmpError command_not_found(const std::string& command) {
    return {"CommandNotFound", "The command " + command + " has not been found"};
}

std::expected<QmpRequest, BadRequest> parse_request(std::string_view text) {
    auto parsed = parse_qemu_json(text);
    if (!parsed) return std::unexpected(BadRequest{generic_error("JSON parse error, " + parsed.error().message), {}});
    json& root = *parsed;
    if (!root.is_object()) return std::unexpected(BadRequest{generic_error("QMP input must be a JSON object"), {}});
    QmpRequest req;
    if (auto it = root.find("id"); it != root.end()) req.id = *it;
    auto bad = [&req](std::string desc) { return std::unexpected(BadRequest{generic_error(std::move(desc)), req.id}); };
    const bool has_execute = root.contains("execute"), has_oob = root.contains("exec-oob");
    if (has_execute && has_oob) return bad("QMP input member 'execute' and 'exec-oob' are mutually exclusive");
    if (!has_execute && !has_oob) return bad("QMP input lacks member 'execute'");
    for (auto& [key, value] : root.items()) {
        if (key == "execute" || key == "exec-oob") {
            if (!value.is_string()) return bad("QMP input member '" + key + "' must be a string");
            req.execute = value.get<std::string>();
            req.oob = key == "exec-oob";
        } else if (key == "arguments") {
            if (!value.is_object()) return bad("QMP input member 'arguments' must be an object");
            req.arguments = std::move(value);
        } else if (key != "id") {
            return bad("QMP input member '" + key + "' is unexpected");
        }
    }
    return req;
}

namespace {

std::string finish(const json& message, bool pretty) {
    // QEMU's monitor sends every "\n" as "\r\n", the pretty form's too, and
    // ends each message with one. (Strings never hold a raw newline: they
    // are escaped.)
    std::string text;
    for (char c : to_qemu_json(message, pretty)) {
        if (c == '\n') text += '\r';
        text += c;
    }
    return text + "\r\n";
}

void add_id(json& message, const std::optional<json>& id) {
    if (id) message["id"] = *id;
}

}  // namespace

json version_info() {
    return {{"qemu", {{"major", kQemuMajor}, {"minor", kQemuMinor}, {"micro", kQemuMicro}}},
            {"package", "ioplane " IOPLANE_VERSION}};
}

std::string format_greeting(bool pretty) {
    // No capabilities: ioplane has no out-of-band execution.
    return finish({{"QMP", {{"version", version_info()}, {"capabilities", json::array()}}}}, pretty);
}

std::string format_return(const json& value, const std::optional<json>& id, bool pretty) {
    json message = {{"return", value}};
    add_id(message, id);
    return finish(message, pretty);
}

std::string format_error(const QmpError& error, const std::optional<json>& id, bool pretty) {
    json message = {{"error", {{"class", error.cls}, {"desc", error.desc}}}};
    add_id(message, id);
    return finish(message, pretty);
}

std::string format_event(std::string_view name, const json& data, int64_t micros, bool pretty) {
    json message = {{"event", name},
                    {"timestamp", {{"seconds", micros / 1'000'000}, {"microseconds", micros % 1'000'000}}}};
    if (!data.is_null()) message["data"] = data;
    return finish(message, pretty);
}

}  // namespace ioplane::monitor
