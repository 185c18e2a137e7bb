// NBD wire codec: constants, parsers and encoders for the messages of the NBD
// protocol (/work/shared/specs/nbd-protocol.md, "fixed newstyle" handshake and
// compact, non-extended transmission headers). Pure functions over bytes: no
// I/O, no allocation except into the vectors and strings they return or append
// to, no exceptions. Parsers take untrusted bytes and are strict: anything the
// spec does not allow is an Error (EINVAL unless said otherwise), with a
// message that says what was wrong. Encoders take trusted values from the
// server; their preconditions are contract assertions (IOPLANE_ASSERT).
//
// Constants keep the spec's names (NBD_OPT_GO, NBD_CMD_READ, ...) so they can
// be grepped against the spec; they live in ioplane::nbd, so do not include
// <linux/nbd.h>, whose macros have the same names, in the same file.
//
// Thread contract: every function here is pure; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane::nbd {

// ---------------------------------------------------------------- magics

inline constexpr uint64_t NBDMAGIC = 0x4e42444d41474943;  // "NBDMAGIC" (INIT_PASSWD)
inline constexpr uint64_t IHAVEOPT = 0x49484156454F5054;  // "IHAVEOPT": greeting and option header
inline constexpr uint64_t NBD_REP_MAGIC = 0x3e889045565a9;  // option reply
inline constexpr uint32_t NBD_REQUEST_MAGIC = 0x25609513;
inline constexpr uint32_t NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
inline constexpr uint32_t NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
// Reserved for the experimental EXTENDED_HEADERS extension, which ioplane does
// not implement; named so that a request with it is recognisable in logs.
inline constexpr uint32_t NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
inline constexpr uint32_t NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

// ---------------------------------------------------------------- handshake

// Handshake flags (16 bits, server -> client).
inline constexpr uint16_t NBD_FLAG_FIXED_NEWSTYLE = 1u << 0;
inline constexpr uint16_t NBD_FLAG_NO_ZEROES = 1u << 1;

// Client flags (32 bits, client -> server).
inline constexpr uint32_t NBD_FLAG_C_FIXED_NEWSTYLE = 1u << 0;
inline constexpr uint32_t NBD_FLAG_C_NO_ZEROES = 1u << 1;

// Transmission flags (16 bits, sent with the export size).
inline constexpr uint16_t NBD_FLAG_HAS_FLAGS = 1u << 0;  // always set
inline constexpr uint16_t NBD_FLAG_READ_ONLY = 1u << 1;
inline constexpr uint16_t NBD_FLAG_SEND_FLUSH = 1u << 2;
inline constexpr uint16_t NBD_FLAG_SEND_FUA = 1u << 3;
inline constexpr uint16_t NBD_FLAG_ROTATIONAL = 1u << 4;
inline constexpr uint16_t NBD_FLAG_SEND_TRIM = 1u << 5;
inline constexpr uint16_t NBD_FLAG_SEND_WRITE_ZEROES = 1u << 6;
inline constexpr uint16_t NBD_FLAG_SEND_DF = 1u << 7;
inline constexpr uint16_t NBD_FLAG_CAN_MULTI_CONN = 1u << 8;
inline constexpr uint16_t NBD_FLAG_SEND_RESIZE = 1u << 9;  // experimental RESIZE
inline constexpr uint16_t NBD_FLAG_SEND_CACHE = 1u << 10;
inline constexpr uint16_t NBD_FLAG_SEND_FAST_ZERO = 1u << 11;
inline constexpr uint16_t NBD_FLAG_BLOCK_STATUS_PAYLOAD = 1u << 12;  // experimental EXTENDED_HEADERS

// Option types (NBD_OPT_*).
inline constexpr uint32_t NBD_OPT_EXPORT_NAME = 1;
inline constexpr uint32_t NBD_OPT_ABORT = 2;
inline constexpr uint32_t NBD_OPT_LIST = 3;
inline constexpr uint32_t NBD_OPT_PEEK_EXPORT = 4;  // withdrawn
inline constexpr uint32_t NBD_OPT_STARTTLS = 5;
inline constexpr uint32_t NBD_OPT_INFO = 6;
inline constexpr uint32_t NBD_OPT_GO = 7;
inline constexpr uint32_t NBD_OPT_STRUCTURED_REPLY = 8;
inline constexpr uint32_t NBD_OPT_LIST_META_CONTEXT = 9;
inline constexpr uint32_t NBD_OPT_SET_META_CONTEXT = 10;
inline constexpr uint32_t NBD_OPT_EXTENDED_HEADERS = 11;  // experimental

