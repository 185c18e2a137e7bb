#include "nbd/protocol.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <cstdarg>
#include <cstdio>

#include "ioplane/core/thread_contract.h"

namespace ioplane::nbd {

namespace {

// printf into a std::string, for error messages (libstdc++ 12 has no
// std::format). Messages here are short and never quote client strings.
[[gnu::format(printf, 1, 2)]] std::string msg(const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return fmt;
    return std::string(buf, std::min(static_cast<size_t>(n), sizeof buf - 1));
}

// Appends v in network order.
void append_be16(std::vector<uint8_t>& out, uint16_t v) {
    uint8_t b[2];
    store_be16(b, v);
    out.insert(out.end(), b, b + 2);
}
void append_be32(std::vector<uint8_t>& out, uint32_t v) {
    uint8_t b[4];
    store_be32(b, v);
    out.insert(out.end(), b, b + 4);
}
void append_be64(std::vector<uint8_t>& out, uint64_t v) {
    uint8_t b[8];
    store_be64(b, v);
    out.insert(out.end(), b, b + 8);
}
void append_bytes(std::vector<uint8_t>& out, std::string_view s) {
    out.insert(out.end(), s.begin(), s.end());
}

// A bounds-checked cursor over untrusted bytes: every read first asks
// remaining(), so no read can run past the span.
class Reader {
public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    size_t remaining() const { return b_.size() - pos_; }
    uint16_t be16() { return load_be16(advance(2)); }
    uint32_t be32() { return load_be32(advance(4)); }
    std::string string(size_t n) {
        const uint8_t* p = advance(n);
        return std::string(reinterpret_cast<const char*>(p), n);
    }

private:
    const uint8_t* advance(size_t n) {
        IOPLANE_ASSERT(n <= remaining());
        const uint8_t* p = b_.data() + pos_;
        pos_ += n;
        return p;
    }
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
};

// The spec's rules for strings that a parser can check: length and no NUL.
// (UTF-8 validity is not checked: names are only compared bytewise against
// configured ones, so an invalid one simply matches nothing.)
Result<void> check_string(std::span<const uint8_t> s, const char* what) {
    if (s.size() > kMaxStringLength)
        return fail(EINVAL, msg("%s is %zu bytes, longer than %zu", what, s.size(), kMaxStringLength));
    if (std::find(s.begin(), s.end(), uint8_t{0}) != s.end())
        return fail(EINVAL, msg("%s contains a NUL byte", what));
    return {};
}

// Reads a u32-length-prefixed string, checking the length before any read.
Result<std::string> read_string(Reader& r, const char* what) {
    if (r.remaining() < 4) return fail(EINVAL, msg("truncated before the %s length", what));
    uint32_t len = r.be32();
    if (len > kMaxStringLength)
        return fail(EINVAL, msg("%s length %u exceeds %zu", what, unsigned{len}, kMaxStringLength));
    if (len > r.remaining())
        return fail(EINVAL,
                    msg("%s length %u exceeds the %zu bytes left", what, unsigned{len}, r.remaining()));
    std::string s = r.string(len);
    if (auto ok = check_string({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, what); !ok)
        return std::unexpected(std::move(ok.error()));
    return s;
}

void put_u32_prefixed(std::vector<uint8_t>& out, std::string_view s) {
    append_be32(out, static_cast<uint32_t>(s.size()));
    append_bytes(out, s);
}

void put_info_header(std::vector<uint8_t>& out, uint32_t option, uint16_t info, uint32_t payload) {
    const size_t at = out.size();
    out.resize(at + kOptionReplyHeaderSize);
    store_be64(out.data() + at, NBD_REP_MAGIC);
    store_be32(out.data() + at + 8, option);
    store_be32(out.data() + at + 12, NBD_REP_INFO);
    store_be32(out.data() + at + 16, 2 + payload);
    append_be16(out, info);
}

bool is_range_command(uint16_t type) {
    switch (type) {
        case NBD_CMD_READ:
        case NBD_CMD_WRITE:
        case NBD_CMD_TRIM:
        case NBD_CMD_CACHE:
        case NBD_CMD_WRITE_ZEROES:
        case NBD_CMD_BLOCK_STATUS:
            return true;
        default:
            return false;
    }
}

// Command flags a request of this type may carry on this export.
uint16_t allowed_flags(uint16_t type, const ExportLimits& lim) {
    // FUA: "valid for all commands, provided NBD_FLAG_SEND_FUA has been
    // negotiated"; the server must then accept (and may ignore) it anywhere.
    uint16_t allowed = lim.can_fua ? NBD_CMD_FLAG_FUA : 0;
    switch (type) {
        case NBD_CMD_READ:
            if (lim.structured_replies) allowed |= NBD_CMD_FLAG_DF;
            break;
        case NBD_CMD_WRITE_ZEROES:
            allowed |= NBD_CMD_FLAG_NO_HOLE;
            if (lim.can_fast_zero) allowed |= NBD_CMD_FLAG_FAST_ZERO;
            break;
        case NBD_CMD_BLOCK_STATUS:
            allowed |= NBD_CMD_FLAG_REQ_ONE;
            break;
        default:
            break;
    }
    return allowed;
}

Verdict reject(uint32_t nbd_error, bool consume_payload) {
    return Verdict{.nbd_error = nbd_error, .consume_payload = consume_payload};
}

}  // namespace

// ---------------------------------------------------------------- handshake phase

void put_handshake(uint8_t out[kHandshakeSize], uint16_t handshake_flags) {
    store_be64(out, NBDMAGIC);
    store_be64(out + 8, IHAVEOPT);
    store_be16(out + 16, handshake_flags);
}

Result<uint32_t> parse_client_flags(std::span<const uint8_t> bytes4, uint16_t offered_handshake_flags) {
    if (bytes4.size() != kClientFlagsSize)
        return fail(EINVAL, msg("client flags: %zu bytes, expected %zu", bytes4.size(), kClientFlagsSize));
    const uint32_t flags = load_be32(bytes4.data());
    const uint32_t known = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
    if (flags & ~known)
        return fail(EINVAL, msg("client flags: unknown flags %#x", unsigned{flags & ~known}));
    if ((flags & NBD_FLAG_C_NO_ZEROES) && !(offered_handshake_flags & NBD_FLAG_NO_ZEROES))
        return fail(EINVAL, "client flags: NO_ZEROES was not offered");
    return flags;
}

Result<OptionHeader> parse_option_header(std::span<const uint8_t> bytes16) {
    if (bytes16.size() != kOptionHeaderSize)
        return fail(EINVAL,
                    msg("option header: %zu bytes, expected %zu", bytes16.size(), kOptionHeaderSize));
    const uint64_t magic = load_be64(bytes16.data());
    if (magic != IHAVEOPT)
        return fail(EINVAL, msg("option header: bad magic %#llx", static_cast<unsigned long long>(magic)));
    return OptionHeader{.option = load_be32(bytes16.data() + 8), .length = load_be32(bytes16.data() + 12)};
}

void put_option_header(std::vector<uint8_t>& out, uint32_t option, std::span<const uint8_t> payload) {
    IOPLANE_ASSERT(payload.size() <= UINT32_MAX);
    append_be64(out, IHAVEOPT);
    append_be32(out, option);
    append_be32(out, static_cast<uint32_t>(payload.size()));
    out.insert(out.end(), payload.begin(), payload.end());
}

Result<std::string> parse_export_name(std::span<const uint8_t> payload) {
    if (auto ok = check_string(payload, "export name"); !ok) return std::unexpected(std::move(ok.error()));
    return std::string(reinterpret_cast<const char*>(payload.data()), payload.size());
}

Result<InfoRequest> parse_info_request(std::span<const uint8_t> payload) {
    // The smallest request is an empty name and no info types: 4 + 2 bytes.
    if (payload.size() < 6)
        return fail(EINVAL, msg("info request: %zu bytes, need at least 6", payload.size()));
    Reader r(payload);
    InfoRequest req;
    {
        // The spec's own bound: name length <= option length - 6.
        const uint32_t len = load_be32(payload.data());
        if (len <= kMaxStringLength && len > payload.size() - 6)
            return fail(EINVAL, msg("info request: name length %u exceeds the option data (%zu bytes)",
                                    unsigned{len}, payload.size()));
    }
    auto name = read_string(r, "export name");
    if (!name) return fail(EINVAL, "info request: " + name.error().message);
    req.name = std::move(*name);
    const uint16_t count = r.be16();  // present: checked above
    const size_t need = size_t{count} * 2;
    if (r.remaining() < need)
        return fail(EINVAL, msg("info request: %u info types need %zu bytes, %zu present", unsigned{count},
                                need, r.remaining()));
    if (r.remaining() > need)
        return fail(EINVAL, msg("info request: %zu trailing bytes", r.remaining() - need));
    req.info_types.reserve(count);
    for (uint16_t i = 0; i < count; ++i) req.info_types.push_back(r.be16());
    // Each type at most once (MUST NOT repeat); sorting a copy keeps this
    // O(n log n) for the up to 32 Ki types a 64 KiB option could carry.
    std::vector<uint16_t> sorted = req.info_types;
    std::sort(sorted.begin(), sorted.end());
    if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end())
        return fail(EINVAL, msg("info request: info type %u requested twice", unsigned{*dup}));
    return req;
}

void put_info_request(std::vector<uint8_t>& out, const InfoRequest& req) {
    IOPLANE_ASSERT(req.info_types.size() <= UINT16_MAX);
    put_u32_prefixed(out, req.name);
    append_be16(out, static_cast<uint16_t>(req.info_types.size()));
    for (uint16_t t : req.info_types) append_be16(out, t);
}

Result<MetaContextRequest> parse_meta_context_request(std::span<const uint8_t> payload) {
    // The smallest request is an empty name and no queries: 4 + 4 bytes.
    if (payload.size() < 8)
        return fail(EINVAL, msg("meta context request: %zu bytes, need at least 8", payload.size()));
    Reader r(payload);
    MetaContextRequest req;
    {
        const uint32_t len = load_be32(payload.data());
        if (len <= kMaxStringLength && len > payload.size() - 8)
            return fail(EINVAL,
                        msg("meta context request: name length %u exceeds the option data (%zu bytes)",
                            unsigned{len}, payload.size()));
    }
    auto name = read_string(r, "export name");
    if (!name) return fail(EINVAL, "meta context request: " + name.error().message);
    req.export_name = std::move(*name);
    const uint32_t count = r.be32();  // present: checked above
    // Every query takes at least its 4-byte length: a count that cannot fit is
    // a lie (EINVAL), checked before "too many" (E2BIG) so that E2BIG is only
    // said of a well-formed request.
    if (count > r.remaining() / 4)
        return fail(EINVAL, msg("meta context request: %u queries cannot fit in %zu bytes", unsigned{count},
                                 r.remaining()));
    if (count > kMaxMetaContextQueries)
        return fail(E2BIG, msg("meta context request: %u queries, at most %u accepted", unsigned{count},
                                unsigned{kMaxMetaContextQueries}));
    req.queries.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
        auto q = read_string(r, "query");
        if (!q)
            return fail(EINVAL,
                        msg("meta context request: query %u: %s", unsigned{i}, q.error().message.c_str()));
        req.queries.push_back(std::move(*q));
    }
    if (r.remaining() != 0)
        return fail(EINVAL, msg("meta context request: %zu trailing bytes", r.remaining()));
    return req;
}

