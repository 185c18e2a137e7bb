// The vhost-user wire decoders and reply encoders (protocol.h). The front end
// is untrusted: every test that feeds a malformed message checks that it is
// refused with EPROTO, and every accepted one that the fields land where the
// spec (vhost-user.rst, "Message types") puts them.
#include "protocol.h"

#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

namespace ioplane::vhost_user {
namespace {

// Appends `v` in native byte order, as the front end sends it.
template <class T>
void put(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

template <class T>
T get(std::span<const uint8_t> bytes, size_t offset) {
    T v;
    EXPECT_LE(offset + sizeof v, bytes.size());
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
}

std::array<uint8_t, kHeaderSize> header_bytes(uint32_t request, uint32_t flags, uint32_t size) {
    std::vector<uint8_t> v;
    put(v, request);
    put(v, flags);
    put(v, size);
    std::array<uint8_t, kHeaderSize> out{};
    std::memcpy(out.data(), v.data(), kHeaderSize);
    return out;
}

template <class T>
void expect_eproto(const Result<T>& r) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, EPROTO) << r.error().message;
}

std::vector<uint8_t> bytes_of_size(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 7 + 1);
    return v;
}

// ---- header ----

TEST(VhostUserHeader, DecodesFieldsOfAVersion1Request) {
    auto h = decode_header(header_bytes(uint32_t(Request::set_vring_addr), kVersion | kFlagNeedReply, 40));
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->request, uint32_t(Request::set_vring_addr));
    EXPECT_EQ(h->flags, kVersion | kFlagNeedReply);
    EXPECT_EQ(h->size, 40u);
}

TEST(VhostUserHeader, RefusesEveryOtherVersion) {
    for (uint32_t version : {0u, 2u, 3u}) {
        SCOPED_TRACE(version);
        expect_eproto(decode_header(header_bytes(1, version, 0)));
        expect_eproto(decode_header(header_bytes(1, version | kFlagNeedReply, 0)));
    }
}

TEST(VhostUserHeader, RefusesAReplySentAsARequest) {
    expect_eproto(decode_header(header_bytes(1, kVersion | kFlagReply, 0)));
}

TEST(VhostUserHeader, PayloadSizeUpToKMaxPayload) {
    auto at_limit = decode_header(header_bytes(5, kVersion, kMaxPayload));
    ASSERT_TRUE(at_limit);
    EXPECT_EQ(at_limit->size, kMaxPayload);
    expect_eproto(decode_header(header_bytes(5, kVersion, kMaxPayload + 1)));
    expect_eproto(decode_header(header_bytes(5, kVersion, 0xffffffffu)));
}

TEST(VhostUserHeader, RequestNames) {
    EXPECT_STREQ(request_name(uint32_t(Request::set_mem_table)), "SET_MEM_TABLE");
    EXPECT_STREQ(request_name(uint32_t(Request::get_max_mem_slots)), "GET_MAX_MEM_SLOTS");
    EXPECT_STREQ(request_name(31), "GET_INFLIGHT_FD");
    EXPECT_STREQ(request_name(32), "SET_INFLIGHT_FD");
    EXPECT_STREQ(request_name(999), "unknown request");
}

// ---- fixed-size payloads ----

TEST(VhostUserDecode, U64NeedsExactly8Bytes) {
    std::vector<uint8_t> p;
    put<uint64_t>(p, 0x0123456789abcdefull);
    auto v = decode_u64(p);
    ASSERT_TRUE(v);
    EXPECT_EQ(*v, 0x0123456789abcdefull);
    for (size_t n : {0, 4, 7, 9, 16}) {
        SCOPED_TRACE(n);
        expect_eproto(decode_u64(bytes_of_size(n)));
    }
}

TEST(VhostUserDecode, VringStateNeedsExactly8Bytes) {
    std::vector<uint8_t> p;
    put<uint32_t>(p, 3);
    put<uint32_t>(p, 0xfffe);
    auto s = decode_vring_state(p);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->index, 3u);
    EXPECT_EQ(s->num, 0xfffeu);
    for (size_t n : {0, 4, 7, 9, 12}) {
        SCOPED_TRACE(n);
        expect_eproto(decode_vring_state(bytes_of_size(n)));
    }
}

