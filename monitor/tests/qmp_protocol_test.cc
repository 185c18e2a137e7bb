// QMP framing and message parsing: pure functions, fed what clients send.
#include <gtest/gtest.h>

#include "json_stream.h"
#include "qmp_message.h"

namespace ioplane::monitor {
namespace {

using nlohmann::json;

std::vector<JsonPiece> split(std::initializer_list<std::string_view> reads) {
    JsonSplitter s;
    std::vector<JsonPiece> out;
    for (auto r : reads) s.feed(r, out);
    return out;
}

TEST(JsonSplitter, FindsEachObjectWhateverTheReadsAre) {
    auto p = split({"{\"a\": \"}{\\\"\"}  {\"b\"", ": [1, {\"c\": 2}]}\n{'d': '}'}"});
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(p[0].text, "{\"a\": \"}{\\\"\"}");
    EXPECT_EQ(p[1].text, "{\"b\": [1, {\"c\": 2}]}");
    EXPECT_EQ(p[2].text, "{'d': '}'}");
}

TEST(JsonSplitter, ByteByByteGivesTheSameTexts) {
    const std::string input = "{\"execute\":\"x\",\"arguments\":{\"s\":\"a]b\"}} [1,2] 42 \"s}\" ";
    JsonSplitter s;
    std::vector<JsonPiece> out;
    for (char c : input) s.feed(std::string_view(&c, 1), out);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(out[0].text, "{\"execute\":\"x\",\"arguments\":{\"s\":\"a]b\"}}");
    EXPECT_EQ(out[1].text, "[1,2]");
    EXPECT_EQ(out[2].text, "42");
    EXPECT_EQ(out[3].text, "\"s}\"");
    EXPECT_FALSE(s.in_message());
}

TEST(JsonSplitter, StrayClosingBracketIsAnErrorAndTheStreamGoesOn) {
    auto p = split({"} {\"a\":1}"});
    ASSERT_EQ(p.size(), 2u);
    EXPECT_NE(p[0].error, "");
    EXPECT_EQ(p[1].text, "{\"a\":1}");
}

TEST(JsonSplitter, OversizedTextIsOneErrorWithoutKeepingIt) {
    JsonSplitter s;
    std::vector<JsonPiece> out;
    s.feed("{\"x\": \"", out);
    const std::string chunk(1 << 16, 'a');
    for (size_t sent = 0; sent < 2 * JsonSplitter::kMaxMessageBytes; sent += chunk.size()) s.feed(chunk, out);
    EXPECT_TRUE(out.empty());
    s.feed("\"} {\"y\": 1}", out);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_NE(out[0].error.find("longer than"), std::string::npos);
    EXPECT_EQ(out[1].text, "{\"y\": 1}");
}

TEST(JsonSplitter, DeepNestingIsAnError) {
    const std::string deep = std::string(JsonSplitter::kMaxDepth + 1, '[') + std::string(JsonSplitter::kMaxDepth + 1, ']');
    auto p = split({deep, "{}"});
    ASSERT_EQ(p.size(), 2u);
    EXPECT_NE(p[0].error.find("nesting"), std::string::npos);
    EXPECT_EQ(p[1].text, "{}");
}

TEST(ParseRequest, ReadsExecuteArgumentsAndId) {
    auto r = parse_request(R"({"execute": "blockdev-del", "arguments": {"node-name": "n"}, "id": {"x": [1]}})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->execute, "blockdev-del");
    EXPECT_EQ(r->arguments, json({{"node-name", "n"}}));
    EXPECT_EQ(*r->id, json({{"x", {1}}}));
    EXPECT_FALSE(r->oob);
}

TEST(ParseRequest, RejectsWhatQemuRejectsKeepingTheId) {
    struct Case {
        const char* text;
        const char* desc;
        bool has_id;
    } cases[] = {
        {"[1]", "QMP input must be a JSON object", false},
        {"{\"id\": 5}", "QMP input lacks member 'execute'", true},
        {"{\"execute\": 1, \"id\": 5}", "QMP input member 'execute' must be a string", true},
        {"{\"execute\": \"x\", \"arguments\": [], \"id\": 5}", "QMP input member 'arguments' must be an object", true},
        {"{\"execute\": \"x\", \"foo\": 1, \"id\": 5}", "QMP input member 'foo' is unexpected", true},
    };
    for (const Case& c : cases) {
        auto r = parse_request(c.text);
        ASSERT_FALSE(r) << c.text;
        EXPECT_EQ(r.error().error.cls, "GenericError");
        EXPECT_EQ(r.error().error.desc, c.desc) << c.text;
        EXPECT_EQ(r.error().id.has_value(), c.has_id) << c.text;
    }
    auto bad = parse_request("{\"execute\": \"x\", \"execute\": \"y\"}");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().error.desc.find("JSON parse error"), std::string::npos);
}

TEST(FormatMessages, AreOneJsonObjectPerLine) {
    auto greeting = json::parse(format_greeting(false));
    EXPECT_EQ(greeting["QMP"]["version"]["qemu"]["major"], kQemuMajor);
    EXPECT_TRUE(greeting["QMP"]["capabilities"].is_array());
    const std::string ret = format_return(json::object(), json("abc"), false);
    EXPECT_TRUE(ret.ends_with("\r\n"));
    EXPECT_EQ(json::parse(ret), json({{"return", json::object()}, {"id", "abc"}}));
    EXPECT_EQ(json::parse(format_error(generic_error("bad"), std::nullopt, true)),
              json({{"error", {{"class", "GenericError"}, {"desc", "bad"}}}}));
    auto event = json::parse(format_event("SHUTDOWN", {{"guest", false}}, 1'700'000'000'123'456, false));
    EXPECT_EQ(event["timestamp"], json({{"seconds", 1'700'000'000}, {"microseconds", 123'456}}));
    EXPECT_EQ(event["data"]["guest"], false);
    EXPECT_FALSE(json::parse(format_event("X", nullptr, 0, false)).contains("data"));
}

TEST(FormatMessages, InvalidUtf8FromTheClientIsReplacedNotThrown) {
    // Found by fuzz_qmp_input: a parse error's message quotes the bad bytes.
    auto r = parse_request("{\"execute\": \"x\", \"id\": 1, \"a\": tr\x85ue}");
    ASSERT_FALSE(r);
    std::string text;
    EXPECT_NO_THROW(text = format_error(r.error().error, r.error().id, false));
    EXPECT_TRUE(json::parse(text).contains("error"));
    EXPECT_NO_THROW((void)format_return(json("\xff\xfe"), json("\x85"), true));
}

}  // namespace
}  // namespace ioplane::monitor