void put_meta_context_request(std::vector<uint8_t>& out, const MetaContextRequest& req) {
    IOPLANE_ASSERT(req.queries.size() <= UINT32_MAX);
    put_u32_prefixed(out, req.export_name);
    append_be32(out, static_cast<uint32_t>(req.queries.size()));
    for (const std::string& q : req.queries) put_u32_prefixed(out, q);
}

void put_option_reply(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                      std::span<const uint8_t> data) {
    IOPLANE_ASSERT(data.size() <= UINT32_MAX);
    append_be64(out, NBD_REP_MAGIC);
    append_be32(out, option);
    append_be32(out, reply_type);
    append_be32(out, static_cast<uint32_t>(data.size()));
    out.insert(out.end(), data.begin(), data.end());
}

void put_rep_server(std::vector<uint8_t>& out, uint32_t option, std::string_view name) {
    IOPLANE_ASSERT(name.size() <= kMaxStringLength);
    append_be64(out, NBD_REP_MAGIC);
    append_be32(out, option);
    append_be32(out, NBD_REP_SERVER);
    append_be32(out, static_cast<uint32_t>(4 + name.size()));
    put_u32_prefixed(out, name);
}

void put_info_export(std::vector<uint8_t>& out, uint32_t option, uint64_t size, uint16_t transmission_flags) {
    put_info_header(out, option, NBD_INFO_EXPORT, 10);
    append_be64(out, size);
    append_be16(out, transmission_flags);
}

