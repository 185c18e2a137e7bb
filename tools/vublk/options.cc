#include "options.h"

#include <charconv>
#include <cmath>
#include <functional>
#include <map>

namespace ioplane::vublk {

const char kUsage[] = R"(usage: ioplane-vublk --socket PATH [options]

A vhost-user-blk front end: connects to a back end's socket, shares memory
with it, and drives its virtqueues with a workload (see tools/vublk/README.md).

Workload:
  --rw MODE            read, write, randread, randwrite, randrw (default randread)
  --rwmixread PCT      randrw: percentage of reads (default 50)
  --bs BYTES           request size, a multiple of 512 (default 4096; 4k, 1M...)
  --iodepth N          requests outstanding per queue (default 1)
  --queues N           queues, one thread each (default 1)
  --runtime S          measured seconds (default 5, or 0 with --check,
                       --write-from or --read-to; 0: no workload)
  --ramp S             seconds run before measuring (default 0)
  --wait poll|event    completions: busy-poll the used ring, or sleep on the
                       call eventfd (default event)
  --offset BYTES       the addressed range starts here (default 0)
  --size BYTES         and is this long (default: to the end of the device);
                       each queue works in its own slice of it
  --seed N             random offsets and verify data (default: from the clock)

Checking:
  --verify             write a pattern naming offset and generation, read it
                       back and compare (reads: the range is written first;
                       all written blocks are read back at the end)
  --check LIST         functional checks before the workload, comma-separated:
                       rw, flush, get-id, write-zeroes, discard, all
  --write-from FILE    write FILE to the device at --offset
  --read-to FILE       read --length bytes at --offset into FILE
  --length BYTES       for --read-to

Device set-up:
  --queue-size N       ring entries (default: from iodepth, at least 128)
  --segments N         data descriptors per request (default 1)
  --no-indirect        do not negotiate VIRTIO_RING_F_INDIRECT_DESC
  --no-event-idx       do not negotiate VIRTIO_RING_F_EVENT_IDX
  --no-reply-ack       do not negotiate VHOST_USER_PROTOCOL_F_REPLY_ACK
  --inflight           negotiate VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD and share the
                       in-flight area before the queues start, as QEMU does
  --mem-regions N      guest memory in N memfd regions (1..8, default 1)
  --mem-size BYTES     guest memory size (default: what the queues need)
  --timeout S          a reply or a completion taking longer fails (default 30)

Output:
  --server-pid PID     also report that process's CPU time over the window
  --json               one JSON object on stdout (the human summary on stderr)
  --quiet              no human summary with --json
  -h, --help

Exit status: 0 success; 1 an I/O error, a verify mismatch or a protocol
failure (the message says which); 2 usage; 130 interrupted.
)";

std::optional<uint64_t> parse_size(std::string_view text) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    std::string_view unit(end, size_t(text.data() + text.size() - end));
    unsigned shift = 0;
    if (unit.empty()) shift = 0;
    else if (unit == "k" || unit == "K" || unit == "KiB") shift = 10;
    else if (unit == "m" || unit == "M" || unit == "MiB") shift = 20;
    else if (unit == "g" || unit == "G" || unit == "GiB") shift = 30;
    else if (unit == "t" || unit == "T" || unit == "TiB") shift = 40;
    else return std::nullopt;
    if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
    return v << shift;
}

const char* rw_name(Rw rw) {
    switch (rw) {
    case Rw::kRead: return "read";
    case Rw::kWrite: return "write";
    case Rw::kRandRead: return "randread";
    case Rw::kRandWrite: return "randwrite";
    case Rw::kRandRw: return "randrw";
    }
    return "?";
}

namespace {

std::optional<double> parse_seconds(std::string_view t) {
    double v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size() || !std::isfinite(v) || v < 0) return std::nullopt;
    return v;
}

template <typename T>
std::optional<T> parse_uint(std::string_view t, T min, T max) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size() || v < uint64_t(min) || v > uint64_t(max)) return std::nullopt;
    return T(v);
}

std::optional<unsigned> parse_checks(std::string_view t) {
    static const std::map<std::string_view, unsigned> kNames = {
        {"rw", kCheckRw}, {"flush", kCheckFlush}, {"get-id", kCheckGetId},
        {"write-zeroes", kCheckWriteZeroes}, {"discard", kCheckDiscard}, {"all", kCheckAll}};
    unsigned mask = 0;
    while (!t.empty()) {
        const size_t comma = t.find(',');
        auto it = kNames.find(t.substr(0, comma));
        if (it == kNames.end()) return std::nullopt;
        mask |= it->second;
        t = comma == t.npos ? std::string_view() : t.substr(comma + 1);
    }
    return mask ? std::optional(mask) : std::nullopt;
}

}  // namespace