// Option reply types (NBD_REP_*); the errors have bit 31 set.
inline constexpr uint32_t NBD_REP_ACK = 1;
inline constexpr uint32_t NBD_REP_SERVER = 2;
inline constexpr uint32_t NBD_REP_INFO = 3;
inline constexpr uint32_t NBD_REP_META_CONTEXT = 4;
inline constexpr uint32_t NBD_REP_FLAG_ERROR = 1u << 31;
inline constexpr uint32_t NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
inline constexpr uint32_t NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
inline constexpr uint32_t NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
inline constexpr uint32_t NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
inline constexpr uint32_t NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
inline constexpr uint32_t NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
inline constexpr uint32_t NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
inline constexpr uint32_t NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
inline constexpr uint32_t NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;
inline constexpr uint32_t NBD_REP_ERR_EXT_HEADER_REQD = NBD_REP_FLAG_ERROR + 10;  // experimental

// Information types for NBD_OPT_INFO / NBD_OPT_GO and NBD_REP_INFO.
inline constexpr uint16_t NBD_INFO_EXPORT = 0;
inline constexpr uint16_t NBD_INFO_NAME = 1;
inline constexpr uint16_t NBD_INFO_DESCRIPTION = 2;
inline constexpr uint16_t NBD_INFO_BLOCK_SIZE = 3;

// ---------------------------------------------------------------- transmission

// Request types (NBD_CMD_*).
inline constexpr uint16_t NBD_CMD_READ = 0;
inline constexpr uint16_t NBD_CMD_WRITE = 1;
inline constexpr uint16_t NBD_CMD_DISC = 2;
inline constexpr uint16_t NBD_CMD_FLUSH = 3;
inline constexpr uint16_t NBD_CMD_TRIM = 4;
inline constexpr uint16_t NBD_CMD_CACHE = 5;
inline constexpr uint16_t NBD_CMD_WRITE_ZEROES = 6;
inline constexpr uint16_t NBD_CMD_BLOCK_STATUS = 7;
inline constexpr uint16_t NBD_CMD_RESIZE = 8;  // experimental; not implemented, rejected

// Command flags (NBD_CMD_FLAG_*).
inline constexpr uint16_t NBD_CMD_FLAG_FUA = 1u << 0;
inline constexpr uint16_t NBD_CMD_FLAG_NO_HOLE = 1u << 1;
inline constexpr uint16_t NBD_CMD_FLAG_DF = 1u << 2;
inline constexpr uint16_t NBD_CMD_FLAG_REQ_ONE = 1u << 3;
inline constexpr uint16_t NBD_CMD_FLAG_FAST_ZERO = 1u << 4;
inline constexpr uint16_t NBD_CMD_FLAG_PAYLOAD_LEN = 1u << 5;  // experimental; rejected

// Structured reply flags and chunk types.
inline constexpr uint16_t NBD_REPLY_FLAG_DONE = 1u << 0;
inline constexpr uint16_t NBD_REPLY_TYPE_NONE = 0;
inline constexpr uint16_t NBD_REPLY_TYPE_OFFSET_DATA = 1;
inline constexpr uint16_t NBD_REPLY_TYPE_OFFSET_HOLE = 2;
inline constexpr uint16_t NBD_REPLY_TYPE_BLOCK_STATUS = 5;
inline constexpr uint16_t NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;  // experimental
inline constexpr uint16_t NBD_REPLY_TYPE_FLAG_ERROR = 1u << 15;
inline constexpr uint16_t NBD_REPLY_TYPE_ERROR = NBD_REPLY_TYPE_FLAG_ERROR + 1;
inline constexpr uint16_t NBD_REPLY_TYPE_ERROR_OFFSET = NBD_REPLY_TYPE_FLAG_ERROR + 2;

// Error values of replies: a fixed set, not the host's errno (errno_to_nbd()).
inline constexpr uint32_t NBD_EPERM = 1;
inline constexpr uint32_t NBD_EIO = 5;
inline constexpr uint32_t NBD_ENOMEM = 12;
inline constexpr uint32_t NBD_EINVAL = 22;
inline constexpr uint32_t NBD_ENOSPC = 28;
inline constexpr uint32_t NBD_EOVERFLOW = 75;
inline constexpr uint32_t NBD_ENOTSUP = 95;
inline constexpr uint32_t NBD_ESHUTDOWN = 108;