void put_info_block_size(std::vector<uint8_t>& out, uint32_t option, uint32_t minimum, uint32_t preferred,
                         uint32_t maximum) {
    put_info_header(out, option, NBD_INFO_BLOCK_SIZE, 12);
    append_be32(out, minimum);
    append_be32(out, preferred);
    append_be32(out, maximum);
}

void put_info_name(std::vector<uint8_t>& out, uint32_t option, std::string_view name) {
    IOPLANE_ASSERT(name.size() <= kMaxStringLength);
    put_info_header(out, option, NBD_INFO_NAME, static_cast<uint32_t>(name.size()));
    append_bytes(out, name);
}

void put_info_description(std::vector<uint8_t>& out, uint32_t option, std::string_view description) {
    description = truncate_utf8(description, kMaxStringLength);
    put_info_header(out, option, NBD_INFO_DESCRIPTION, static_cast<uint32_t>(description.size()));
    append_bytes(out, description);
}

void put_rep_meta_context(std::vector<uint8_t>& out, uint32_t option, uint32_t context_id,
                          std::string_view name) {
    IOPLANE_ASSERT(name.size() <= kMaxStringLength);
    append_be64(out, NBD_REP_MAGIC);
    append_be32(out, option);
    append_be32(out, NBD_REP_META_CONTEXT);
    append_be32(out, static_cast<uint32_t>(4 + name.size()));
    append_be32(out, context_id);
    append_bytes(out, name);
}

