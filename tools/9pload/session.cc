#include "session.h"

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace ioplane::load9p {
namespace {
constexpr uint32_t kFillDepth = 8;

std::string quoted(std::string_view name) { return "'" + std::string(name) + "'"; }
}  // namespace

bool not_implemented(int code) { return code == EOPNOTSUPP || code == 524 || code == ENOSYS; }

Error lerror(const std::string& what, const Message& reply) {
    auto ecode = get_lerror(reply.body);
    if (!ecode) return Error{EPROTO, what + ": malformed Rlerror"};
    return Error{int(*ecode), what + ": Rlerror " + std::to_string(*ecode)};
}

Result<Session> Session::start(Connection connection, uint32_t msize, std::string_view uname,
                               std::string_view aname, uint32_t n_uname) {
    Session s(std::move(connection));
    s.conn_.set_max_message(msize);
    put_version(s.conn_.out(), msize, "9P2000.L");
    // Tversion goes with NOTAG: call() wants tag 0, so this one is by hand.
    Message reply{};
    for (bool got = false; !got;) {
        if (auto e = s.conn_.exchange(); !e) return fail(e.error().code, "Tversion: " + e.error().message);
        auto m = s.conn_.next();
        if (!m) return fail(EPROTO, "Tversion: " + m.error().message);
        if (*m) {
            reply = **m;
            got = true;
        }
    }
    if (reply.type == fs9p::Rlerror) return std::unexpected(lerror("Tversion", reply));
    auto v = get_version(reply.body);
    if (reply.type != fs9p::Rversion || reply.tag != fs9p::kNoTag || !v) {
        return fail(EPROTO, "Tversion: unexpected reply (type " + std::to_string(reply.type) + ")");
    }
    if (v->version != "9P2000.L") {
        return fail(EPROTONOSUPPORT, "Tversion: the server offers '" + std::string(v->version) + "', not 9P2000.L");
    }
    if (v->msize > msize || v->msize < 4096) {
        return fail(EPROTO, "Tversion: the server answered msize " + std::to_string(v->msize) + " to " +
                                std::to_string(msize));
    }
    s.msize_ = v->msize;
    s.conn_.set_max_message(s.msize_);
    put_attach(s.conn_.out(), 0, kRootFid, uname, aname, n_uname);
    auto a = s.call(fs9p::Rattach, "Tattach " + quoted(aname));
    if (!a) return std::unexpected(a.error());
    auto q = get_qid(a->body);
    if (!q) return fail(EPROTO, "malformed Rattach");
    if (!(q->type & fs9p::kQtDir)) return fail(ENOTDIR, "Tattach " + quoted(aname) + ": the root is not a directory");
    s.live_.insert(kRootFid);
    return s;
}

Result<Message> Session::call(uint8_t reply_type, const std::string& what) {
    if (broken_) return fail(EPROTO, what + ": not sent, the session is broken");
    for (;;) {
        if (auto e = conn_.exchange(); !e) {
            if (e.error().code == EINTR) continue;  // a signal: the caller looks at its flag after the call
            broken_ = true;
            return fail(e.error().code, what + ": " + e.error().message);
        }
        auto m = conn_.next();
        if (!m) {
            broken_ = true;
            return fail(EPROTO, what + ": " + m.error().message);
        }
        if (!*m) continue;
        const Message& r = **m;
        if (r.tag != 0) {
            broken_ = true;
            return fail(EPROTO, what + ": reply with tag " + std::to_string(r.tag) + ", expected 0");
        }
        if (r.type == fs9p::Rlerror) return std::unexpected(lerror(what, r));
        if (r.type != reply_type) {
            broken_ = true;
            return fail(EPROTO, what + ": reply " + fs9p::message_name(r.type) + ", expected " +
                                    fs9p::message_name(reply_type));
        }
        return r;
    }
}

Result<void> Session::walk(uint32_t fid, uint32_t newfid, std::span<const std::string_view> names) {
    put_walk(conn_.out(), 0, fid, newfid, names);
    std::string what = "Twalk";
    for (auto n : names) what += " " + quoted(n);
    auto r = call(fs9p::Rwalk, what);
    if (!r) return std::unexpected(r.error());
    auto n = get_walk(r->body);
    if (!n) return fail(EPROTO, what + ": malformed Rwalk");
    if (*n != names.size()) {
        return fail(ENOENT, what + ": walked " + std::to_string(*n) + " of " + std::to_string(names.size()) + " names");
    }
    live_.insert(newfid);
    return {};
}

Result<Qid> Session::mkdir(uint32_t dfid, std::string_view name, uint32_t mode) {
    put_mkdir(conn_.out(), 0, dfid, name, mode, 0);
    auto r = call(fs9p::Rmkdir, "Tmkdir " + quoted(name));
    if (!r) return std::unexpected(r.error());
    auto q = get_qid(r->body);
    if (!q) return fail(EPROTO, "malformed Rmkdir");
    return *q;
}

Result<ROpen> Session::lcreate(uint32_t fid, std::string_view name, uint32_t flags, uint32_t mode) {
    put_lcreate(conn_.out(), 0, fid, name, flags, mode, 0);
    auto r = call(fs9p::Rlcreate, "Tlcreate " + quoted(name));
    if (!r) return std::unexpected(r.error());
    auto o = get_open(r->body);
    if (!o) return fail(EPROTO, "malformed Rlcreate");
    return *o;
}

Result<ROpen> Session::lopen(uint32_t fid, uint32_t flags) {
    put_lopen(conn_.out(), 0, fid, flags);
    auto r = call(fs9p::Rlopen, "Tlopen fid " + std::to_string(fid));
    if (!r) return std::unexpected(r.error());
    auto o = get_open(r->body);
    if (!o) return fail(EPROTO, "malformed Rlopen");
    return *o;
}

Result<void> Session::clunk(uint32_t fid) {
    live_.erase(fid);  // a fid is gone after Tclunk whatever the answer
    put_clunk(conn_.out(), 0, fid);
    auto r = call(fs9p::Rclunk, "Tclunk fid " + std::to_string(fid));
    if (!r) return std::unexpected(r.error());
    if (!get_empty(r->body)) return fail(EPROTO, "malformed Rclunk");
    return {};
}

Result<void> Session::unlinkat(uint32_t dirfid, std::string_view name, uint32_t flags) {
    if (unlink_ != UnlinkMode::kRemove) {
        put_unlinkat(conn_.out(), 0, dirfid, name, flags);
        auto r = call(fs9p::Runlinkat, "Tunlinkat " + quoted(name));
        if (r) {
            if (!get_empty(r->body)) return fail(EPROTO, "malformed Runlinkat");
            return {};
        }
        if (unlink_ == UnlinkMode::kUnlinkat || !not_implemented(r.error().code)) return std::unexpected(r.error());
        unlink_ = UnlinkMode::kRemove;
    }
    if (auto w = walk(dirfid, kRemoveFid, std::span(&name, 1)); !w) return w;
    live_.erase(kRemoveFid);
    put_remove(conn_.out(), 0, kRemoveFid);  // clunks kRemoveFid, whatever the outcome
    auto r = call(fs9p::Rremove, "Tremove " + quoted(name));
    if (!r) return std::unexpected(r.error());
    if (!get_empty(r->body)) return fail(EPROTO, "malformed Rremove");
    return {};
}

void Session::clunk_all_but(std::initializer_list<uint32_t> keep) {
    const std::set<uint32_t> fids = live_;
    for (uint32_t fid : fids) {
        if (std::find(keep.begin(), keep.end(), fid) == keep.end() && !broken_) (void)clunk(fid);
    }
}

Result<void> Session::fill(uint32_t fid, uint64_t size, std::span<const uint8_t> pattern) {
    if (broken_) return fail(EPROTO, "Twrite: not sent, the session is broken");
    const uint32_t chunk = std::min<uint32_t>(max_io(), uint32_t(pattern.size()));
    std::array<uint32_t, kFillDepth> pending{};  // by tag: bytes in flight, 0 if free
    uint64_t next = 0;
    uint32_t in_flight = 0;
    std::optional<Error> first_error;
    auto issue = [&](uint16_t tag) {
        const uint32_t n = uint32_t(std::min<uint64_t>(chunk, size - next));
        put_write_header(conn_.out(), tag, fid, next, n);
        conn_.append_external(pattern.first(n));
        pending[tag] = n;
        next += n;
        in_flight++;
    };
    for (uint16_t tag = 0; tag < kFillDepth && next < size; tag++) issue(tag);
    while (in_flight > 0) {
        if (auto e = conn_.exchange(); !e) {
            if (e.error().code == EINTR) continue;
            broken_ = true;
            return fail(e.error().code, "Twrite (filling the file): " + e.error().message);
        }
        for (;;) {
            auto m = conn_.next();
            if (!m) {
                broken_ = true;
                return std::unexpected(m.error());
            }
            if (!*m) break;
            const Message& r = **m;
            if (r.tag >= kFillDepth || pending[r.tag] == 0) {
                broken_ = true;
                return fail(EPROTO, "Twrite (filling the file): reply with unknown tag " + std::to_string(r.tag));
            }
            const uint32_t sent = pending[r.tag];
            pending[r.tag] = 0;
            in_flight--;
            if (r.type == fs9p::Rlerror) {
                if (!first_error) first_error = lerror("Twrite (filling the file)", r);
            } else if (auto n = get_write(r.body); r.type != fs9p::Rwrite || !n) {
                broken_ = true;
                return fail(EPROTO, "Twrite (filling the file): malformed reply");
            } else if (*n != sent && !first_error) {
                first_error = Error{EIO, "Twrite (filling the file): short write, " + std::to_string(*n) + " of " +
                                             std::to_string(sent) + " bytes"};
            }
            if (!first_error && next < size) issue(r.tag);
        }
    }
    if (first_error) return std::unexpected(*first_error);
    return {};
}

Result<std::vector<Entry>> Session::list(uint32_t dirfid, uint32_t depth) {
    const uint32_t fid = kFirstTreeFid + 2 * depth;
    if (auto w = walk(dirfid, fid, {}); !w) return std::unexpected(w.error());
    std::vector<Entry> out;
    auto body = [&]() -> Result<void> {
        if (auto o = lopen(fid, O_RDONLY | O_DIRECTORY); !o) return std::unexpected(o.error());
        uint64_t offset = 0;
        for (;;) {
            put_readdir(conn_.out(), 0, fid, offset, max_io());
            auto r = call(fs9p::Rreaddir, "Treaddir");
            if (!r) return std::unexpected(r.error());
            auto data = get_data(r->body);
            if (!data) return fail(EPROTO, "malformed Rreaddir");
            if (data->empty()) return {};
            bool ok = for_each_entry(*data, [&](const DirEntry& e) {
                offset = e.offset;
                if (e.name != "." && e.name != "..") out.push_back(Entry{std::string(e.name), e.qid.type});
            });
            if (!ok) return fail(EPROTO, "malformed Rreaddir entries");
        }
    }();
    auto c = clunk(fid);
    if (!body) return std::unexpected(body.error());
    if (!c) return std::unexpected(c.error());
    return out;
}

Result<void> Session::remove_tree(uint32_t dirfid, uint32_t depth) {
    if (depth > 32) return fail(ELOOP, "remove_tree: deeper than 32 levels");
    auto entries = list(dirfid, depth);
    if (!entries) return std::unexpected(entries.error());
    for (const Entry& e : *entries) {
        if (e.qid_type & fs9p::kQtDir) {
            const uint32_t sub = kFirstTreeFid + 2 * depth + 1;
            const std::string_view name = e.name;
            if (auto w = walk(dirfid, sub, std::span(&name, 1)); !w) return std::unexpected(w.error());
            auto r = remove_tree(sub, depth + 1);
            auto c = clunk(sub);
            if (!r) return r;
            if (!c) return c;
            if (auto u = unlinkat(dirfid, e.name, AT_REMOVEDIR); !u) return u;
        } else if (auto u = unlinkat(dirfid, e.name, 0); !u) {
            return u;
        }
    }
    return {};
}

}  // namespace ioplane::load9p