TEST(VhostUserDecode, VringAddrNeedsExactly40Bytes) {
    std::vector<uint8_t> p;
    put<uint32_t>(p, 1);      // index
    put<uint32_t>(p, 1);      // flags: VHOST_VRING_F_LOG
    put<uint64_t>(p, 0x1000);  // desc
    put<uint64_t>(p, 0x2000);  // used
    put<uint64_t>(p, 0x3000);  // avail
    put<uint64_t>(p, 0x4000);  // log
    auto a = decode_vring_addr(p);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->index, 1u);
    EXPECT_EQ(a->flags, 1u);
    // The wire order is desc, used, avail: a swap here would put the rings
    // on top of each other.
    EXPECT_EQ(a->desc, 0x1000u);
    EXPECT_EQ(a->used, 0x2000u);
    EXPECT_EQ(a->avail, 0x3000u);
    EXPECT_EQ(a->log, 0x4000u);
    for (size_t n : {0, 8, 32, 39, 41, 48}) {
        SCOPED_TRACE(n);
        expect_eproto(decode_vring_addr(bytes_of_size(n)));
    }
}

// ---- SET_MEM_TABLE ----

// A memory table payload: count, padding, then `slots` region descriptions
// (regions past `n` are zero, as QEMU sends its fixed 8-slot array).
std::vector<uint8_t> mem_table(uint32_t n, uint32_t slots) {
    std::vector<uint8_t> p;
    put<uint32_t>(p, n);
    put<uint32_t>(p, 0);  // padding
    for (uint32_t i = 0; i < slots; i++) {
        const bool used = i < n;
        put<uint64_t>(p, used ? 0x100000ull * (i + 1) : 0);  // guest_addr
        put<uint64_t>(p, used ? 0x1000ull * (i + 1) : 0);    // size
        put<uint64_t>(p, used ? 0x7f0000000000ull + 0x100000ull * i : 0);  // user_addr
        put<uint64_t>(p, used ? 0x200ull * i : 0);           // mmap_offset
    }
    return p;
}

void expect_regions(const std::vector<MemRegion>& regions, uint32_t n) {
    ASSERT_EQ(regions.size(), n);
    for (uint32_t i = 0; i < n; i++) {
        SCOPED_TRACE(i);
        EXPECT_EQ(regions[i].guest_addr, 0x100000ull * (i + 1));
        EXPECT_EQ(regions[i].size, 0x1000ull * (i + 1));
        EXPECT_EQ(regions[i].user_addr, 0x7f0000000000ull + 0x100000ull * i);
        EXPECT_EQ(regions[i].mmap_offset, 0x200ull * i);
    }
}

TEST(VhostUserMemTable, CompactTableOfNRegions) {
    for (uint32_t n = 1; n <= kMaxMemRegions; n++) {
        SCOPED_TRACE(n);
        auto r = decode_mem_table(mem_table(n, n), n);
        ASSERT_TRUE(r) << r.error().message;
        expect_regions(*r, n);
    }
}

TEST(VhostUserMemTable, QemusFullEightSlotPayloadIsAccepted) {
    for (uint32_t n : {1u, 2u, 5u}) {
        SCOPED_TRACE(n);
        const auto p = mem_table(n, kMaxMemRegions);
        ASSERT_EQ(p.size(), 8 + 8 * 32u);
        auto r = decode_mem_table(p, n);
        ASSERT_TRUE(r) << r.error().message;
        expect_regions(*r, n);  // the zero slots are not regions
    }
}

TEST(VhostUserMemTable, RefusesZeroOrTooManyRegions) {
    expect_eproto(decode_mem_table(mem_table(0, 0), 0));
    expect_eproto(decode_mem_table(mem_table(0, kMaxMemRegions), 0));
    // 9 regions: no payload size makes it acceptable.
    expect_eproto(decode_mem_table(mem_table(9, 9), 9));
    expect_eproto(decode_mem_table(mem_table(9, kMaxMemRegions), kMaxMemRegions));
    auto huge = mem_table(1, 1);
    std::memcpy(huge.data(), "\xff\xff\xff\xff", 4);  // a count whose n * 32 would overflow 32 bits
    expect_eproto(decode_mem_table(huge, 1));
}