void put_option_error(std::vector<uint8_t>& out, uint32_t option, uint32_t err, std::string_view message) {
    IOPLANE_ASSERT(err & NBD_REP_FLAG_ERROR);
    message = truncate_utf8(message, kMaxStringLength);
    put_option_reply(out, option, err, {reinterpret_cast<const uint8_t*>(message.data()), message.size()});
}

void put_export_name_reply(std::vector<uint8_t>& out, uint64_t size, uint16_t flags, bool no_zeroes) {
    append_be64(out, size);
    append_be16(out, flags);
    if (!no_zeroes) out.resize(out.size() + (kExportNameReplySize - kExportNameReplyNoZeroesSize), 0);
}

// ---------------------------------------------------------------- transmission phase

Result<Request> parse_request(std::span<const uint8_t> bytes28) {
    if (bytes28.size() != kRequestSize)
        return fail(EINVAL, msg("request: %zu bytes, expected %zu", bytes28.size(), kRequestSize));
    const uint8_t* p = bytes28.data();
    const uint32_t magic = load_be32(p);
    if (magic != NBD_REQUEST_MAGIC) return fail(EINVAL, msg("request: bad magic %#x", unsigned{magic}));
    return Request{.flags = load_be16(p + 4),
                   .type = load_be16(p + 6),
                   .cookie = load_be64(p + 8),
                   .offset = load_be64(p + 16),
                   .length = load_be32(p + 24)};
}

