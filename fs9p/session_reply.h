// Helpers the session's handlers share: building replies, and the checks
// most handlers start with.
//
// Thread contract: pure; any thread.
#pragma once

#include <cerrno>
#include <string>

#include "session.h"

namespace ioplane::fs9p::detail {

// A reply whose body `fill(WireWriter&)` writes.
template <class F>
Reply reply(uint8_t type, uint16_t tag, F fill) {
    Reply r;
    WireWriter w(r.head);
    w.begin(type, tag);
    fill(w);
    w.finish();
    return r;
}

// Rread and Rreaddir: `r.data` holds `r.data_len` bytes; writes the header
// (count[4]) that goes before them.
inline Reply data_reply(uint8_t type, uint16_t tag, Reply r) {
    WireWriter w(r.head);
    w.begin(type, tag);
    w.u32(r.data_len);
    w.finish(r.data_len);
    return r;
}

inline Reply empty_reply(uint8_t type, uint16_t tag) {
    return reply(type, tag, [](WireWriter&) {});
}

inline Reply qid_reply(uint8_t type, uint16_t tag, const Qid& q) {
    return reply(type, tag, [&](WireWriter& w) { w.qid(q); });
}

// A result from a worker: >= 0, or -errno.
inline Reply status_reply(uint8_t type, uint16_t tag, int r) {
    return r < 0 ? error_reply(tag, -r) : empty_reply(type, tag);
}

// "a/b" + "c" -> "a/b/c"; "" + "c" -> "c".
inline std::string join_path(const std::string& dir, std::string_view name) {
    return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

// "a/b/c" -> "a/b"; "c" -> "".
inline std::string parent_path(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

inline std::string base_name(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace ioplane::fs9p::detail
