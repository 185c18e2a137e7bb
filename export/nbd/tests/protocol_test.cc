// Tests of the NBD wire codec against the byte layouts of the spec
// (/work/shared/specs/nbd-protocol.md). Expected bytes are written out by hand
// or built with Wire below, which is independent of the codec's helpers.
#include "nbd/protocol.h"

#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

namespace ioplane::nbd {

// Readable failure output for verdicts.
void PrintTo(const Verdict& v, std::ostream* os) {
    *os << "{nbd_error=" << v.nbd_error << " disconnect=" << v.disconnect
        << " consume_payload=" << v.consume_payload << " no_reply=" << v.no_reply << "}";
}

namespace {

using Bytes = std::vector<uint8_t>;

// Builds expected wire bytes field by field, big-endian, without the codec.
struct Wire {
    Bytes b;
    Wire& u8(unsigned v) {
        b.push_back(static_cast<uint8_t>(v));
        return *this;
    }
    Wire& u16(uint16_t v) { return u8(v >> 8).u8(v & 0xff); }
    Wire& u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v)); }
    Wire& u64(uint64_t v) { return u32(static_cast<uint32_t>(v >> 32)).u32(static_cast<uint32_t>(v)); }
    Wire& str(std::string_view s) {
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    Wire& zeroes(size_t n) {
        b.insert(b.end(), n, 0);
        return *this;
    }
};

Bytes bytes(std::initializer_list<int> l) {
    Bytes b;
    for (int v : l) b.push_back(static_cast<uint8_t>(v));
    return b;
}

std::span<const uint8_t> span_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Asserts that r failed with `code` and that the message mentions `what`.
template <class T>
void expect_error(const Result<T>& r, int code, std::string_view what) {
    ASSERT_FALSE(r.has_value()) << "expected failure mentioning '" << what << "'";
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find(what), std::string::npos)
        << "message '" << r.error().message << "' lacks '" << what << "'";
}

// ---------------------------------------------------------------- constants

TEST(NbdConstants, MagicsSpellTheirAsciiNames) {
    Bytes b(8);
    store_be64(b.data(), NBDMAGIC);
    EXPECT_EQ(std::string(b.begin(), b.end()), "NBDMAGIC");
    store_be64(b.data(), IHAVEOPT);
    EXPECT_EQ(std::string(b.begin(), b.end()), "IHAVEOPT");
    EXPECT_EQ(NBD_REP_MAGIC, 0x0003e889045565a9u);
    EXPECT_EQ(NBD_REQUEST_MAGIC, 0x25609513u);
    EXPECT_EQ(NBD_SIMPLE_REPLY_MAGIC, 0x67446698u);
    EXPECT_EQ(NBD_STRUCTURED_REPLY_MAGIC, 0x668e33efu);
}

TEST(NbdConstants, ValuesMatchSpec) {
    // Spot checks of the tables in "Values" that are easy to get wrong.
    EXPECT_EQ(NBD_REP_ERR_UNSUP, 0x80000001u);
    EXPECT_EQ(NBD_REP_ERR_TOO_BIG, 0x80000009u);
    EXPECT_EQ(NBD_REP_ERR_BLOCK_SIZE_REQD, 0x80000008u);
    EXPECT_EQ(NBD_REPLY_TYPE_ERROR, 0x8001u);
    EXPECT_EQ(NBD_REPLY_TYPE_ERROR_OFFSET, 0x8002u);
    EXPECT_EQ(NBD_REPLY_TYPE_BLOCK_STATUS, 5u);
    EXPECT_EQ(NBD_FLAG_SEND_DF, 0x80u);
    EXPECT_EQ(NBD_FLAG_CAN_MULTI_CONN, 0x100u);
    EXPECT_EQ(NBD_FLAG_SEND_CACHE, 0x400u);
    EXPECT_EQ(NBD_FLAG_SEND_FAST_ZERO, 0x800u);
    EXPECT_EQ(NBD_FLAG_BLOCK_STATUS_PAYLOAD, 0x1000u);
    EXPECT_EQ(NBD_CMD_FLAG_FAST_ZERO, 0x10u);
    EXPECT_EQ(NBD_CMD_FLAG_PAYLOAD_LEN, 0x20u);
    EXPECT_EQ(NBD_OPT_EXTENDED_HEADERS, 11u);
    EXPECT_EQ(NBD_CMD_BLOCK_STATUS, 7u);
    EXPECT_EQ(NBD_EOVERFLOW, 75u);
    EXPECT_EQ(NBD_ESHUTDOWN, 108u);
    EXPECT_EQ(NBD_INFO_BLOCK_SIZE, 3u);
    EXPECT_EQ(kRequestSize, 28u);
    EXPECT_EQ(kStructuredReplyHeaderSize, 20u);
}

// ---------------------------------------------------------------- byte order

