#include <unistd.h>

#include <charconv>
#include <iostream>
#include <thread>

#include "modes.h"
#include "stats_table.h"

namespace ioplane::qmp_tool {

std::expected<TopOptions, std::string> parse_top_options(std::span<const std::string> args) {
    TopOptions top;
    for (size_t i = 0; i < args.size(); i += 2) {
        if (i + 1 == args.size()) return std::unexpected("top: " + args[i] + " needs a value");
        const std::string& value = args[i + 1];
        if (args[i] == "-i") {
            auto interval = parse_seconds(value);
            if (!interval) return std::unexpected("top: -i needs a positive number of seconds");
            top.interval = *interval;
        } else if (args[i] == "-n") {
            uint64_t count = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), count);
            if (ec != std::errc() || end != value.data() + value.size() || count == 0)
                return std::unexpected("top: -n needs a positive integer");
            top.count = count;
        } else {
            return std::unexpected("top: unknown option " + args[i]);
        }
    }
    return top;
}

ExitStatus run_top(QmpClient& client, const Options& options, const TopOptions& top) {
    std::vector<ExportStats> previous;
    auto sample = [&]() -> std::expected<std::vector<ExportStats>, ExitStatus> {
        auto reply = client.execute({{"execute", "x-query-export-stats"}}, options.timeout);
        client.take_events();  // nobody is shown events here; drop them so they do not pile up
        if (!reply) {
            std::cerr << "ioplane-qmp: " << reply.error() << "\n";
            return std::unexpected(kBroken);
        }
        if (!reply->contains("return")) return std::unexpected(print_reply(*reply, false));
        auto stats = parse_export_stats((*reply)["return"]);
        if (!stats) {
            std::cerr << "ioplane-qmp: " << stats.error() << "\n";
            return std::unexpected(kBroken);
        }
        return std::move(*stats);
    };
    auto first = sample();
    if (!first) return first.error();
    previous = std::move(*first);
    // Rates need two samples, so the first table comes one interval after start.
    auto taken = Clock::now();
    bool tty = ::isatty(STDOUT_FILENO);
    for (uint64_t shown = 0; !top.count || shown < *top.count; ++shown) {
        std::this_thread::sleep_until(taken + top.interval);
        auto current = sample();
        if (!current) return current.error();
        auto now = Clock::now();
        auto rows = compute_rows(previous, *current, std::chrono::duration<double>(now - taken).count());
        // Only a terminal gets redrawn in place; piped output keeps every table, for scripts and tests.
        if (tty) std::cout << "\x1b[H\x1b[2J";
        else if (shown > 0) std::cout << "\n";
        std::cout << render_table(rows) << std::flush;
        previous = std::move(*current);
        taken = now;
    }
    return kSuccess;
}

}  // namespace ioplane::qmp_tool