// Flags of the base:allocation metadata context.
inline constexpr uint32_t NBD_STATE_HOLE = 1u << 0;
inline constexpr uint32_t NBD_STATE_ZERO = 1u << 1;
inline constexpr std::string_view kBaseAllocation = "base:allocation";
// QEMU's extension (nbd-qemu-extensions.rst): an extent's flags are the
// depth in the backing chain of the layer that allocates it (1: the top),
// 0 if none does.
inline constexpr std::string_view kQemuAllocationDepth = "qemu:allocation-depth";

// ---------------------------------------------------------------- sizes

inline constexpr size_t kHandshakeSize = 18;         // NBDMAGIC, IHAVEOPT, u16 flags
inline constexpr size_t kClientFlagsSize = 4;
inline constexpr size_t kOptionHeaderSize = 16;      // IHAVEOPT, u32 option, u32 length
inline constexpr size_t kOptionReplyHeaderSize = 20; // magic, u32 option, u32 type, u32 length
inline constexpr size_t kExportNameReplySize = 134;  // u64 size, u16 flags, 124 zeroes
inline constexpr size_t kExportNameReplyNoZeroesSize = 10;
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kStructuredReplyHeaderSize = 20;
inline constexpr size_t kOffsetDataHeaderSize = kStructuredReplyHeaderSize + 8;
inline constexpr size_t kOffsetHoleSize = kStructuredReplyHeaderSize + 12;

// The spec's hard limit for strings (export names, queries, messages).
inline constexpr size_t kMaxStringLength = 4096;

// Largest option payload the server reads into memory. The option length is a
// client-chosen u32, so buffering it blindly lets one connection pin 4 GiB. The
// largest sane option is GO/INFO or a META_CONTEXT request with a few queries,
// each string at most kMaxStringLength; 64 KiB covers that with room to spare.
// A longer option must be discarded in bounded pieces as it arrives and
// answered with NBD_REP_ERR_TOO_BIG (or, for NBD_OPT_EXPORT_NAME, which has
// no error reply, by a hard disconnect).
inline constexpr uint32_t kMaxOptionPayload = 64 * 1024;

// Cap on the queries of one LIST/SET_META_CONTEXT request (the spec lets a
// server refuse "too many" with NBD_REP_ERR_TOO_BIG).
inline constexpr uint32_t kMaxMetaContextQueries = 256;

// The spec's default maximum payload (2^25), and the size below which it says
// a payload SHOULD NOT be treated as a denial of service: a WRITE up to this
// long is read and discarded when rejected, never a reason to disconnect.
inline constexpr uint32_t kDefaultMaxPayload = 1u << 25;
inline constexpr uint32_t kMaxDiscardPayload = 1u << 25;

// ---------------------------------------------------------------- byte order

// Big-endian (network order) loads and stores; p need not be aligned.
// Thread contract: any thread; pure.
constexpr uint16_t load_be16(const uint8_t* p) {
    return static_cast<uint16_t>((uint16_t{p[0]} << 8) | p[1]);
}
constexpr uint32_t load_be32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
constexpr uint64_t load_be64(const uint8_t* p) {
    return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}
constexpr void store_be16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
constexpr void store_be32(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}
constexpr void store_be64(uint8_t* p, uint64_t v) {
    store_be32(p, static_cast<uint32_t>(v >> 32));
    store_be32(p + 4, static_cast<uint32_t>(v));
}

// ---------------------------------------------------------------- handshake phase

// The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
// Thread contract: any thread; pure.
void put_handshake(uint8_t out[kHandshakeSize], uint16_t handshake_flags);

// The client's 4-byte flags. EINVAL for an unknown flag or NBD_FLAG_C_NO_ZEROES
// when the server did not offer NBD_FLAG_NO_ZEROES: the spec says the server
// MUST then drop the connection.
// Thread contract: any thread; pure.
Result<uint32_t> parse_client_flags(std::span<const uint8_t> bytes4, uint16_t offered_handshake_flags);

struct OptionHeader {
    uint32_t option;
    uint32_t length;  // payload bytes that follow; may exceed kMaxOptionPayload
};