TEST(NbdByteOrder, StoresBigEndian) {
    uint8_t b[8] = {};
    store_be16(b, 0x0102);
    EXPECT_EQ(Bytes(b, b + 2), bytes({1, 2}));
    store_be32(b, 0x01020304);
    EXPECT_EQ(Bytes(b, b + 4), bytes({1, 2, 3, 4}));
    store_be64(b, 0x0102030405060708);
    EXPECT_EQ(Bytes(b, b + 8), bytes({1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(NbdByteOrder, LoadsBigEndian) {
    const uint8_t b[8] = {0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};
    EXPECT_EQ(load_be16(b), 0xfedcu);
    EXPECT_EQ(load_be32(b), 0xfedcba98u);
    EXPECT_EQ(load_be64(b), 0xfedcba9876543210u);
    static_assert(load_be16(std::array<uint8_t, 2>{0x12, 0x34}.data()) == 0x1234);
}

// ---------------------------------------------------------------- handshake

TEST(NbdHandshake, GreetingLayout) {
    uint8_t out[kHandshakeSize];
    put_handshake(out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    EXPECT_EQ(Bytes(out, out + kHandshakeSize), Wire{}.str("NBDMAGICIHAVEOPT").u16(3).b);
}

TEST(NbdHandshake, ClientFlagsAccepted) {
    auto r = parse_client_flags(bytes({0, 0, 0, 3}), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(*r, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    auto none = parse_client_flags(bytes({0, 0, 0, 0}), NBD_FLAG_FIXED_NEWSTYLE);
    ASSERT_TRUE(none.has_value());
    EXPECT_EQ(*none, 0u);
}

TEST(NbdHandshake, ClientFlagsRejected) {
    expect_error(parse_client_flags(bytes({0, 0, 0, 4}), 3), EINVAL, "unknown");
    expect_error(parse_client_flags(bytes({0x80, 0, 0, 1}), 3), EINVAL, "unknown");
    expect_error(parse_client_flags(bytes({0, 0, 0, 2}), NBD_FLAG_FIXED_NEWSTYLE), EINVAL, "NO_ZEROES");
    expect_error(parse_client_flags(bytes({0, 0, 1}), 3), EINVAL, "bytes");
}

// ---------------------------------------------------------------- option header

TEST(NbdOptionHeader, Parses) {
    const Bytes b = Wire{}.str("IHAVEOPT").u32(NBD_OPT_GO).u32(0x12345678).b;
    auto r = parse_option_header(b);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->option, NBD_OPT_GO);
    EXPECT_EQ(r->length, 0x12345678u);  // not limited here: the server answers TOO_BIG
}

TEST(NbdOptionHeader, WrongMagic) {
    Bytes b = Wire{}.str("IHAVEOPS").u32(1).u32(0).b;
    expect_error(parse_option_header(b), EINVAL, "magic");
    b = Wire{}.u64(NBD_REP_MAGIC).u32(1).u32(0).b;
    expect_error(parse_option_header(b), EINVAL, "magic");
}

TEST(NbdOptionHeader, WrongSize) {
    const Bytes b = Wire{}.str("IHAVEOPT").u32(1).u32(0).u8(0).b;
    expect_error(parse_option_header(std::span(b).first(15)), EINVAL, "15 bytes");
    expect_error(parse_option_header(b), EINVAL, "17 bytes");
    expect_error(parse_option_header({}), EINVAL, "0 bytes");
}

TEST(NbdOptionHeader, PutRoundTrips) {
    Bytes out;
    const Bytes payload = bytes({9, 8, 7});
    put_option_header(out, NBD_OPT_LIST, payload);
    EXPECT_EQ(out, Wire{}.str("IHAVEOPT").u32(3).u32(3).u8(9).u8(8).u8(7).b);
    auto r = parse_option_header(std::span(out).first(kOptionHeaderSize));
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->option, NBD_OPT_LIST);
    EXPECT_EQ(r->length, 3u);
}

// ---------------------------------------------------------------- export name

TEST(NbdExportName, Parses) {
    auto r = parse_export_name(span_of("disk0"));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(*r, "disk0");
    auto empty = parse_export_name({});
    ASSERT_TRUE(empty.has_value());
    EXPECT_EQ(*empty, "");  // the default export
    const std::string max(kMaxStringLength, 'n');
    auto longest = parse_export_name(span_of(max));
    ASSERT_TRUE(longest.has_value());
    EXPECT_EQ(longest->size(), kMaxStringLength);
}

TEST(NbdExportName, Rejects) {
    const std::string too_long(kMaxStringLength + 1, 'n');
    expect_error(parse_export_name(span_of(too_long)), EINVAL, "longer than 4096");
    const std::string nul("ab\0c", 4);
    expect_error(parse_export_name(span_of(nul)), EINVAL, "NUL");
}

// ---------------------------------------------------------------- INFO / GO

Bytes info_payload(std::string_view name, std::initializer_list<uint16_t> types) {
    Wire w;
    w.u32(static_cast<uint32_t>(name.size())).str(name).u16(static_cast<uint16_t>(types.size()));
    for (uint16_t t : types) w.u16(t);
    return w.b;
}

TEST(NbdInfoRequest, Parses) {
    const Bytes b = info_payload("disk0", {NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT, 0x7777});
    auto r = parse_info_request(b);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->name, "disk0");
    EXPECT_EQ(r->info_types, (std::vector<uint16_t>{3, 0, 0x7777}));  // unknown kept, order kept
}

TEST(NbdInfoRequest, EmptyNameAndList) {
    auto r = parse_info_request(info_payload("", {}));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->name, "");
    EXPECT_TRUE(r->info_types.empty());
}

TEST(NbdInfoRequest, RoundTrips) {
    const Bytes b = info_payload("exp", {NBD_INFO_NAME, NBD_INFO_DESCRIPTION});
    auto r = parse_info_request(b);
    ASSERT_TRUE(r.has_value());
    Bytes again;
    put_info_request(again, *r);
    EXPECT_EQ(again, b);
}

TEST(NbdInfoRequest, TooShort) {
    expect_error(parse_info_request(bytes({0, 0, 0, 0, 0})), EINVAL, "need at least 6");
    expect_error(parse_info_request({}), EINVAL, "need at least 6");
}

TEST(NbdInfoRequest, EveryTruncationFails) {
    const Bytes b = info_payload("disk0", {NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE});
    for (size_t n = 0; n < b.size(); ++n)
        EXPECT_FALSE(parse_info_request(std::span(b).first(n)).has_value()) << "prefix of " << n << " bytes";
}

TEST(NbdInfoRequest, NameLengthLies) {
    Bytes b = info_payload("disk0", {});
    b[3] = 6;  // one more than present: the u16 count would be read from the name
    expect_error(parse_info_request(b), EINVAL, "exceeds the option data");
    b[0] = 0xff;
    b[1] = b[2] = b[3] = 0xff;
    expect_error(parse_info_request(b), EINVAL, "exceeds 4096");
}

TEST(NbdInfoRequest, NameLimit) {
    const std::string max(kMaxStringLength, 'x');
    auto r = parse_info_request(info_payload(max, {}));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->name.size(), kMaxStringLength);
    const std::string over(kMaxStringLength + 1, 'x');
    expect_error(parse_info_request(info_payload(over, {})), EINVAL, "exceeds 4096");
}

TEST(NbdInfoRequest, NulInName) {
    expect_error(parse_info_request(info_payload(std::string_view("a\0b", 3), {})), EINVAL, "NUL");
}

TEST(NbdInfoRequest, CountLies) {
    Bytes b = info_payload("d", {1, 2});
    b[6] = 3;  // count 3, two present (count is at 4 + 1)
    expect_error(parse_info_request(b), EINVAL, "3 info types need 6 bytes, 4 present");
    b.pop_back();  // odd number of bytes
    b[6] = 1;
    expect_error(parse_info_request(b), EINVAL, "trailing");
}

TEST(NbdInfoRequest, TrailingGarbage) {
    Bytes b = info_payload("disk0", {NBD_INFO_EXPORT});
    b.push_back(0);
    b.push_back(0);
    expect_error(parse_info_request(b), EINVAL, "2 trailing bytes");
}

TEST(NbdInfoRequest, DuplicateInfoType) {
    expect_error(parse_info_request(info_payload("d", {3, 0, 3})), EINVAL, "info type 3 requested twice");
}

// ---------------------------------------------------------------- META_CONTEXT

Bytes meta_payload(std::string_view name, std::initializer_list<std::string_view> queries) {
    Wire w;
    w.u32(static_cast<uint32_t>(name.size())).str(name).u32(static_cast<uint32_t>(queries.size()));
    for (std::string_view q : queries) w.u32(static_cast<uint32_t>(q.size())).str(q);
    return w.b;
}

TEST(NbdMetaContextRequest, Parses) {
    auto r = parse_meta_context_request(meta_payload("disk0", {"base:allocation", "qemu:dirty-bitmap:b0"}));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->export_name, "disk0");
    EXPECT_EQ(r->queries, (std::vector<std::string>{"base:allocation", "qemu:dirty-bitmap:b0"}));
}

TEST(NbdMetaContextRequest, NoQueriesAndEmptyQuery) {
    auto r = parse_meta_context_request(meta_payload("", {}));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_TRUE(r->queries.empty());
    auto e = parse_meta_context_request(meta_payload("x", {""}));
    ASSERT_TRUE(e.has_value()) << e.error().message;
    EXPECT_EQ(e->queries, (std::vector<std::string>{""}));
}

TEST(NbdMetaContextRequest, RoundTrips) {
    const Bytes b = meta_payload("exp", {"base:", "x-foo:bar"});
    auto r = parse_meta_context_request(b);
    ASSERT_TRUE(r.has_value());
    Bytes again;
    put_meta_context_request(again, *r);
    EXPECT_EQ(again, b);
}

TEST(NbdMetaContextRequest, EveryTruncationFails) {
    const Bytes b = meta_payload("disk0", {"base:allocation", "q"});
    for (size_t n = 0; n < b.size(); ++n)
        EXPECT_FALSE(parse_meta_context_request(std::span(b).first(n)).has_value())
            << "prefix of " << n << " bytes";
    expect_error(parse_meta_context_request(bytes({0, 0, 0, 0, 0, 0, 0})), EINVAL, "need at least 8");
}

TEST(NbdMetaContextRequest, NameLengthLies) {
    Bytes b = meta_payload("disk0", {});
    b[3] = 6;
    expect_error(parse_meta_context_request(b), EINVAL, "exceeds the option data");
    b[0] = 0x80;
    expect_error(parse_meta_context_request(b), EINVAL, "exceeds 4096");
}

TEST(NbdMetaContextRequest, CountLies) {
    Bytes b = meta_payload("d", {"base:allocation"});
    b[8] = 2;  // count 2 (at 4 + 1 + 3), one query present
    expect_error(parse_meta_context_request(b), EINVAL, "query 1: truncated");
    // A count that cannot fit is a lie, not "too many", and allocates nothing.
    Bytes huge = meta_payload("d", {});
    huge[5] = huge[6] = huge[7] = huge[8] = 0xff;
    expect_error(parse_meta_context_request(huge), EINVAL, "cannot fit");
}

TEST(NbdMetaContextRequest, QueryLengthLies) {
    Bytes b = meta_payload("d", {"base:a", "qq"});
    // The second query's length is the u32 before its last 2 bytes.
    b[b.size() - 3] = 3;
    expect_error(parse_meta_context_request(b), EINVAL, "query 1: query length 3 exceeds the 2 bytes left");
}

TEST(NbdMetaContextRequest, QueryLimit) {
    const std::string max(kMaxStringLength, 'q');
    auto r = parse_meta_context_request(meta_payload("d", {max}));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->queries.at(0).size(), kMaxStringLength);
    const std::string over(kMaxStringLength + 1, 'q');
    expect_error(parse_meta_context_request(meta_payload("d", {over})), EINVAL, "query 0: query length 4097");
}