void put_request(uint8_t out[kRequestSize], const Request& req) {
    store_be32(out, NBD_REQUEST_MAGIC);
    store_be16(out + 4, req.flags);
    store_be16(out + 6, req.type);
    store_be64(out + 8, req.cookie);
    store_be64(out + 16, req.offset);
    store_be32(out + 24, req.length);
}

Verdict validate_request(const Request& req, const ExportLimits& lim) {
    const uint16_t type = req.type;
    // 1. DISC: nothing else matters; the client sends nothing after it.
    if (type == NBD_CMD_DISC) return Verdict{.disconnect = true, .no_reply = true};

    // 2. The WRITE payload is on the wire whatever we decide; it is skipped
    // when rejected unless it is too large to be anything but an attack.
    const bool write = type == NBD_CMD_WRITE;
    if (write && req.length > std::max(lim.max_payload, kMaxDiscardPayload))
        return Verdict{.nbd_error = NBD_EINVAL, .disconnect = true};

    // 3. Unknown command (no payload in compact headers: nothing to skip).
    if (type > NBD_CMD_BLOCK_STATUS) return reject(NBD_EINVAL, false);

    // 4. Flags.
    if (req.flags & ~allowed_flags(type, lim)) return reject(NBD_EINVAL, write);

    // 5. Read-only export.
    const bool modifies = write || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
    if (modifies && lim.read_only) return reject(NBD_EPERM, write);

    // 6. Commands the export did not advertise.
    switch (type) {
        case NBD_CMD_FLUSH:
            if (!lim.can_flush) return reject(NBD_EINVAL, false);
            // 7. Offset and length are reserved.
            if (req.offset != 0 || req.length != 0) return reject(NBD_EINVAL, false);
            return Verdict{};
        case NBD_CMD_TRIM:
            if (!lim.can_trim) return reject(NBD_EINVAL, false);
            break;
        case NBD_CMD_WRITE_ZEROES:
            if (!lim.can_write_zeroes) return reject(NBD_EINVAL, false);
            break;
        case NBD_CMD_CACHE:
            if (!lim.can_cache) return reject(NBD_EINVAL, false);
            break;
        case NBD_CMD_BLOCK_STATUS:
            if (!lim.structured_replies || !lim.meta_context_selected) return reject(NBD_EINVAL, false);
            break;
        default:
            break;
    }
    IOPLANE_ASSERT(is_range_command(type));

    // 8. Zero length.
    if (req.length == 0) return reject(NBD_EINVAL, write);

    // 9. Payload size for the commands that carry one.
    if ((write || type == NBD_CMD_READ) && req.length > lim.max_payload) {
        const bool split_read = type == NBD_CMD_READ && lim.structured_replies;
        return reject(split_read ? NBD_EOVERFLOW : NBD_EINVAL, write);
    }

    // 10. Bounds, written so that offset + length cannot overflow.
    if (req.offset > lim.size || req.length > lim.size - req.offset) {
        const bool grows = write || type == NBD_CMD_WRITE_ZEROES;
        return reject(grows ? NBD_ENOSPC : NBD_EINVAL, write);
    }

    // 11. Alignment (min_block 0 is read as 1).
    const uint64_t block = lim.min_block ? lim.min_block : 1;
    if (req.offset % block != 0 || req.length % block != 0) return reject(NBD_EINVAL, write);

    return Verdict{.consume_payload = write};
}

void put_simple_reply(uint8_t out[kSimpleReplySize], uint32_t error, uint64_t cookie) {
    store_be32(out, NBD_SIMPLE_REPLY_MAGIC);
    store_be32(out + 4, error);
    store_be64(out + 8, cookie);
}

