#include "workloads.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

namespace ioplane::load9p {
namespace {

uint64_t now_ns() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

double client_cpu_s() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// utime+stime of a whole process (all its threads), in seconds.
std::optional<double> process_cpu_s(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t paren = s.rfind(')');
    if (paren == std::string::npos) return std::nullopt;
    std::istringstream in(s.substr(paren + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    // After "pid (comm) ": state is field 3; utime and stime are 14 and 15.
    for (int i = 3; i <= 15 && in >> field; i++) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    if (!in) return std::nullopt;
    return double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
}

// xorshift64*: cheap, and the same offsets for the same seed.
class Random {
public:
    explicit Random(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        s_ ^= s_ >> 12;
        s_ ^= s_ << 25;
        s_ ^= s_ >> 27;
        return s_ * 0x2545F4914F6CDD1Dull;
    }

private:
    uint64_t s_;
};

std::vector<uint8_t> pattern(size_t size, uint64_t seed) {
    std::vector<uint8_t> p(size);
    Random r(seed ^ 0x5eed);
    for (size_t i = 0; i + 8 <= size; i += 8) {
        const uint64_t v = r.next();
        std::memcpy(&p[i], &v, 8);
    }
    return p;
}

Result<void> protocol_error(const char* reply) { return fail(EPROTO, std::string("malformed ") + reply); }

// Creates an empty file `name` in the work directory.
Result<void> create_file(Session& s, std::string_view name) {
    if (auto w = s.walk(kWorkFid, kTempFid, {}); !w) return w;
    auto c = s.lcreate(kTempFid, name, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (!c) return std::unexpected(c.error());
    return s.clunk(kTempFid);
}

// ---------------------------------------------------------------- getattr

class GetattrWorkload final : public Workload {
public:
    using Workload::Workload;
    Result<void> prepare() override {
        if (auto c = create_file(session_, "getattr"); !c) return c;
        const std::string_view name = "getattr";
        return session_.walk(kWorkFid, kFileFid, std::span(&name, 1));
    }
    void start(Slot& slot) override {
        slot.expect = fs9p::Rgetattr;
        put_getattr(session_.connection().out(), slot.tag, kFileFid, fs9p::kGetattrBasic);
    }
    Result<bool> reply(Slot&, const Message& r) override {
        if (!get_getattr(r.body)) return std::unexpected(protocol_error("Rgetattr").error());
        return true;
    }
};

// ---------------------------------------------------------------- read*, write*

class IoWorkload final : public Workload {
public:
    IoWorkload(Session& s, const Options& o)
        : Workload(s), write_(o.kind == WorkloadKind::kWrite), block_(o.block_size), file_size_(o.file_size),
          blocks_(o.file_size / o.block_size), random_(o.seed), data_(pattern(s.max_io(), o.seed)) {}

    Result<void> prepare() override {
        chunk_ = std::min(block_, session_.max_io());
        if (write_) {
            // Twrite to a file it creates: the lcreated fid itself, prefilled
            // so that the run overwrites rather than allocates.
            if (auto w = session_.walk(kWorkFid, kFileFid, {}); !w) return w;
            auto c = session_.lcreate(kFileFid, "data", O_RDWR | O_CREAT | O_EXCL, 0644);
            if (!c) return std::unexpected(c.error());
            if (c->iounit) chunk_ = std::min(chunk_, c->iounit);
            return session_.fill(kFileFid, file_size_, data_);
        }
        if (auto w = session_.walk(kWorkFid, kTempFid, {}); !w) return w;
        auto c = session_.lcreate(kTempFid, "data", O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (!c) return std::unexpected(c.error());
        if (auto f = session_.fill(kTempFid, file_size_, data_); !f) return f;
        if (auto k = session_.clunk(kTempFid); !k) return k;
        const std::string_view name = "data";
        if (auto w = session_.walk(kWorkFid, kFileFid, std::span(&name, 1)); !w) return w;
        auto o = session_.lopen(kFileFid, O_RDONLY);
        if (!o) return std::unexpected(o.error());
        if (o->iounit) chunk_ = std::min(chunk_, o->iounit);
        return {};
    }
    void start(Slot& slot) override {
        slot.offset = (random_.next() % blocks_) * block_;
        slot.done = 0;
        send(slot);
    }
    Result<bool> reply(Slot& slot, const Message& r) override {
        uint32_t n = 0;
        if (write_) {
            auto c = get_write(r.body);
            if (!c) return std::unexpected(protocol_error("Rwrite").error());
            n = *c;
        } else {
            auto d = get_data(r.body);
            if (!d) return std::unexpected(protocol_error("Rread").error());
            n = uint32_t(d->size());
        }
        if (n != slot.pending) {
            return fail(EIO, std::string(write_ ? "Twrite" : "Tread") + " at offset " +
                                 std::to_string(slot.offset + slot.done) + ": " + std::to_string(n) + " of " +
                                 std::to_string(slot.pending) + " bytes");
        }
        slot.done += n;
        if (slot.done < block_) {
            send(slot);
            return false;
        }
        return true;
    }
    uint64_t bytes_per_op() const override { return block_; }

private:
    void send(Slot& slot) {
        auto& out = session_.connection().out();
        slot.pending = uint32_t(std::min<uint64_t>(chunk_, block_ - slot.done));
        if (write_) {
            slot.expect = fs9p::Rwrite;
            put_write_header(out, slot.tag, kFileFid, slot.offset + slot.done, slot.pending);
            session_.connection().append_external(std::span(data_).first(slot.pending));
        } else {
            slot.expect = fs9p::Rread;
            put_read(out, slot.tag, kFileFid, slot.offset + slot.done, slot.pending);
        }
    }

    const bool write_;
    const uint32_t block_;
    const uint64_t file_size_;
    const uint64_t blocks_;
    uint32_t chunk_ = 0;  // bytes per request
    Random random_;
    const std::vector<uint8_t> data_;  // what is written (max_io() bytes)
};

// ---------------------------------------------------------------- create-unlink

class CreateUnlinkWorkload final : public Workload {
public:
    using Workload::Workload;
    // Learns how this server unlinks (UnlinkMode::kAuto) before the run.
    Result<void> prepare() override {
        if (auto c = create_file(session_, "probe"); !c) return c;
        return session_.unlinkat(kWorkFid, "probe", 0);
    }
    void start(Slot& slot) override {
        slot.seq++;
        auto r = std::to_chars(slot.name, slot.name + sizeof slot.name, slot.tag);
        *r.ptr++ = '.';
        r = std::to_chars(r.ptr, slot.name + sizeof slot.name, slot.seq);
        slot.name_len = uint8_t(r.ptr - slot.name);
        slot.step = kClone;
        slot.expect = fs9p::Rwalk;
        put_walk(session_.connection().out(), slot.tag, kWorkFid, slot.fid, {});
    }
    // Twalk (clone the directory), Tlcreate, Tclunk, then Tunlinkat or
    // Twalk to the name and Tremove.
    Result<bool> reply(Slot& slot, const Message& r) override {
        auto& out = session_.connection().out();
        const std::string_view name(slot.name, slot.name_len);
        switch (slot.step) {
        case kClone:
            if (get_walk(r.body) != 0) return std::unexpected(protocol_error("Rwalk").error());
            slot.fid_live = true;
            slot.step = kCreate;
            slot.expect = fs9p::Rlcreate;
            put_lcreate(out, slot.tag, slot.fid, name, O_WRONLY | O_CREAT | O_EXCL, 0644, 0);
            return false;
        case kCreate:
            if (!get_open(r.body)) return std::unexpected(protocol_error("Rlcreate").error());
            slot.step = kClunk;
            slot.expect = fs9p::Rclunk;
            put_clunk(out, slot.tag, slot.fid);
            return false;
        case kClunk:
            if (!get_empty(r.body)) return std::unexpected(protocol_error("Rclunk").error());
            slot.fid_live = false;
            if (session_.unlink_by_remove()) {
                slot.step = kWalkToName;
                slot.expect = fs9p::Rwalk;
                put_walk(out, slot.tag, kWorkFid, slot.fid, std::span(&name, 1));
            } else {
                slot.step = kUnlink;
                slot.expect = fs9p::Runlinkat;
                put_unlinkat(out, slot.tag, kWorkFid, name, 0);
            }
            return false;
        case kWalkToName:
            if (get_walk(r.body) != 1) return fail(EPROTO, "Twalk to a created name did not walk 1 name");
            slot.step = kRemove;
            slot.expect = fs9p::Rremove;
            put_remove(out, slot.tag, slot.fid);  // clunks the fid
            return false;
        default:  // kUnlink, kRemove
            if (!get_empty(r.body)) return std::unexpected(protocol_error("Runlinkat/Rremove").error());
            return true;
        }
    }

private:
    enum Step : uint8_t { kClone, kCreate, kClunk, kUnlink, kWalkToName, kRemove };
};

// ---------------------------------------------------------------- readdir

class ReaddirWorkload final : public Workload {
public:
    ReaddirWorkload(Session& s, const Options& o) : Workload(s), entries_(o.entries) {}
    Result<void> prepare() override {
        if (auto m = session_.mkdir(kWorkFid, "readdir.d", 0755); !m) return std::unexpected(m.error());
        const std::string_view dir = "readdir.d";
        if (auto w = session_.walk(kWorkFid, kSubdirFid, std::span(&dir, 1)); !w) return w;
        char name[32];
        for (uint32_t i = 0; i < entries_; i++) {
            std::snprintf(name, sizeof name, "entry-%07u", i);
            if (auto w = session_.walk(kSubdirFid, kTempFid, {}); !w) return w;
            if (auto c = session_.lcreate(kTempFid, name, O_WRONLY | O_CREAT | O_EXCL, 0644); !c) {
                return std::unexpected(c.error());
            }
            if (auto k = session_.clunk(kTempFid); !k) return k;
        }
        return {};
    }
    void start(Slot& slot) override {
        slot.step = 0;
        slot.expect = fs9p::Rwalk;
        put_walk(session_.connection().out(), slot.tag, kSubdirFid, slot.fid, {});
    }
    Result<bool> reply(Slot& slot, const Message& r) override {
        auto& out = session_.connection().out();
        switch (slot.step) {
        case 0:
            if (get_walk(r.body) != 0) return std::unexpected(protocol_error("Rwalk").error());
            slot.fid_live = true;
            slot.step = 1;
            slot.expect = fs9p::Rlopen;
            put_lopen(out, slot.tag, slot.fid, O_RDONLY | O_DIRECTORY);
            return false;
        case 1:
            if (!get_open(r.body)) return std::unexpected(protocol_error("Rlopen").error());
            slot.step = 2;
            slot.offset = 0;
            slot.done = 0;
            slot.expect = fs9p::Rreaddir;
            put_readdir(out, slot.tag, slot.fid, 0, session_.max_io());
            return false;
        case 2: {
            auto data = get_data(r.body);
            if (!data) return std::unexpected(protocol_error("Rreaddir").error());
            if (data->empty()) {
                slot.step = 3;
                slot.expect = fs9p::Rclunk;
                put_clunk(out, slot.tag, slot.fid);
                return false;
            }
            bool ok = for_each_entry(*data, [&](const DirEntry& e) {
                slot.offset = e.offset;
                if (e.name != "." && e.name != "..") slot.done++;
            });
            if (!ok) return std::unexpected(protocol_error("Rreaddir entries").error());
            put_readdir(out, slot.tag, slot.fid, slot.offset, session_.max_io());
            return false;
        }
        default:
            if (!get_empty(r.body)) return std::unexpected(protocol_error("Rclunk").error());
            slot.fid_live = false;
            if (slot.done != entries_) {
                return fail(EIO, "Treaddir listed " + std::to_string(slot.done) + " entries, expected " +
                                     std::to_string(entries_));
            }
            return true;
        }
    }

private:
    const uint32_t entries_;
};

// ---------------------------------------------------------------- open

class OpenWorkload final : public Workload {
public:
    using Workload::Workload;
    Result<void> prepare() override { return create_file(session_, "open"); }
    void start(Slot& slot) override {
        static constexpr std::string_view kName = "open";
        slot.step = 0;
        slot.expect = fs9p::Rwalk;
        put_walk(session_.connection().out(), slot.tag, kWorkFid, slot.fid, std::span(&kName, 1));
    }
    Result<bool> reply(Slot& slot, const Message& r) override {
        auto& out = session_.connection().out();
        switch (slot.step++) {
        case 0:
            if (get_walk(r.body) != 1) return fail(EPROTO, "Twalk to 'open' did not walk 1 name");
            slot.fid_live = true;
            slot.expect = fs9p::Rlopen;
            put_lopen(out, slot.tag, slot.fid, O_RDONLY);
            return false;
        case 1:
            if (!get_open(r.body)) return std::unexpected(protocol_error("Rlopen").error());
            slot.expect = fs9p::Rclunk;
            put_clunk(out, slot.tag, slot.fid);
            return false;
        default:
            if (!get_empty(r.body)) return std::unexpected(protocol_error("Rclunk").error());
            slot.fid_live = false;
            return true;
        }
    }
};

}  // namespace

std::unique_ptr<Workload> make_workload(const Options& o, Session& s) {
    switch (o.kind) {
    case WorkloadKind::kGetattr: return std::make_unique<GetattrWorkload>(s);
    case WorkloadKind::kRead:
    case WorkloadKind::kWrite: return std::make_unique<IoWorkload>(s, o);
    case WorkloadKind::kCreateUnlink: return std::make_unique<CreateUnlinkWorkload>(s);
    case WorkloadKind::kReaddir: return std::make_unique<ReaddirWorkload>(s, o);
    case WorkloadKind::kOpen: return std::make_unique<OpenWorkload>(s);
    }
    return nullptr;
}

Result<RunStats> run(Session& session, Workload& workload, std::vector<Slot>& slots, const Options& options,
                     const volatile std::sig_atomic_t& stop) {
    Connection& conn = session.connection();
    RunStats stats;
    const uint64_t t0 = now_ns();
    const uint64_t warm_end = t0 + uint64_t(options.warmup_s * 1e9);
    const uint64_t deadline = warm_end + uint64_t(options.duration_s * 1e9);
    bool measuring = false, ended = false;
    uint64_t window_start = 0;
    double client0 = 0;
    std::optional<double> server0;
    auto begin_window = [&](uint64_t now) {
        measuring = true;
        window_start = now;
        client0 = client_cpu_s();
        if (options.server_pid) server0 = process_cpu_s(*options.server_pid);
    };
    auto end_window = [&](uint64_t now) {
        ended = true;
        if (!measuring) return;
        stats.window_s = double(now - window_start) / 1e9;
        stats.client_cpu_s = client_cpu_s() - client0;
        if (server0) {
            auto s1 = process_cpu_s(*options.server_pid);
            if (s1) stats.server_cpu_s = *s1 - *server0;
        }
    };
    if (options.warmup_s == 0) begin_window(t0);

    size_t busy = 0;
    for (Slot& s : slots) {
        s.start_ns = t0;
        s.busy = true;
        workload.start(s);
        busy++;
    }
    std::optional<Error> error;
    auto retire = [&](Slot& s) {
        s.busy = false;
        busy--;
    };
    while (busy > 0) {
        auto x = conn.exchange();
        const uint64_t now = now_ns();
        if (!x && x.error().code != EINTR) {
            session.set_broken();
            return std::unexpected(x.error());
        }
        if (stop && !ended) {
            stats.interrupted = true;
            end_window(now);
        }
        if (!measuring && !ended && now >= warm_end) begin_window(now);
        if (measuring && !ended && now >= deadline) end_window(now);
        for (;;) {
            auto m = conn.next();
            if (!m) {
                session.set_broken();
                return std::unexpected(m.error());
            }
            if (!*m) break;
            const Message& r = **m;
            if (r.tag >= slots.size() || !slots[r.tag].busy) {
                session.set_broken();
                return fail(EPROTO, std::string("reply ") + fs9p::message_name(r.type) + " with tag " +
                                        std::to_string(r.tag) + ", which has no request in flight");
            }
            Slot& s = slots[r.tag];
            if (measuring && !ended) stats.messages++;
            if (error) {  // draining after an error: only wait for the slot's reply
                retire(s);
                continue;
            }
            // The request the slot had in flight, for error messages.
            auto request = [&] { return std::string(fs9p::message_name(uint8_t(s.expect - 1))); };
            if (r.type == fs9p::Rlerror) {
                error = lerror(request() + " (" + options.workload + ", tag " + std::to_string(s.tag) + ")", r);
                retire(s);
                continue;
            }
            if (r.type != s.expect) {
                session.set_broken();
                return fail(EPROTO, request() + ": reply " + fs9p::message_name(r.type) + " with tag " +
                                        std::to_string(r.tag));
            }
            auto done = workload.reply(s, r);
            if (!done) {
                error = Error{done.error().code, request() + " (" + options.workload + "): " + done.error().message};
                if (done.error().code == EPROTO) {
                    session.set_broken();
                    return std::unexpected(*error);
                }
                retire(s);
                continue;
            }
            if (!*done) continue;
            if (measuring && !ended) {
                stats.ops++;
                stats.latency.add(now - s.start_ns);
            }
            if (ended) {
                retire(s);
            } else {
                s.start_ns = now;
                workload.start(s);
            }
        }
    }
    if (error) return std::unexpected(*error);
    if (!ended) end_window(now_ns());
    return stats;
}

void release_slots(Session& session, std::vector<Slot>& slots) {
    for (Slot& s : slots) {
        if (!s.fid_live || session.broken()) continue;
        (void)session.clunk(s.fid);
        s.fid_live = false;
    }
}

}  // namespace ioplane::load9p