TEST(NbdMetaContextRequest, NulInQueryOrName) {
    expect_error(parse_meta_context_request(meta_payload("d", {std::string_view("ba\0se:", 6)})), EINVAL, "NUL");
    expect_error(parse_meta_context_request(meta_payload(std::string_view("\0", 1), {})), EINVAL, "NUL");
}

TEST(NbdMetaContextRequest, TrailingGarbage) {
    Bytes b = meta_payload("d", {"base:allocation"});
    b.push_back(1);
    expect_error(parse_meta_context_request(b), EINVAL, "1 trailing bytes");
}

TEST(NbdMetaContextRequest, TooManyQueries) {
    auto many = [](uint32_t n) {
        Wire w;
        w.u32(0).u32(n);
        for (uint32_t i = 0; i < n; ++i) w.u32(0);
        return w.b;
    };
    auto ok = parse_meta_context_request(many(kMaxMetaContextQueries));
    ASSERT_TRUE(ok.has_value()) << ok.error().message;
    EXPECT_EQ(ok->queries.size(), kMaxMetaContextQueries);
    expect_error(parse_meta_context_request(many(kMaxMetaContextQueries + 1)), E2BIG, "257 queries");
}

// ---------------------------------------------------------------- option replies

TEST(NbdOptionReply, AckLayout) {
    Bytes out;
    put_option_reply(out, NBD_OPT_GO, NBD_REP_ACK);
    EXPECT_EQ(out, bytes({0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,  // magic
                          0, 0, 0, 7,                                        // option
                          0, 0, 0, 1,                                        // NBD_REP_ACK
                          0, 0, 0, 0}));                                     // no data
}