TEST(VhostUserMemTable, RegionCountMustMatchTheFds) {
    expect_eproto(decode_mem_table(mem_table(2, 2), 1));
    expect_eproto(decode_mem_table(mem_table(2, 2), 3));
    expect_eproto(decode_mem_table(mem_table(2, kMaxMemRegions), 0));
    expect_eproto(decode_mem_table(mem_table(1, kMaxMemRegions), kMaxMemRegions));  // fds for every slot
}

TEST(VhostUserMemTable, RefusesShortOrOddPayloads) {
    expect_eproto(decode_mem_table(bytes_of_size(0), 0));
    expect_eproto(decode_mem_table(bytes_of_size(7), 0));
    auto header_only = mem_table(1, 0);  // count says 1, no region follows
    expect_eproto(decode_mem_table(header_only, 1));
    auto cut = mem_table(3, 3);
    cut.pop_back();  // one byte short of the third region
    expect_eproto(decode_mem_table(cut, 3));
    auto between = mem_table(3, 4);  // neither n slots nor the full 8
    expect_eproto(decode_mem_table(between, 3));
    auto longer = mem_table(2, kMaxMemRegions);
    longer.push_back(0);  // one byte past the 8-slot array
    expect_eproto(decode_mem_table(longer, 2));
}

// ---- GET_CONFIG / SET_CONFIG ----

std::vector<uint8_t> config_payload(uint32_t offset, uint32_t size, uint32_t flags, size_t data_len) {
    std::vector<uint8_t> p;
    put(p, offset);
    put(p, size);
    put(p, flags);
    for (size_t i = 0; i < data_len; i++) p.push_back(uint8_t(0xa0 + i));
    return p;
}

TEST(VhostUserConfig, SizeFieldMustMatchThePayload) {
    const auto p = config_payload(8, 4, 1, 4);
    auto a = decode_config(p);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_EQ(a->offset, 8u);
    EXPECT_EQ(a->size, 4u);
    EXPECT_EQ(a->flags, 1u);
    ASSERT_EQ(a->data.size(), 4u);
    EXPECT_EQ(a->data.data(), p.data() + 12);  // a view into the payload
    EXPECT_EQ(a->data[0], 0xa0);
    EXPECT_EQ(a->data[3], 0xa3);

    auto empty = decode_config(config_payload(0, 0, 0, 0));
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->data.empty());

    expect_eproto(decode_config(config_payload(0, 5, 0, 4)));   // size says more than sent
    expect_eproto(decode_config(config_payload(0, 3, 0, 4)));   // size says less than sent
    expect_eproto(decode_config(config_payload(0, 0xffffffffu, 0, 4)));
    expect_eproto(decode_config(bytes_of_size(11)));            // shorter than the fixed part
    expect_eproto(decode_config(bytes_of_size(0)));
}

// ---- SET_VRING_KICK / CALL / ERR ----

std::vector<uint8_t> u64_payload(uint64_t v) {
    std::vector<uint8_t> p;
    put(p, v);
    return p;
}

TEST(VhostUserVringFd, IndexAndFdMustAgree) {
    auto with_fd = decode_vring_fd(u64_payload(7), 1);
    ASSERT_TRUE(with_fd) << with_fd.error().message;
    EXPECT_EQ(with_fd->index, 7u);
    EXPECT_FALSE(with_fd->no_fd);

    auto polled = decode_vring_fd(u64_payload(kVringNoFdMask | 0xff), 0);
    ASSERT_TRUE(polled) << polled.error().message;
    EXPECT_EQ(polled->index, 0xffu);
    EXPECT_TRUE(polled->no_fd);

    expect_eproto(decode_vring_fd(u64_payload(0), 0));               // fd promised, none sent
    expect_eproto(decode_vring_fd(u64_payload(0), 2));               // two fds
    expect_eproto(decode_vring_fd(u64_payload(kVringNoFdMask), 1));  // "no fd" with an fd
}

TEST(VhostUserVringFd, RefusesUnknownBitsAndWrongSizes) {
    expect_eproto(decode_vring_fd(u64_payload(1ull << 9), 1));
    expect_eproto(decode_vring_fd(u64_payload(1ull << 63), 1));
    expect_eproto(decode_vring_fd(u64_payload(kVringNoFdMask | (1ull << 32)), 0));
    expect_eproto(decode_vring_fd(bytes_of_size(4), 1));
    expect_eproto(decode_vring_fd(bytes_of_size(16), 1));
}

