// ioplane-qmp: send QMP commands from a shell (see README.md).
#include <cmath>
#include <iostream>
#include <vector>

#include "command_line.h"
#include "modes.h"

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

constexpr char kUsage[] = R"(usage: ioplane-qmp (-s SOCKET | -H HOST:PORT) [--timeout SECONDS] [--raw] [COMMAND [ARGS...]]
       ioplane-qmp (-s SOCKET | -H HOST:PORT) [--timeout SECONDS] top [-i SECONDS] [-n COUNT]
ARGS: key=value (dotted keys nest; numbers, true, false, null are typed), key:=JSON, or one JSON object.
Without COMMAND, commands are read from stdin, one per line ("exit" or EOF ends).
Exit status: 0 success, 1 the server returned an error, 2 usage or connection problem.
)";

ExitStatus usage_error(const std::string& message) {
    std::cerr << "ioplane-qmp: " << message << " (see --help)\n";
    return kBroken;
}

std::string text(const json& value, int indent) { return value.dump(indent, ' ', false, json::error_handler_t::replace); }

ExitStatus run(std::span<const std::string> args) {
    Options options;
    std::string address;
    bool tcp = false;
    size_t i = 0;
    for (; i < args.size() && args[i].starts_with('-'); ++i) {
        const std::string& a = args[i];
        bool has_value = i + 1 < args.size();
        if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            return kSuccess;
        } else if (a == "--raw") {
            options.raw = true;
        } else if ((a == "-s" || a == "-H") && has_value) {
            address = args[++i];
            tcp = a == "-H";
        } else if (a == "--timeout" && has_value) {
            auto timeout = parse_seconds(args[++i]);
            if (!timeout) return usage_error("--timeout needs a positive number of seconds");
            options.timeout = *timeout;
        } else {
            return usage_error("unknown option or missing value: " + a);
        }
    }
    if (address.empty()) return usage_error("-s SOCKET or -H HOST:PORT is required");
    auto words = args.subspan(i);
    // Everything is checked before connecting: a typo should not need a server to be reported.
    std::optional<TopOptions> top;
    std::optional<json> command;
    if (!words.empty() && words[0] == "top") {
        auto parsed = parse_top_options(words.subspan(1));
        if (!parsed) return usage_error(parsed.error());
        top = *parsed;
    } else if (!words.empty()) {
        auto parsed = build_command(words[0], words.subspan(1));
        if (!parsed) return usage_error(parsed.error());
        command = std::move(*parsed);
    }
    auto client = QmpClient::connect(address, tcp, options.timeout);
    if (!client) {
        std::cerr << "ioplane-qmp: " << client.error() << "\n";
        return kBroken;
    }
    if (top) return run_top(*client, options, *top);
    if (!command) return run_interactive(*client, options);
    auto reply = client->execute(std::move(*command), options.timeout);
    if (!reply) {
        std::cerr << "ioplane-qmp: " << reply.error() << "\n";
        return kBroken;
    }
    return print_reply(*reply, options.raw);
}
}  // namespace

std::optional<Clock::duration> parse_seconds(const std::string& text) {
    char* end = nullptr;
    double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(seconds) || seconds <= 0 || seconds > 1e6) return std::nullopt;
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

ExitStatus print_reply(const json& reply, bool raw) {
    if (raw) std::cout << text(reply, -1) << std::endl;
    if (auto error = reply.find("error"); error != reply.end()) {
        auto member = [&](const char* key) {
            auto it = error->is_object() ? error->find(key) : error->end();
            return it != error->end() && it->is_string() ? it->get<std::string>() : text(*error, -1);
        };
        std::cerr << member("class") << ": " << member("desc") << std::endl;
        return kCommandFailed;
    }
    auto value = reply.find("return");
    if (value == reply.end()) {
        std::cerr << "ioplane-qmp: unexpected message from the server: " << text(reply, -1).substr(0, 200) << "\n";
        return kBroken;
    }
    if (!raw) std::cout << text(*value, 2) << std::endl;
    return kSuccess;
}

}  // namespace ioplane::qmp_tool

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    return ioplane::qmp_tool::run(args);
}