TEST(NbdOptionReply, AppendsWithData) {
    Bytes out = bytes({0xaa});  // appends; never clears
    put_option_reply(out, 42, NBD_REP_INFO, bytes({1, 2, 3}));
    EXPECT_EQ(out, Wire{}.u8(0xaa).u64(NBD_REP_MAGIC).u32(42).u32(3).u32(3).u8(1).u8(2).u8(3).b);
}

TEST(NbdOptionReply, RepServer) {
    Bytes out;
    put_rep_server(out, NBD_OPT_LIST, "disk0");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(3).u32(2).u32(9).u32(5).str("disk0").b);
}

TEST(NbdOptionReply, InfoExport) {
    Bytes out;
    put_info_export(out, NBD_OPT_GO, 0x0102030405060708, 0x0143);
    EXPECT_EQ(out, bytes({0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0, 0, 0, 3,
                          0, 0, 0, 12,                   // length MUST be 12
                          0, 0,                          // NBD_INFO_EXPORT
                          1, 2, 3, 4, 5, 6, 7, 8,        // size
                          0x01, 0x43}));                 // transmission flags
}

TEST(NbdOptionReply, InfoBlockSize) {
    Bytes out;
    put_info_block_size(out, NBD_OPT_INFO, 512, 4096, 1u << 25);
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(6).u32(3).u32(14).u16(3).u32(512).u32(4096).u32(1u << 25).b);
}

TEST(NbdOptionReply, InfoNameAndDescription) {
    Bytes out;
    put_info_name(out, NBD_OPT_GO, "disk0");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(7).u32(3).u32(7).u16(1).str("disk0").b);
    out.clear();
    put_info_name(out, NBD_OPT_GO, "");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(7).u32(3).u32(2).u16(1).b);  // length at least 2
    out.clear();
    put_info_description(out, NBD_OPT_INFO, "a disk");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(6).u32(3).u32(8).u16(2).str("a disk").b);
    out.clear();
    put_info_description(out, NBD_OPT_INFO, std::string(5000, 'd'));
    EXPECT_EQ(load_be32(out.data() + 16), 2 + kMaxStringLength);
    EXPECT_EQ(out.size(), kOptionReplyHeaderSize + 2 + kMaxStringLength);
}

TEST(NbdOptionReply, MetaContext) {
    Bytes out;
    put_rep_meta_context(out, NBD_OPT_SET_META_CONTEXT, 0xdeadbeef, kBaseAllocation);
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(10).u32(4).u32(4 + 15).u32(0xdeadbeef).str("base:allocation").b);
}

