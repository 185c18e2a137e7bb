#include "options.h"

#include <charconv>
#include <cmath>

namespace ioplane::load9p {

const char kUsage[] = R"(usage: ioplane-9pload (--tcp HOST:PORT | --unix PATH) --workload NAME [options]

Drives a 9P2000.L server with one workload for a while, keeping CONCURRENCY
requests outstanding (distinct tags), and prints ops/s and latency as one JSON
line on stdout (and a human line on stderr). Files are set up over 9P in a
work directory it makes under the export root and removes afterwards.

Connection:
  --tcp HOST:PORT        server address ([ADDR]:PORT for IPv6)
  --unix PATH            a unix socket instead
  --aname NAME           Tattach aname: the exported path for diod (default "")
  --uname NAME           Tattach uname (default root)
  --n-uname N            Tattach n_uname (default 0)
  --msize BYTES          msize proposed in Tversion (default 512K); the server may lower it
  --timeout S            fail when the server sends nothing for S seconds (default 10)

Workload:
  --workload NAME        one of:
      getattr            Tgetattr on a file walked to once
      read4k, read1m     Tread at random aligned offsets of a prepared file (lopened once)
      write4k, write1m   Twrite at random aligned offsets of a file it creates (prefilled)
      create-unlink      Twalk (clone the directory fid), Tlcreate a new name, Tclunk,
                         Tunlinkat: one op
      readdir            Twalk (clone), Tlopen a directory of ENTRIES files, Treaddir
                         until empty, Tclunk: one op
      open               Twalk to a file, Tlopen, Tclunk: one op
  --concurrency N        outstanding requests (default 1, at most 4096)
  --duration S           measured seconds (default 10)
  --warmup S             seconds run before measuring (default 0)
  --file-size BYTES      the file of read*/write* (default 64M)
  --entries N            files in the readdir directory (default 1000)
  --seed N               seed of the random offsets (default 1)
  --unlink MODE          how names are unlinked (create-unlink and the clean-up):
      auto               Tunlinkat; if the server answers EOPNOTSUPP (diod 1.0.24 does),
                         Twalk to the name and Tremove from then on, as the spec says a
                         client falls back (default; the set-up probes it before the run)
      unlinkat           Tunlinkat only
      remove             Twalk and Tremove only
  An I/O larger than the negotiated msize allows (msize - 24) is sent as several
  Tread/Twrite messages one after another, as the Linux client does; msgs_per_op says so.

Set-up and output:
  --dir NAME             the work directory's name (default 9pload.PID.RANDOM)
  --keep                 leave the work directory and its files
  --server-pid PID       also report that process's CPU time (utime+stime from
                         /proc/PID/stat) over the measured window, and per op
  -q, --quiet            no human line on stderr
  -h, --help             this text

BYTES take binary suffixes: 4k, 512K, 64M, 1G. Exit status: 0 success,
1 the run failed (connection, protocol error, an Rlerror: the message says
which request), 2 usage error, 130 interrupted.
)";

namespace {

std::expected<double, std::string> seconds(const std::string& flag, const std::string& text, bool zero_ok) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v) || v < 0 || (!zero_ok && v == 0)) {
        return std::unexpected(flag + ": expected " + (zero_ok ? "a number of seconds" : "a positive number of seconds") +
                               ", got '" + text + "'");
    }
    return v;
}

std::expected<uint64_t, std::string> number(const std::string& flag, const std::string& text, uint64_t lo, uint64_t hi) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi) {
        return std::unexpected(flag + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                               "], got '" + text + "'");
    }
    return v;
}

std::expected<uint64_t, std::string> size(const std::string& flag, const std::string& text, uint64_t lo, uint64_t hi) {
    auto v = parse_size(text);
    if (!v || *v < lo || *v > hi) {
        return std::unexpected(flag + ": expected a size in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                               "] bytes (suffixes k, M, G), got '" + text + "'");
    }
    return *v;
}

bool set_workload(Options& o) {
    struct Entry { const char* name; WorkloadKind kind; uint32_t block; };
    static constexpr Entry kWorkloads[] = {
        {"getattr", WorkloadKind::kGetattr, 0},     {"read4k", WorkloadKind::kRead, 4096},
        {"read1m", WorkloadKind::kRead, 1 << 20},   {"write4k", WorkloadKind::kWrite, 4096},
        {"write1m", WorkloadKind::kWrite, 1 << 20}, {"create-unlink", WorkloadKind::kCreateUnlink, 0},
        {"readdir", WorkloadKind::kReaddir, 0},     {"open", WorkloadKind::kOpen, 0},
    };
    for (const Entry& e : kWorkloads) {
        if (o.workload == e.name) {
            o.kind = e.kind;
            o.block_size = e.block;
            return true;
        }
    }
    return false;
}

}  // namespace