// An option header (exactly kOptionHeaderSize bytes). EINVAL on a wrong magic
// or size. The length is not checked here: the server needs the option code to
// answer an oversized option (see kMaxOptionPayload).
// Thread contract: any thread; pure.
Result<OptionHeader> parse_option_header(std::span<const uint8_t> bytes16);

// Client side (tests, tools): appends an option header and its payload.
// Thread contract: any thread; pure.
void put_option_header(std::vector<uint8_t>& out, uint32_t option, std::span<const uint8_t> payload = {});

// The payload of NBD_OPT_EXPORT_NAME: the whole payload is the name. EINVAL if
// longer than kMaxStringLength or containing NUL.
// Thread contract: any thread; pure.
Result<std::string> parse_export_name(std::span<const uint8_t> payload);

struct InfoRequest {
    std::string name;
    std::vector<uint16_t> info_types;  // as sent, without duplicates
};

// The payload of NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count,
// count x u16 info type. EINVAL (answer NBD_REP_ERR_INVALID) on a truncated
// payload, a length that points past the data, trailing bytes, a name over
// kMaxStringLength or with NUL, or an info type listed twice (the spec's MUST
// NOT). Unknown info types are kept: the server must ignore them.
// Thread contract: any thread; pure.
Result<InfoRequest> parse_info_request(std::span<const uint8_t> payload);

// Client side: appends the payload parse_info_request() accepts.
// Thread contract: any thread; pure.
void put_info_request(std::vector<uint8_t>& out, const InfoRequest& req);

struct MetaContextRequest {
    std::string export_name;
    std::vector<std::string> queries;
};

// The payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: u32 name
// length, name, u32 count, count x (u32 length, query). EINVAL (answer
// NBD_REP_ERR_INVALID) for the same faults as parse_info_request(); E2BIG
// (answer NBD_REP_ERR_TOO_BIG) for more than kMaxMetaContextQueries queries.
// Queries are checked as strings only (length, no NUL); whether they have the
// "namespace:" form is the server's business, as the spec says unknown ones
// are ignored.
// Thread contract: any thread; pure.
Result<MetaContextRequest> parse_meta_context_request(std::span<const uint8_t> payload);

// Client side: appends the payload parse_meta_context_request() accepts.
// Thread contract: any thread; pure.
void put_meta_context_request(std::vector<uint8_t>& out, const MetaContextRequest& req);

// Appends one option reply: NBD_REP_MAGIC, option, reply type, u32 length, data.
// Thread contract: any thread; pure.
void put_option_reply(std::vector<uint8_t>& out, uint32_t option, uint32_t reply_type,
                      std::span<const uint8_t> data = {});

// NBD_REP_SERVER for NBD_OPT_LIST: u32 name length, name.
// name.size() <= kMaxStringLength (asserted; the configuration rejects longer).
// Thread contract: any thread; pure.
void put_rep_server(std::vector<uint8_t>& out, uint32_t option, std::string_view name);

// NBD_REP_INFO / NBD_INFO_EXPORT: size and transmission flags (length 12).
// Thread contract: any thread; pure.
void put_info_export(std::vector<uint8_t>& out, uint32_t option, uint64_t size,
                     uint16_t transmission_flags);

// NBD_REP_INFO / NBD_INFO_BLOCK_SIZE (length 14).
// Thread contract: any thread; pure.
void put_info_block_size(std::vector<uint8_t>& out, uint32_t option, uint32_t minimum,
                         uint32_t preferred, uint32_t maximum);

// NBD_REP_INFO / NBD_INFO_NAME: the canonical export name (<= kMaxStringLength,
// asserted).
// Thread contract: any thread; pure.
void put_info_name(std::vector<uint8_t>& out, uint32_t option, std::string_view name);

// NBD_REP_INFO / NBD_INFO_DESCRIPTION; a longer description is cut to
// kMaxStringLength bytes at a UTF-8 character boundary.
// Thread contract: any thread; pure.
void put_info_description(std::vector<uint8_t>& out, uint32_t option, std::string_view description);

// NBD_REP_META_CONTEXT: u32 context id, name (<= kMaxStringLength, asserted).
// For LIST_META_CONTEXT QEMU sends id 0 (the spec leaves it open).
// Thread contract: any thread; pure.
void put_rep_meta_context(std::vector<uint8_t>& out, uint32_t option, uint32_t context_id,
                          std::string_view name);