TEST(NbdOptionReply, Error) {
    Bytes out;
    put_option_error(out, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "no such export");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(7).u32(0x80000006).u32(14).str("no such export").b);
    out.clear();
    put_option_error(out, 99, NBD_REP_ERR_UNSUP, "");
    EXPECT_EQ(out, Wire{}.u64(NBD_REP_MAGIC).u32(99).u32(0x80000001).u32(0).b);
}

TEST(NbdOptionReply, ErrorMessageCutAtCharacterBoundary) {
    // 4095 ASCII bytes then a 3-byte character: the character would straddle
    // the 4096-byte limit, so it is dropped whole.
    std::string m(kMaxStringLength - 1, 'e');
    m += "\xe2\x82\xac";  // U+20AC
    m += "tail";
    Bytes out;
    put_option_error(out, NBD_OPT_GO, NBD_REP_ERR_INVALID, m);
    EXPECT_EQ(load_be32(out.data() + 16), kMaxStringLength - 1);
    EXPECT_EQ(out.size(), kOptionReplyHeaderSize + kMaxStringLength - 1);
    EXPECT_EQ(out.back(), 'e');
}

TEST(NbdOptionReply, ExportNameReply) {
    Bytes out;
    put_export_name_reply(out, 1u << 30, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH, false);
    EXPECT_EQ(out, Wire{}.u64(1u << 30).u16(0x0005).zeroes(124).b);
    EXPECT_EQ(out.size(), kExportNameReplySize);
    out.clear();
    put_export_name_reply(out, 1u << 30, NBD_FLAG_HAS_FLAGS, true);
    EXPECT_EQ(out, Wire{}.u64(1u << 30).u16(1).b);
    EXPECT_EQ(out.size(), kExportNameReplyNoZeroesSize);
}

// ---------------------------------------------------------------- requests

TEST(NbdRequest, Parses) {
    const Bytes b = bytes({0x25, 0x60, 0x95, 0x13,                          // magic
                           0x00, 0x01,                                      // flags: FUA
                           0x00, 0x01,                                      // type: WRITE
                           0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,  // cookie
                           0, 0, 0, 0, 0, 0, 0x10, 0,                       // offset 4096
                           0, 0, 0x02, 0});                                 // length 512
    auto r = parse_request(b);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->flags, NBD_CMD_FLAG_FUA);
    EXPECT_EQ(r->type, NBD_CMD_WRITE);
    EXPECT_EQ(r->cookie, 0x1122334455667788u);
    EXPECT_EQ(r->offset, 4096u);
    EXPECT_EQ(r->length, 512u);
}

TEST(NbdRequest, WrongMagic) {
    // The historic request magic, the extended-header one, and a reply magic.
    for (uint32_t magic : {0x12560953u, NBD_EXTENDED_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC}) {
        const Bytes b = Wire{}.u32(magic).u16(0).u16(0).u64(1).u64(0).u32(512).b;
        expect_error(parse_request(b), EINVAL, "magic");
    }
}

TEST(NbdRequest, WrongSize) {
    const Bytes b = Wire{}.u32(NBD_REQUEST_MAGIC).u16(0).u16(0).u64(1).u64(0).u32(512).u8(0).b;
    expect_error(parse_request(std::span(b).first(27)), EINVAL, "27 bytes");
    expect_error(parse_request(b), EINVAL, "29 bytes");
}

TEST(NbdRequest, PutRoundTrips) {
    const Request req{.flags = 0x0003, .type = NBD_CMD_WRITE_ZEROES, .cookie = ~0ull, .offset = 1ull << 40,
                      .length = 0xfffffffe};
    uint8_t out[kRequestSize];
    put_request(out, req);
    EXPECT_EQ(Bytes(out, out + kRequestSize),
              Wire{}.u32(NBD_REQUEST_MAGIC).u16(3).u16(6).u64(~0ull).u64(1ull << 40).u32(0xfffffffe).b);
    auto r = parse_request(std::span<const uint8_t>(out, kRequestSize));
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->flags, req.flags);
    EXPECT_EQ(r->type, req.type);
    EXPECT_EQ(r->cookie, req.cookie);
    EXPECT_EQ(r->offset, req.offset);
    EXPECT_EQ(r->length, req.length);
}

// ---------------------------------------------------------------- replies