std::optional<uint64_t> parse_size(std::string_view text) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    std::string_view suffix(end, size_t(text.data() + text.size() - end));
    unsigned shift = 0;
    if (suffix == "k" || suffix == "K") shift = 10;
    else if (suffix == "m" || suffix == "M") shift = 20;
    else if (suffix == "g" || suffix == "G") shift = 30;
    else if (!suffix.empty()) return std::nullopt;
    if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
    return v << shift;
}

std::expected<Options, std::string> parse_options(std::span<const std::string> args) {
    Options o;
    for (size_t i = 0; i < args.size(); i++) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            o.help = true;
            return o;
        }
        if (a == "--keep") {
            o.keep = true;
            continue;
        }
        if (a == "-q" || a == "--quiet") {
            o.quiet = true;
            continue;
        }
        if (!a.starts_with("--")) return std::unexpected("unexpected argument '" + a + "'");
        if (i + 1 >= args.size()) return std::unexpected(a + " needs a value");
        const std::string& v = args[++i];
        std::expected<void, std::string> ok;
        auto take_u64 = [&](auto parsed, auto& field) {
            if (!parsed) ok = std::unexpected(parsed.error());
            else field = static_cast<std::remove_reference_t<decltype(field)>>(*parsed);
        };
        if (a == "--tcp") o.tcp = v;
        else if (a == "--unix") o.unix_path = v;
        else if (a == "--aname") o.aname = v;
        else if (a == "--uname") o.uname = v;
        else if (a == "--n-uname") take_u64(number(a, v, 0, UINT32_MAX), o.n_uname);
        else if (a == "--workload") {
            o.workload = v;
            if (!set_workload(o)) {
                ok = std::unexpected("--workload: unknown workload '" + v +
                                     "' (getattr, read4k, read1m, write4k, write1m, create-unlink, readdir, open)");
            }
        }
        else if (a == "--concurrency") take_u64(number(a, v, 1, kMaxConcurrency), o.concurrency);
        else if (a == "--duration") take_u64(seconds(a, v, false), o.duration_s);
        else if (a == "--warmup") take_u64(seconds(a, v, true), o.warmup_s);
        else if (a == "--timeout") take_u64(seconds(a, v, false), o.timeout_s);
        else if (a == "--msize") take_u64(size(a, v, 4096, 64 << 20), o.msize);
        else if (a == "--file-size") take_u64(size(a, v, 4096, uint64_t(1) << 50), o.file_size);
        else if (a == "--entries") take_u64(number(a, v, 1, 10'000'000), o.entries);
        else if (a == "--seed") take_u64(number(a, v, 0, UINT64_MAX), o.seed);
        else if (a == "--server-pid") {
            auto n = number(a, v, 1, INT32_MAX);
            if (!n) ok = std::unexpected(n.error());
            else o.server_pid = int(*n);
        }
        else if (a == "--unlink") {
            if (v == "auto") o.unlink = UnlinkMode::kAuto;
            else if (v == "unlinkat") o.unlink = UnlinkMode::kUnlinkat;
            else if (v == "remove") o.unlink = UnlinkMode::kRemove;
            else ok = std::unexpected("--unlink: expected auto, unlinkat or remove, got '" + v + "'");
        }
        else if (a == "--dir") {
            if (v.empty() || v == "." || v == ".." || v.find('/') != std::string::npos) {
                ok = std::unexpected("--dir: expected one path component, got '" + v + "'");
            }
            o.dir = v;
        }
        else return std::unexpected("unknown option '" + a + "'");
        if (!ok) return std::unexpected(ok.error());
    }
    if (o.tcp.empty() == o.unix_path.empty()) return std::unexpected("give one of --tcp HOST:PORT and --unix PATH");
    if (o.workload.empty()) return std::unexpected("--workload is required");
    if (o.block_size && o.file_size < o.block_size) {
        return std::unexpected("--file-size must be at least the workload's block size (" + std::to_string(o.block_size) + ")");
    }
    return o;
}

}  // namespace ioplane::load9p
