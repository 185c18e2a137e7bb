// The 9P2000.L decoder: every field read in order, and every kind of lie
// about lengths refused with EPROTO (never a read past the message).
#include "messages.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace ioplane::fs9p {
namespace {

// Builds a message with WireWriter; `fill` writes the body.
template <class F>
std::vector<uint8_t> message(uint8_t type, uint16_t tag, F fill) {
    std::vector<uint8_t> out;
    WireWriter w(out);
    w.begin(type, tag);
    fill(w);
    w.finish();
    return out;
}

TEST(Decode, Version) {
    auto m = message(Tversion, kNoTag, [](WireWriter& w) { w.u32(65536); w.str("9P2000.L"); });
    auto req = decode_request(m);
    ASSERT_TRUE(req) << req.error().message;
    EXPECT_EQ(req->type, Tversion);
    EXPECT_EQ(req->tag, kNoTag);
    auto& v = std::get<Version>(req->body);
    EXPECT_EQ(v.msize, 65536u);
    EXPECT_EQ(v.version, "9P2000.L");
}

TEST(Decode, WalkNamesAndLimit) {
    auto m = message(Twalk, 3, [](WireWriter& w) { w.u32(1); w.u32(2); w.u16(2); w.str("a"); w.str("bc"); });
    auto req = decode_request(m);
    ASSERT_TRUE(req);
    auto& walk = std::get<Walk>(req->body);
    EXPECT_EQ(walk.fid, 1u);
    EXPECT_EQ(walk.newfid, 2u);
    ASSERT_EQ(walk.names.size(), 2u);
    EXPECT_EQ(walk.names[1], "bc");

    auto many = message(Twalk, 3, [](WireWriter& w) {
        w.u32(1); w.u32(2); w.u16(17);
        for (int i = 0; i < 17; i++) w.str("x");
    });
    auto bad = decode_request(many);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, EPROTO);
}

TEST(Decode, WriteDataIsAViewOfTheMessage) {
    auto m = message(Twrite, 9, [](WireWriter& w) { w.u32(5); w.u64(4096); w.u32(3); w.bytes(std::vector<uint8_t>{1, 2, 3}); });
    auto req = decode_request(m);
    ASSERT_TRUE(req);
    auto& wr = std::get<Write>(req->body);
    EXPECT_EQ(wr.offset, 4096u);
    ASSERT_EQ(wr.data.size(), 3u);
    EXPECT_EQ(wr.data.data(), m.data() + m.size() - 3);
}

TEST(Decode, SetattrAllFields) {
    auto m = message(Tsetattr, 1, [](WireWriter& w) {
        w.u32(7); w.u32(kSetattrMode | kSetattrSize); w.u32(0644); w.u32(1); w.u32(2);
        w.u64(100); w.u64(3); w.u64(4); w.u64(5); w.u64(6);
    });
    auto req = decode_request(m);
    ASSERT_TRUE(req);
    auto& s = std::get<Setattr>(req->body);
    EXPECT_EQ(s.mode, 0644u);
    EXPECT_EQ(s.size, 100u);
    EXPECT_EQ(s.mtime_nsec, 6u);
}

TEST(Decode, LiesAboutLengthsAreRefused) {
    // A write whose count claims more than the message holds.
    auto m = message(Twrite, 1, [](WireWriter& w) { w.u32(5); w.u64(0); w.u32(1000); w.u8(1); });
    auto r = decode_request(m);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPROTO);
    // A string length past the end.
    auto s = message(Tmkdir, 1, [](WireWriter& w) { w.u32(1); w.u16(50); w.bytes(std::vector<uint8_t>(4, 'a')); });
    EXPECT_FALSE(decode_request(s));
    // Trailing bytes.
    auto t = message(Tclunk, 1, [](WireWriter& w) { w.u32(1); w.u8(0); });
    EXPECT_FALSE(decode_request(t));
    // The size field disagrees with the length read.
    auto c = message(Tclunk, 1, [](WireWriter& w) { w.u32(1); });
    c.push_back(0);
    EXPECT_FALSE(decode_request(c));
    // Shorter than a header.
    EXPECT_FALSE(decode_request(std::vector<uint8_t>{1, 0, 0}));
}

TEST(Decode, UnknownTypesKeepTheirTag) {
    auto m = message(112 /* Topen, 9P2000 only */, 42, [](WireWriter& w) { w.u32(1); w.u8(0); });
    uint16_t tag = 0;
    auto r = decode_request(m, &tag);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EOPNOTSUPP);
    EXPECT_EQ(tag, 42);
    EXPECT_STREQ(message_name(112), "Topen");
}

TEST(Wire, ReaderLatchesAndYieldsZeros) {
    std::vector<uint8_t> b{1, 2};
    WireReader r(b);
    EXPECT_EQ(r.u32(), 0u);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.u8(), 0u);
    EXPECT_EQ(r.str(), "");
}

}  // namespace
}  // namespace ioplane::fs9p