TEST(NbdReply, Simple) {
    uint8_t out[kSimpleReplySize];
    put_simple_reply(out, NBD_EINVAL, 0x0102030405060708);
    EXPECT_EQ(Bytes(out, out + kSimpleReplySize),
              bytes({0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(NbdReply, StructuredHeader) {
    uint8_t out[kStructuredReplyHeaderSize];
    put_structured_header(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 7, 0);
    EXPECT_EQ(Bytes(out, out + kStructuredReplyHeaderSize),
              bytes({0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0}));
}

TEST(NbdReply, OffsetDataHeader) {
    uint8_t out[kOffsetDataHeaderSize];
    put_chunk_offset_data_header(out, 0, 9, 0x100000, 4096);
    EXPECT_EQ(Bytes(out, out + kOffsetDataHeaderSize),
              Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(0).u16(1).u64(9).u32(8 + 4096).u64(0x100000).b);
}

TEST(NbdReply, OffsetHole) {
    uint8_t out[kOffsetHoleSize];
    put_chunk_offset_hole(out, NBD_REPLY_FLAG_DONE, 9, 512, 1024);
    EXPECT_EQ(Bytes(out, out + kOffsetHoleSize),
              Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(1).u16(2).u64(9).u32(12).u64(512).u32(1024).b);
}

TEST(NbdReply, ErrorChunk) {
    Bytes out;
    put_chunk_error(out, NBD_REPLY_FLAG_DONE, 5, NBD_EIO, "bad sector");
    EXPECT_EQ(out, Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(1).u16(0x8001).u64(5).u32(6 + 10)
                       .u32(5).u16(10).str("bad sector").b);
    out.clear();
    put_chunk_error(out, NBD_REPLY_FLAG_DONE, 5, NBD_EPERM, "");
    EXPECT_EQ(out, Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(1).u16(0x8001).u64(5).u32(6).u32(1).u16(0).b);
}

TEST(NbdReply, ErrorChunkMessageLimit) {
    Bytes out;
    put_chunk_error(out, NBD_REPLY_FLAG_DONE, 5, NBD_EIO, std::string(70000, 'm'));
    EXPECT_EQ(load_be32(out.data() + 16), 6 + kMaxStringLength);
    EXPECT_EQ(load_be16(out.data() + 24), kMaxStringLength);
    EXPECT_EQ(out.size(), kStructuredReplyHeaderSize + 6 + kMaxStringLength);
}

TEST(NbdReply, ErrorOffsetChunk) {
    Bytes out;
    put_chunk_error_offset(out, 0, 5, NBD_EIO, "x", 4096);
    EXPECT_EQ(out, Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(0).u16(0x8002).u64(5).u32(6 + 1 + 8)
                       .u32(5).u16(1).str("x").u64(4096).b);
}

TEST(NbdReply, BlockStatusChunk) {
    const Extent extents[] = {{4096, NBD_STATE_HOLE | NBD_STATE_ZERO}, {512, 0}};
    Bytes out;
    put_chunk_block_status(out, NBD_REPLY_FLAG_DONE, 3, 1, extents);
    EXPECT_EQ(out, Wire{}.u32(NBD_STRUCTURED_REPLY_MAGIC).u16(1).u16(5).u64(3).u32(4 + 16)
                       .u32(1).u32(4096).u32(3).u32(512).u32(0).b);
}

// ---------------------------------------------------------------- validate_request

constexpr uint64_t kSize = 1 << 20;

ExportLimits full_limits() {
    return ExportLimits{.size = kSize,
                        .read_only = false,
                        .structured_replies = true,
                        .max_payload = kDefaultMaxPayload,
                        .min_block = 1,
                        .can_trim = true,
                        .can_write_zeroes = true,
                        .can_fast_zero = true,
                        .can_cache = true,
                        .can_flush = true,
                        .can_fua = true,
                        .meta_context_selected = true};
}

Request rq(uint16_t type, uint16_t flags = 0, uint64_t offset = 0, uint32_t length = 512) {
    return Request{.flags = flags, .type = type, .cookie = 1, .offset = offset, .length = length};
}

constexpr Verdict kOk{};
constexpr Verdict kOkWrite{.consume_payload = true};
Verdict err(uint32_t e) { return Verdict{.nbd_error = e}; }
Verdict write_err(uint32_t e) { return Verdict{.nbd_error = e, .consume_payload = true}; }

TEST(NbdValidate, ValidCommands) {
    const ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE), l), kOkWrite);
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 0, 0), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_CACHE), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS), l), kOk);
    // The whole export in one request.
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM, 0, 0, kSize), l), kOk);
}

TEST(NbdValidate, DiscHasNoReplyAndDisconnects) {
    const Verdict disc{.disconnect = true, .no_reply = true};
    EXPECT_EQ(validate_request(rq(NBD_CMD_DISC, 0, 0, 0), full_limits()), disc);
    // Whatever its fields (they MUST be zero, but the connection ends anyway).
    EXPECT_EQ(validate_request(rq(NBD_CMD_DISC, 0xffff, ~0ull, 0xffffffff), ExportLimits{}), disc);
}

TEST(NbdValidate, UnknownCommand) {
    for (uint16_t type : {NBD_CMD_RESIZE, uint16_t{9}, uint16_t{0xffff}})
        EXPECT_EQ(validate_request(rq(type), full_limits()), err(NBD_EINVAL)) << type;
}

TEST(NbdValidate, FuaNeedsSendFua) {
    ExportLimits l = full_limits();
    // Valid on every command once negotiated, including ones that write nothing.
    for (uint16_t type : {NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_CACHE, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS})
        EXPECT_EQ(validate_request(rq(type, NBD_CMD_FLAG_FUA), l), kOk) << type;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA), l), kOkWrite);
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0), l), kOk);
    l.can_fua = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, NBD_CMD_FLAG_FUA), l), err(NBD_EINVAL));
}

TEST(NbdValidate, NoHoleOnlyOnWriteZeroes) {
    const ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE), l), err(NBD_EINVAL));
}

TEST(NbdValidate, DfOnlyOnReadWithStructuredReplies) {
    ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, NBD_CMD_FLAG_DF), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, NBD_CMD_FLAG_DF), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_DF), l), err(NBD_EINVAL));
    l.structured_replies = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, NBD_CMD_FLAG_DF), l), err(NBD_EINVAL));
}