// An error reply (err has bit 31 set, asserted) carrying a message for the
// user, cut to kMaxStringLength bytes at a UTF-8 character boundary.
// Thread contract: any thread; pure.
void put_option_error(std::vector<uint8_t>& out, uint32_t option, uint32_t err, std::string_view message);

// The answer to NBD_OPT_EXPORT_NAME: u64 size, u16 transmission flags, then
// 124 zero bytes unless the client negotiated NBD_FLAG_C_NO_ZEROES.
// Thread contract: any thread; pure.
void put_export_name_reply(std::vector<uint8_t>& out, uint64_t size, uint16_t flags, bool no_zeroes);

// ---------------------------------------------------------------- transmission phase

struct Request {
    uint16_t flags;   // NBD_CMD_FLAG_*
    uint16_t type;    // NBD_CMD_*
    uint64_t cookie;  // opaque, echoed in the reply
    uint64_t offset;
    uint32_t length;  // for NBD_CMD_WRITE, also the payload that follows
};

// A request header (exactly kRequestSize bytes). EINVAL on a wrong magic or
// size; the stream is then out of sync and the server must disconnect. Nothing
// else is checked here: see validate_request().
// Thread contract: any thread; pure.
Result<Request> parse_request(std::span<const uint8_t> bytes28);

// Client side: encodes a request header.
// Thread contract: any thread; pure.
void put_request(uint8_t out[kRequestSize], const Request& req);

// What the server negotiated for this connection's export.
struct ExportLimits {
    uint64_t size = 0;
    bool read_only = false;
    bool structured_replies = false;  // NBD_OPT_STRUCTURED_REPLY succeeded; the
                                      // server then also advertises NBD_FLAG_SEND_DF
    uint32_t max_payload = kDefaultMaxPayload;  // for READ and WRITE
    uint32_t min_block = 1;  // power of two; offsets and lengths must be multiples
    bool can_trim = false;          // the NBD_FLAG_SEND_* flags advertised
    bool can_write_zeroes = false;
    bool can_fast_zero = false;
    bool can_cache = false;
    bool can_flush = false;
    bool can_fua = false;
    // NBD_OPT_SET_META_CONTEXT selected at least one context for this export;
    // NBD_CMD_BLOCK_STATUS is invalid otherwise.
    bool meta_context_selected = false;
};

// What the server does with a parsed request. Verdict{} (all zero) means:
// valid, execute it and reply.
struct Verdict {
    // 0: valid. Otherwise the NBD_E* value to reply with, without executing.
    uint32_t nbd_error = 0;
    // Stop reading requests and close the connection once in-flight replies
    // are sent. Set for NBD_CMD_DISC (the client's clean, "soft" disconnect)
    // and for a WRITE whose payload is too large to read even to discard it:
    // the stream cannot be resynchronised then (a hard disconnect; replying
    // nbd_error first is allowed but not required).
    bool disconnect = false;
    // `length` payload bytes follow the header and must be read before the
    // next request: the data to write if nbd_error == 0, else to discard.
    // True for every NBD_CMD_WRITE that does not disconnect.
    bool consume_payload = false;
    // Send no reply at all (NBD_CMD_DISC only).
    bool no_reply = false;

    friend bool operator==(const Verdict&, const Verdict&) = default;
};

// Applies the spec's rules to a request, in this order (the spec sets no
// precedence between them):
//  1. NBD_CMD_DISC: disconnect, no reply, whatever its fields.
//  2. WRITE with length > max(max_payload, kMaxDiscardPayload): EINVAL and
//     disconnect, since the payload is too large to skip (DoS, spec "Size
//     constraints"). Every other WRITE has consume_payload.
//  3. Unknown command (including the unimplemented RESIZE): EINVAL.
//  4. A flag not valid for the command: EINVAL. FUA is valid on every command
//     if can_fua; NO_HOLE on WRITE_ZEROES; FAST_ZERO on WRITE_ZEROES if
//     can_fast_zero; DF on READ with structured replies; REQ_ONE on
//     BLOCK_STATUS; PAYLOAD_LEN (extended headers) and unknown bits never.
//  5. WRITE, TRIM, WRITE_ZEROES on a read-only export: EPERM.
//  6. A command whose transmission flag was not advertised (FLUSH, TRIM,
//     WRITE_ZEROES, CACHE), or BLOCK_STATUS without structured replies and a
//     selected meta context: EINVAL.
//  7. FLUSH with nonzero offset or length (reserved, MUST be zero): EINVAL.
//  8. Zero length on READ, WRITE, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS:
//     EINVAL (the spec leaves it unspecified; a reply to BLOCK_STATUS could not
//     even be valid).
//  9. READ or WRITE longer than max_payload: EOVERFLOW for a READ with
//     structured replies (as the spec permits), else EINVAL.
// 10. offset + length past the export size (overflow included): ENOSPC for
//     WRITE and WRITE_ZEROES, EINVAL for the others (spec "Error values").
// 11. offset or length not a multiple of min_block: EINVAL.
// Thread contract: any thread; pure.
Verdict validate_request(const Request& req, const ExportLimits& limits);

