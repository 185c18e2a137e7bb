// The ways ioplane-qmp runs once connected (main.cc picks one), and what they share.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "qmp_client.h"

namespace ioplane::qmp_tool {

// Scripts tell a failed command from a broken setup by these.
enum ExitStatus : int { kSuccess = 0, kCommandFailed = 1, kBroken = 2 };

struct Options {
    bool raw = false;  // whole replies, compact, instead of the pretty "return" value
    Clock::duration timeout = std::chrono::seconds(30);
};

struct TopOptions {
    Clock::duration interval = std::chrono::seconds(1);
    std::optional<uint64_t> count;  // tables to print; none: until interrupted
};

// A positive, finite number of seconds.
// Thread contract: any thread; pure.
std::optional<Clock::duration> parse_seconds(const std::string& text);

// Prints the return value (or with `raw` the reply) on stdout, or an error
// reply as `CLASS: desc` on stderr; returns the exit status it means.
// Thread contract: single-threaded program.
ExitStatus print_reply(const nlohmann::json& reply, bool raw);

// The words after "top".
// Thread contract: any thread; pure.
std::expected<TopOptions, std::string> parse_top_options(std::span<const std::string> args);

// Thread contract: single-threaded program.
ExitStatus run_top(QmpClient& client, const Options& options, const TopOptions& top);

// Commands from stdin, one per line, replies and events on stdout.
// Thread contract: single-threaded program.
ExitStatus run_interactive(QmpClient& client, const Options& options);

}  // namespace ioplane::qmp_tool