TEST(NbdValidate, ReqOneOnlyOnBlockStatus) {
    const ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE), l), err(NBD_EINVAL));
}

TEST(NbdValidate, FastZeroOnlyWhenAdvertised) {
    ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_NO_HOLE), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM, NBD_CMD_FLAG_FAST_ZERO), l), err(NBD_EINVAL));
    l.can_fast_zero = false;  // spec: SHOULD fail with EINVAL, not ENOTSUP
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO), l), err(NBD_EINVAL));
}

TEST(NbdValidate, UnknownAndExtensionFlags) {
    const ExportLimits l = full_limits();
    for (uint16_t f : {NBD_CMD_FLAG_PAYLOAD_LEN, uint16_t{0x40}, uint16_t{0x8000}}) {
        EXPECT_EQ(validate_request(rq(NBD_CMD_READ, f), l), err(NBD_EINVAL)) << f;
        EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, f), l), write_err(NBD_EINVAL)) << f;
    }
}

TEST(NbdValidate, ReadOnlyExport) {
    ExportLimits l = full_limits();
    l.read_only = true;
    // The WRITE's payload is still read (and discarded): the stream stays in sync.
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE), l), write_err(NBD_EPERM));
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM), l), err(NBD_EPERM));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES), l), err(NBD_EPERM));
    // EPERM before the bounds check's ENOSPC.
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, kSize, 512), l), write_err(NBD_EPERM));
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 0, 0), l), kOk);
}

TEST(NbdValidate, CommandsNotAdvertised) {
    ExportLimits l = full_limits();
    l.can_flush = l.can_trim = l.can_write_zeroes = l.can_cache = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 0, 0), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_CACHE), l), err(NBD_EINVAL));
}

TEST(NbdValidate, BlockStatusNeedsStructuredRepliesAndContext) {
    ExportLimits l = full_limits();
    l.structured_replies = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS), l), err(NBD_EINVAL));
    l = full_limits();
    l.meta_context_selected = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS), l), err(NBD_EINVAL));
}

TEST(NbdValidate, FlushFieldsMustBeZero) {
    const ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 512, 0), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 0, 512), l), err(NBD_EINVAL));
}

TEST(NbdValidate, ZeroLength) {
    const ExportLimits l = full_limits();
    for (uint16_t type : {NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_CACHE, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS})
        EXPECT_EQ(validate_request(rq(type, 0, 0, 0), l), err(NBD_EINVAL)) << type;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, 0), l), write_err(NBD_EINVAL));
}

TEST(NbdValidate, ReadOverMaxPayload) {
    ExportLimits l = full_limits();
    l.size = 1ull << 40;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 0, kDefaultMaxPayload), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 0, kDefaultMaxPayload + 1), l), err(NBD_EOVERFLOW));
    l.structured_replies = false;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 0, kDefaultMaxPayload + 1), l), err(NBD_EINVAL));
}

TEST(NbdValidate, WriteOverMaxPayload) {
    ExportLimits l = full_limits();
    l.size = 1ull << 40;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, kDefaultMaxPayload), l), kOkWrite);
    // Beyond 32 MiB the payload is not read even to be discarded.
    const Verdict hang_up{.nbd_error = NBD_EINVAL, .disconnect = true};
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, kDefaultMaxPayload + 1), l), hang_up);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, 0xffffffff), l), hang_up);
    // Under a smaller advertised maximum, up to 32 MiB is still skipped, not
    // treated as an attack (spec "Size constraints").
    l.max_payload = 1 << 20;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, 2 << 20), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, kMaxDiscardPayload), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, kMaxDiscardPayload + 1), l), hang_up);
    // A larger advertised maximum raises the disconnect threshold with it.
    l.max_payload = 64 << 20;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, 48 << 20), l), kOkWrite);
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 0, (64 << 20) + 1), l), hang_up);
}

TEST(NbdValidate, NoPayloadCommandsIgnoreMaxPayload) {
    ExportLimits l = full_limits();
    l.size = 1ull << 40;
    l.max_payload = 1 << 20;
    for (uint16_t type : {NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE})
        EXPECT_EQ(validate_request(rq(type, 0, 0, 0xfffffe00), l), kOk) << type;
}

TEST(NbdValidate, PastEnd) {
    const ExportLimits l = full_limits();
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, kSize - 512, 512), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, kSize - 512, 513), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, kSize, 1), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, kSize + 1, 1), l), err(NBD_EINVAL));
    // Writes past the end: ENOSPC (spec "Error values"); reads, trims, status: EINVAL.
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, kSize - 1, 2), l), write_err(NBD_ENOSPC));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES, 0, kSize, 512), l), err(NBD_ENOSPC));
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM, 0, kSize, 512), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS, 0, kSize, 512), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_CACHE, 0, kSize, 512), l), err(NBD_EINVAL));
}