// ---- replies ----

void expect_reply_header(const std::vector<uint8_t>& msg, uint32_t request, uint32_t payload_size) {
    ASSERT_EQ(msg.size(), kHeaderSize + payload_size);
    EXPECT_EQ(get<uint32_t>(msg, 0), request);
    EXPECT_EQ(get<uint32_t>(msg, 4), kVersion | kFlagReply);
    EXPECT_EQ(get<uint32_t>(msg, 8), payload_size);
}

TEST(VhostUserReply, RawPayloadFollowsTheHeader) {
    const std::vector<uint8_t> payload{1, 2, 3, 4, 5};
    const auto msg = encode_reply(uint32_t(Request::get_queue_num), payload);
    expect_reply_header(msg, uint32_t(Request::get_queue_num), 5);
    EXPECT_EQ(std::vector<uint8_t>(msg.begin() + kHeaderSize, msg.end()), payload);

    expect_reply_header(encode_reply(uint32_t(Request::set_owner), {}), uint32_t(Request::set_owner), 0);
}

TEST(VhostUserReply, U64) {
    const auto msg = encode_reply_u64(uint32_t(Request::get_features), 0x8000000150000000ull);
    expect_reply_header(msg, uint32_t(Request::get_features), 8);
    EXPECT_EQ(get<uint64_t>(msg, kHeaderSize), 0x8000000150000000ull);
}

TEST(VhostUserReply, VringState) {
    const auto msg = encode_reply_vring_state(uint32_t(Request::get_vring_base), {2, 0xabcd});
    expect_reply_header(msg, uint32_t(Request::get_vring_base), 8);
    EXPECT_EQ(get<uint32_t>(msg, kHeaderSize), 2u);
    EXPECT_EQ(get<uint32_t>(msg, kHeaderSize + 4), 0xabcdu);
}

TEST(VhostUserReply, ConfigCarriesTheBytesAndTheirSize) {
    const std::vector<uint8_t> bytes{9, 8, 7};
    // The size field is that of the bytes sent back, not what was asked.
    ConfigAccess asked{.offset = 20, .size = 60, .flags = 1};
    const auto msg = encode_reply_config(uint32_t(Request::get_config), asked, bytes);
    expect_reply_header(msg, uint32_t(Request::get_config), 12 + 3);
    EXPECT_EQ(get<uint32_t>(msg, kHeaderSize), 20u);
    EXPECT_EQ(get<uint32_t>(msg, kHeaderSize + 4), 3u);
    EXPECT_EQ(get<uint32_t>(msg, kHeaderSize + 8), 1u);
    EXPECT_EQ(std::vector<uint8_t>(msg.begin() + kHeaderSize + 12, msg.end()), bytes);
    // What was encoded decodes again (a SET_CONFIG of the same shape).
    auto back = decode_config(std::span(msg).subspan(kHeaderSize));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->size, 3u);
    EXPECT_EQ(back->data[2], 7);
}

// QEMU sends VhostUserInflight with its tail padding: 24 bytes.
TEST(VhostUserInflight, DescriptionOf20Or24BytesRoundTrips) {
    std::vector<uint8_t> p;
    put<uint64_t>(p, 4224);
    put<uint64_t>(p, 4096);
    put<uint16_t>(p, 2);
    put<uint16_t>(p, 128);
    for (size_t size : {20, 24}) {
        p.resize(size);
        auto d = decode_inflight(p);
        ASSERT_TRUE(d) << size;
        EXPECT_EQ(d->mmap_size, 4224u);
        EXPECT_EQ(d->mmap_offset, 4096u);
        EXPECT_EQ(d->num_queues, 2);
        EXPECT_EQ(d->queue_size, 128);
        const auto msg = encode_reply_inflight(uint32_t(Request::get_inflight_fd), *d);
        expect_reply_header(msg, uint32_t(Request::get_inflight_fd), 24);
        EXPECT_EQ(std::vector<uint8_t>(msg.begin() + kHeaderSize, msg.begin() + kHeaderSize + 20),
                  std::vector<uint8_t>(p.begin(), p.begin() + 20));
    }
    for (size_t size : {0, 8, 19, 21, 23, 25, 32}) expect_eproto(decode_inflight(bytes_of_size(size)));
}

}  // namespace
}  // namespace ioplane::vhost_user