// A simple reply header: magic, error, cookie (read data follows if error == 0).
// Thread contract: any thread; pure.
void put_simple_reply(uint8_t out[kSimpleReplySize], uint32_t error, uint64_t cookie);

// A structured reply chunk header: magic, flags, type, cookie, payload length.
// Thread contract: any thread; pure.
void put_structured_header(uint8_t out[kStructuredReplyHeaderSize], uint16_t flags, uint16_t type,
                           uint64_t cookie, uint32_t length);

// NBD_REPLY_TYPE_OFFSET_DATA up to the data: the header with length =
// 8 + data_length, then the u64 offset; data_length bytes of data must follow.
// data_length is in [1, 2^32 - 9] (asserted).
// Thread contract: any thread; pure.
void put_chunk_offset_data_header(uint8_t out[kOffsetDataHeaderSize], uint16_t flags, uint64_t cookie,
                                  uint64_t offset, uint32_t data_length);

// A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk (length 12); hole_length != 0
// (asserted).
// Thread contract: any thread; pure.
void put_chunk_offset_hole(uint8_t out[kOffsetHoleSize], uint16_t flags, uint64_t cookie, uint64_t offset,
                           uint32_t hole_length);

// A whole NBD_REPLY_TYPE_ERROR chunk: u32 error (nonzero, asserted), u16
// message length, message (cut to kMaxStringLength at a UTF-8 boundary).
// Thread contract: any thread; pure.
void put_chunk_error(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t error,
                     std::string_view message);

// A whole NBD_REPLY_TYPE_ERROR_OFFSET chunk: as put_chunk_error(), then the
// u64 offset at which the error happened.
// Thread contract: any thread; pure.
void put_chunk_error_offset(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t error,
                            std::string_view message, uint64_t offset);

struct Extent {
    uint32_t length;  // nonzero
    uint32_t flags;   // e.g. NBD_STATE_HOLE | NBD_STATE_ZERO
};

// A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk: u32 context id, then the extents
// (at least one, each with nonzero length, asserted). The spec asks for at most
// 2^20 extents per chunk; that is the caller's choice.
// Thread contract: any thread; pure.
void put_chunk_block_status(std::vector<uint8_t>& out, uint16_t flags, uint64_t cookie, uint32_t context_id,
                            std::span<const Extent> extents);

// ---------------------------------------------------------------- helpers

// Maps a host errno (positive, or negative as some callers return it) to the
// spec's error values: EPERM/EROFS/EACCES -> EPERM, ENOSPC/EDQUOT/EFBIG ->
// ENOSPC, ENOTSUP/EOPNOTSUPP -> ENOTSUP, EIO, ENOMEM, EINVAL, EOVERFLOW,
// ESHUTDOWN as themselves, 0 -> 0, anything else -> EIO. Note that the spec
// wants ENOTSUP only for fast-zero requests; the caller filters that.
// Thread contract: any thread; pure.
uint32_t errno_to_nbd(int err);

// The longest prefix of s of at most max bytes that does not end inside a
// UTF-8 sequence (for s valid UTF-8; otherwise the plain max-byte prefix).
// Thread contract: any thread; pure.
std::string_view truncate_utf8(std::string_view s, size_t max);

// Names for logs: "NBD_OPT_GO", "NBD_CMD_READ", "NBD_REP_ERR_UNSUP", ... or
// "unknown". Never null; static storage.
// Thread contract: any thread; pure.
const char* option_name(uint32_t option);
const char* command_name(uint16_t type);
const char* reply_type_name(uint32_t reply_type);

}  // namespace ioplane::nbd