std::expected<Options, std::string> parse_options(std::span<const std::string> args) {
    Options o;
    using Setter = std::function<bool(const std::string&)>;
    const std::map<std::string, Setter> with_value = {
        {"--socket", [&](const std::string& v) { o.socket = v; return !v.empty(); }},
        {"--rw", [&](const std::string& v) {
             static const std::map<std::string, Rw> kRw = {{"read", Rw::kRead}, {"write", Rw::kWrite},
                 {"randread", Rw::kRandRead}, {"randwrite", Rw::kRandWrite}, {"randrw", Rw::kRandRw}};
             auto it = kRw.find(v);
             if (it == kRw.end()) return false;
             o.rw = it->second;
             return true;
         }},
        {"--rwmixread", [&](const std::string& v) { auto x = parse_uint<unsigned>(v, 0, 100); if (x) o.rwmixread = *x; return bool(x); }},
        {"--bs", [&](const std::string& v) { auto x = parse_size(v); if (x && *x <= (64u << 20)) o.bs = uint32_t(*x); return x && *x <= (64u << 20); }},
        {"--iodepth", [&](const std::string& v) { auto x = parse_uint<uint16_t>(v, 1, 4096); if (x) o.iodepth = *x; return bool(x); }},
        {"--queues", [&](const std::string& v) { auto x = parse_uint<uint16_t>(v, 1, 256); if (x) o.queues = *x; return bool(x); }},
        {"--runtime", [&](const std::string& v) { auto x = parse_seconds(v); if (x) o.runtime_s = *x; return bool(x); }},
        {"--ramp", [&](const std::string& v) { auto x = parse_seconds(v); if (x) o.ramp_s = *x; return bool(x); }},
        {"--wait", [&](const std::string& v) {
             if (v == "poll") o.wait = WaitMode::kPoll;
             else if (v == "event") o.wait = WaitMode::kEvent;
             else return false;
             return true;
         }},
        {"--offset", [&](const std::string& v) { auto x = parse_size(v); if (x) o.offset = *x; return bool(x); }},
        {"--size", [&](const std::string& v) { o.size = parse_size(v); return o.size && *o.size > 0; }},
        {"--seed", [&](const std::string& v) { o.seed = parse_uint<uint32_t>(v, 0, UINT32_MAX); return bool(o.seed); }},
        {"--check", [&](const std::string& v) { auto x = parse_checks(v); if (x) o.checks = *x; return bool(x); }},
        {"--write-from", [&](const std::string& v) { o.write_from = v; return !v.empty(); }},
        {"--read-to", [&](const std::string& v) { o.read_to = v; return !v.empty(); }},
        {"--length", [&](const std::string& v) { o.length = parse_size(v); return o.length && *o.length > 0; }},
        {"--queue-size", [&](const std::string& v) {
             auto x = parse_uint<uint32_t>(v, 1, kMaxQueueSize);
             if (!x || (*x & (*x - 1)) || *x == kMaxQueueSize) return false;  // a power of two the u16 holds
             o.queue_size = uint16_t(*x);
             return true;
         }},
        {"--segments", [&](const std::string& v) { auto x = parse_uint<uint16_t>(v, 1, BlkSlot::kMaxDataSegments); if (x) o.segments = *x; return bool(x); }},
        {"--mem-regions", [&](const std::string& v) { auto x = parse_uint<unsigned>(v, 1, kMaxMemRegions); if (x) o.mem_regions = *x; return bool(x); }},
        {"--mem-size", [&](const std::string& v) { o.mem_size = parse_size(v); return o.mem_size && *o.mem_size > 0; }},
        {"--timeout", [&](const std::string& v) { auto x = parse_seconds(v); if (x && *x > 0) o.timeout_s = *x; return x && *x > 0; }},
        {"--server-pid", [&](const std::string& v) { auto x = parse_uint<int>(v, 1, INT32_MAX); if (x) o.server_pid = *x; return bool(x); }},
    };
    const std::map<std::string, bool*> flags = {
        {"--verify", &o.verify}, {"--inflight", &o.inflight}, {"--json", &o.json}, {"--quiet", &o.quiet}, {"--help", &o.help}, {"-h", &o.help}};
    const std::map<std::string, bool*> negations = {
        {"--no-indirect", &o.indirect}, {"--no-event-idx", &o.event_idx}, {"--no-reply-ack", &o.reply_ack}};

    for (size_t i = 0; i < args.size(); i++) {
        const std::string& a = args[i];
        if (auto f = flags.find(a); f != flags.end()) {
            *f->second = true;
        } else if (auto n = negations.find(a); n != negations.end()) {
            *n->second = false;
        } else if (auto w = with_value.find(a); w != with_value.end()) {
            if (i + 1 >= args.size()) return std::unexpected(a + " needs a value");
            if (!w->second(args[++i])) return std::unexpected("bad value for " + a + ": '" + args[i] + "'");
        } else {
            return std::unexpected("unknown option '" + a + "' (--help lists them)");
        }
    }
    if (o.help) return o;
    if (o.socket.empty()) return std::unexpected("--socket PATH is required");
    if (o.bs == 0 || o.bs % kSectorSize) return std::unexpected("--bs must be a positive multiple of 512");
    if (o.offset % kSectorSize) return std::unexpected("--offset must be a multiple of 512");
    if (o.segments > o.bs / kSectorSize) return std::unexpected("--segments is more than --bs has sectors");
    if (!o.write_from.empty() && !o.read_to.empty()) return std::unexpected("--write-from and --read-to exclude each other");
    if (!o.read_to.empty() && !o.length) return std::unexpected("--read-to needs --length");
    if (o.length && *o.length % kSectorSize) return std::unexpected("--length must be a multiple of 512");
    if (!o.runtime_s) o.runtime_s = (o.checks || !o.write_from.empty() || !o.read_to.empty()) ? 0.0 : 5.0;
    if (*o.runtime_s == 0 && o.ramp_s > 0) return std::unexpected("--ramp without a workload (--runtime 0)");
    return o;
}

}  // namespace ioplane::vublk
