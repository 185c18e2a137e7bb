// ioplane-9pload's command line: `--flag value` options, checked before
// anything connects.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ioplane::load9p {

enum class WorkloadKind { kGetattr, kRead, kWrite, kCreateUnlink, kReaddir, kOpen };

// How a name is unlinked: Tunlinkat, or (as the spec says a client falls
// back to when a server answers EOPNOTSUPP, e.g. diod 1.0.24) Twalk to the
// name and Tremove.
enum class UnlinkMode { kAuto, kUnlinkat, kRemove };

struct Options {
    std::string tcp;       // HOST:PORT, or
    std::string unix_path; // a unix socket
    std::string aname;
    std::string uname = "root";
    uint32_t n_uname = 0;
    std::string workload;  // as typed: "read4k"
    WorkloadKind kind = WorkloadKind::kGetattr;
    uint32_t block_size = 0;  // read*/write*: bytes per op
    double duration_s = 10;
    double warmup_s = 0;
    uint32_t concurrency = 1;
    uint32_t msize = 512 * 1024;
    uint64_t file_size = 64 << 20;
    uint32_t entries = 1000;
    UnlinkMode unlink = UnlinkMode::kAuto;
    std::string dir;  // work directory under the export root; empty: chosen
    bool keep = false;
    std::optional<int> server_pid;
    double timeout_s = 10;
    uint64_t seed = 1;
    bool quiet = false;
    bool help = false;
};

inline constexpr uint32_t kMaxConcurrency = 4096;

extern const char kUsage[];

// The words after the program name. Errors are one-line messages.
std::expected<Options, std::string> parse_options(std::span<const std::string> args);

// "4096", "4k", "64M", "1G" (binary units).
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace ioplane::load9p