TEST(NbdValidate, OffsetPlusLengthOverflow) {
    const ExportLimits l = full_limits();
    // UINT64_MAX - 511 + 512 wraps to 0, which a naive "offset + length <= size" accepts.
    const uint64_t wrap = UINT64_MAX - 511;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, wrap, 512), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, wrap, 512), l), write_err(NBD_ENOSPC));
    EXPECT_EQ(validate_request(rq(NBD_CMD_TRIM, 0, UINT64_MAX, 1), l), err(NBD_EINVAL));
    // An export of the largest size: ending exactly at UINT64_MAX is fine, one past is not.
    ExportLimits huge = full_limits();
    huge.size = UINT64_MAX;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, UINT64_MAX - 10, 10), huge), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, UINT64_MAX - 10, 11), huge), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE_ZEROES, 0, UINT64_MAX, 1), huge), err(NBD_ENOSPC));
}

TEST(NbdValidate, Alignment) {
    ExportLimits l = full_limits();
    l.min_block = 512;
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 512, 1024), l), kOk);
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 100, 512), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 512, 100), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, 0, 1, 512), l), write_err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_BLOCK_STATUS, 0, 0, 1), l), err(NBD_EINVAL));
    EXPECT_EQ(validate_request(rq(NBD_CMD_FLUSH, 0, 0, 0), l), kOk);
    l.min_block = 0;  // read as 1, not a division by zero
    EXPECT_EQ(validate_request(rq(NBD_CMD_READ, 0, 1, 3), l), kOk);
}

TEST(NbdValidate, FlagErrorsComeBeforeReadOnly) {
    ExportLimits l = full_limits();
    l.read_only = true;
    EXPECT_EQ(validate_request(rq(NBD_CMD_WRITE, NBD_CMD_FLAG_DF), l), write_err(NBD_EINVAL));
}

// ---------------------------------------------------------------- helpers

TEST(NbdErrno, MapsToSpecValues) {
    EXPECT_EQ(errno_to_nbd(0), 0u);
    EXPECT_EQ(errno_to_nbd(EPERM), NBD_EPERM);
    EXPECT_EQ(errno_to_nbd(EROFS), NBD_EPERM);
    EXPECT_EQ(errno_to_nbd(EACCES), NBD_EPERM);
    EXPECT_EQ(errno_to_nbd(EIO), NBD_EIO);
    EXPECT_EQ(errno_to_nbd(ENOMEM), NBD_ENOMEM);
    EXPECT_EQ(errno_to_nbd(EINVAL), NBD_EINVAL);
    EXPECT_EQ(errno_to_nbd(ENOSPC), NBD_ENOSPC);
    EXPECT_EQ(errno_to_nbd(EDQUOT), NBD_ENOSPC);
    EXPECT_EQ(errno_to_nbd(EFBIG), NBD_ENOSPC);
    EXPECT_EQ(errno_to_nbd(EOVERFLOW), NBD_EOVERFLOW);
    EXPECT_EQ(errno_to_nbd(ENOTSUP), NBD_ENOTSUP);
    EXPECT_EQ(errno_to_nbd(EOPNOTSUPP), NBD_ENOTSUP);
    EXPECT_EQ(errno_to_nbd(ESHUTDOWN), NBD_ESHUTDOWN);
    EXPECT_EQ(errno_to_nbd(-ENOSPC), NBD_ENOSPC);  // negative errno as some callers return it
    EXPECT_EQ(errno_to_nbd(EBADF), NBD_EIO);
    EXPECT_EQ(errno_to_nbd(ECANCELED), NBD_EIO);
    EXPECT_EQ(errno_to_nbd(123456), NBD_EIO);
    EXPECT_EQ(errno_to_nbd(INT_MIN), NBD_EIO);
}

TEST(NbdUtf8, Truncate) {
    EXPECT_EQ(truncate_utf8("hello", 10), "hello");
    EXPECT_EQ(truncate_utf8("hello", 3), "hel");
    EXPECT_EQ(truncate_utf8("h\xc3\xa9llo", 2), "h");           // é is 2 bytes
    EXPECT_EQ(truncate_utf8("h\xc3\xa9llo", 3), "h\xc3\xa9");
    EXPECT_EQ(truncate_utf8("\xf0\x9f\x98\x80!", 3), "");       // 4-byte emoji
    EXPECT_EQ(truncate_utf8("\xf0\x9f\x98\x80!", 4), "\xf0\x9f\x98\x80");
    // Not UTF-8 (a run of continuation bytes): a plain cut.
    EXPECT_EQ(truncate_utf8("\x80\x80\x80\x80\x80\x80", 5), "\x80\x80\x80\x80\x80");
}

TEST(NbdNames, ForLogs) {
    EXPECT_STREQ(option_name(NBD_OPT_GO), "NBD_OPT_GO");
    EXPECT_STREQ(option_name(NBD_OPT_SET_META_CONTEXT), "NBD_OPT_SET_META_CONTEXT");
    EXPECT_STREQ(option_name(12345), "unknown");
    EXPECT_STREQ(command_name(NBD_CMD_BLOCK_STATUS), "NBD_CMD_BLOCK_STATUS");
    EXPECT_STREQ(command_name(NBD_CMD_WRITE_ZEROES), "NBD_CMD_WRITE_ZEROES");
    EXPECT_STREQ(command_name(999), "unknown");
    EXPECT_STREQ(reply_type_name(NBD_REP_ERR_TOO_BIG), "NBD_REP_ERR_TOO_BIG");
    EXPECT_STREQ(reply_type_name(0), "unknown");
}

}  // namespace
}  // namespace ioplane::nbd