void put_structured_header(uint8_t out[kStructuredReplyHeaderSize], uint16_t flags, uint16_t type,
                           uint64_t cookie, uint32_t length) {
    store_be32(out, NBD_STRUCTURED_REPLY_MAGIC);
    store_be16(out + 4, flags);
    store_be16(out + 6, type);
    store_be64(out + 8, cookie);
    store_be32(out + 16, length);
}

void put_chunk_offset_data_header(uint8_t out[kOffsetDataHeaderSize], uint16_t flags, uint64_t cookie,
                                  uint64_t offset, uint32_t data_length) {
    IOPLANE_ASSERT(data_length != 0 && data_length <= UINT32_MAX - 8);
    put_structured_header(out, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + data_length);
    store_be64(out + kStructuredReplyHeaderSize, offset);
}

void put_chunk_offset_hole(uint8_t out[kOffsetHoleSize], uint16_t flags, uint64_t cookie, uint64_t offset,
                           uint32_t hole_length) {
    IOPLANE_ASSERT(hole_length != 0);
    put_structured_header(out, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
    store_be64(out + kStructuredReplyHeaderSize, offset);
    store_be32(out + kStructuredReplyHeaderSize + 8, hole_length);
}

namespace {

void put_error_chunk(std::vector<uint8_t>& out, uint16_t flags, uint16_t type, uint64_t cookie, uint32_t error,
                     std::string_view message, uint32_t trailer) {
    IOPLANE_ASSERT(error != 0);
    message = truncate_utf8(message, kMaxStringLength);
    const size_t at = out.size();
    out.resize(at + kStructuredReplyHeaderSize);
    put_structured_header(out.data() + at, flags, type, cookie,
                          static_cast<uint32_t>(6 + message.size() + trailer));
    append_be32(out, error);
    append_be16(out, static_cast<uint16_t>(message.size()));
    append_bytes(out, message);
}

}  // namespace

void put_chunk_error(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t error,
                     std::string_view message) {
    put_error_chunk(out, flags, NBD_REPLY_TYPE_ERROR, cookie, error, message, 0);
}

void put_chunk_error_offset(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t error,
                            std::string_view message, uint64_t offset) {
    put_error_chunk(out, flags, NBD_REPLY_TYPE_ERROR_OFFSET, cookie, error, message, 8);
    append_be64(out, offset);
}

void put_chunk_block_status(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t context_id,
                            std::span<const Extent> extents) {
    IOPLANE_ASSERT(!extents.empty() && extents.size() <= (UINT32_MAX - 4) / 8);
    const size_t at = out.size();
    out.resize(at + kStructuredReplyHeaderSize);
    put_structured_header(out.data() + at, flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie,
                          static_cast<uint32_t>(4 + 8 * extents.size()));
    out.reserve(out.size() + 4 + 8 * extents.size());
    append_be32(out, context_id);
    for (const Extent& e : extents) {
        IOPLANE_ASSERT(e.length != 0);
        append_be32(out, e.length);
        append_be32(out, e.flags);
    }
}

// ---------------------------------------------------------------- helpers

uint32_t errno_to_nbd(int err) {
    if (err == INT_MIN) return NBD_EIO;
    if (err < 0) err = -err;
    switch (err) {
        case 0: return 0;
        case EPERM:
        case EROFS:
        case EACCES: return NBD_EPERM;
        case EIO: return NBD_EIO;
        case ENOMEM: return NBD_ENOMEM;
        case EINVAL: return NBD_EINVAL;
        case ENOSPC:
        case EDQUOT:
        case EFBIG: return NBD_ENOSPC;
        case EOVERFLOW: return NBD_EOVERFLOW;
        case ENOTSUP: return NBD_ENOTSUP;
        case ESHUTDOWN: return NBD_ESHUTDOWN;
        default:
            // EOPNOTSUPP equals ENOTSUP on Linux, so it cannot be a case label.
            if (err == EOPNOTSUPP) return NBD_ENOTSUP;
            return NBD_EIO;
    }
}

std::string_view truncate_utf8(std::string_view s, size_t max) {
    if (s.size() <= max) return s;
    // Back off over continuation bytes (10xxxxxx) so that the cut lands before
    // a lead byte; a UTF-8 sequence has at most 3 of them.
    size_t cut = max;
    for (int i = 0; i < 3 && cut > 0 && (static_cast<uint8_t>(s[cut]) & 0xC0) == 0x80; ++i) --cut;
    if ((static_cast<uint8_t>(s[cut]) & 0xC0) == 0x80) cut = max;  // not UTF-8: plain cut
    return s.substr(0, cut);
}

const char* option_name(uint32_t option) {
    switch (option) {
        case NBD_OPT_EXPORT_NAME: return "NBD_OPT_EXPORT_NAME";
        case NBD_OPT_ABORT: return "NBD_OPT_ABORT";
        case NBD_OPT_LIST: return "NBD_OPT_LIST";
        case NBD_OPT_PEEK_EXPORT: return "NBD_OPT_PEEK_EXPORT";
        case NBD_OPT_STARTTLS: return "NBD_OPT_STARTTLS";
        case NBD_OPT_INFO: return "NBD_OPT_INFO";
        case NBD_OPT_GO: return "NBD_OPT_GO";
        case NBD_OPT_STRUCTURED_REPLY: return "NBD_OPT_STRUCTURED_REPLY";
        case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
        case NBD_OPT_SET_META_CONTEXT: return "NBD_OPT_SET_META_CONTEXT";
        case NBD_OPT_EXTENDED_HEADERS: return "NBD_OPT_EXTENDED_HEADERS";
        default: return "unknown";
    }
}

const char* command_name(uint16_t type) {
    switch (type) {
        case NBD_CMD_READ: return "NBD_CMD_READ";
        case NBD_CMD_WRITE: return "NBD_CMD_WRITE";
        case NBD_CMD_DISC: return "NBD_CMD_DISC";
        case NBD_CMD_FLUSH: return "NBD_CMD_FLUSH";
        case NBD_CMD_TRIM: return "NBD_CMD_TRIM";
        case NBD_CMD_CACHE: return "NBD_CMD_CACHE";
        case NBD_CMD_WRITE_ZEROES: return "NBD_CMD_WRITE_ZEROES";
        case NBD_CMD_BLOCK_STATUS: return "NBD_CMD_BLOCK_STATUS";
        case NBD_CMD_RESIZE: return "NBD_CMD_RESIZE";
        default: return "unknown";
    }
}

const char* reply_type_name(uint32_t reply_type) {
    switch (reply_type) {
        case NBD_REP_ACK: return "NBD_REP_ACK";
        case NBD_REP_SERVER: return "NBD_REP_SERVER";
        case NBD_REP_INFO: return "NBD_REP_INFO";
        case NBD_REP_META_CONTEXT: return "NBD_REP_META_CONTEXT";
        case NBD_REP_ERR_UNSUP: return "NBD_REP_ERR_UNSUP";
        case NBD_REP_ERR_POLICY: return "NBD_REP_ERR_POLICY";
        case NBD_REP_ERR_INVALID: return "NBD_REP_ERR_INVALID";
        case NBD_REP_ERR_PLATFORM: return "NBD_REP_ERR_PLATFORM";
        case NBD_REP_ERR_TLS_REQD: return "NBD_REP_ERR_TLS_REQD";
        case NBD_REP_ERR_UNKNOWN: return "NBD_REP_ERR_UNKNOWN";
        case NBD_REP_ERR_SHUTDOWN: return "NBD_REP_ERR_SHUTDOWN";
        case NBD_REP_ERR_BLOCK_SIZE_REQD: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
        case NBD_REP_ERR_TOO_BIG: return "NBD_REP_ERR_TOO_BIG";
        case NBD_REP_ERR_EXT_HEADER_REQD: return "NBD_REP_ERR_EXT_HEADER_REQD";
        default: return "unknown";
    }
}

}  // namespace ioplane::nbd
