// key=value arguments, word splitting and interactive lines.
#include "command_line.h"

#include <gtest/gtest.h>

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

json command(std::string name, std::vector<std::string> args) {
    auto c = build_command(std::move(name), args);
    EXPECT_TRUE(c.has_value()) << (c ? "" : c.error());
    return c ? *c : json();
}

std::string command_error(std::vector<std::string> args) {
    auto c = build_command("cmd", args);
    EXPECT_FALSE(c.has_value()) << c->dump();
    return c ? "" : c.error();
}

TEST(BuildCommand, NoArgumentsLeavesArgumentsOut) {
    EXPECT_EQ(command("query-version", {}), json::parse(R"({"execute": "query-version"})"));
}

TEST(BuildCommand, ValuesThatReadAsJsonScalarsAreTyped) {
    EXPECT_EQ(command("c", {"size=1048576", "neg=-3", "f=1.5", "e=1e3", "t=true", "n=null", "s=null-co", "empty=",
                            "sp= 1", "hex=0x10", "lead=007", "huge=99999999999999999999999"})["arguments"],
              json::parse(R"({"size": 1048576, "neg": -3, "f": 1.5, "e": 1000.0, "t": true, "n": null,
                              "s": "null-co", "empty": "", "sp": " 1", "hex": "0x10", "lead": "007",
                              "huge": "99999999999999999999999"})"));
}

TEST(BuildCommand, DottedKeysNest) {
    EXPECT_EQ(command("blockdev-add", {"driver=raw", "file.driver=file", "file.filename=/x", "file.aio.x=1"})["arguments"],
              json::parse(R"({"driver": "raw", "file": {"driver": "file", "filename": "/x", "aio": {"x": 1}}})"));
}

TEST(BuildCommand, RawJsonValues) {
    EXPECT_EQ(command("c", {"a:=[1,2]", "s:=\"123\"", "o.p:={\"q\":true}", "o.r=x"})["arguments"],
              json::parse(R"({"a": [1, 2], "s": "123", "o": {"p": {"q": true}, "r": "x"}})"));
    EXPECT_NE(command_error({"a:=[1,"}).find("invalid JSON"), std::string::npos);
}

TEST(BuildCommand, OneJsonObjectIsTheArguments) {
    EXPECT_EQ(command("c", {R"({"driver": "null-co", "size": 5})"})["arguments"],
              json::parse(R"({"driver": "null-co", "size": 5})"));
    EXPECT_NE(command_error({"{not json"}).find("not a valid JSON object"), std::string::npos);
}

TEST(BuildCommand, MalformedArguments) {
    EXPECT_NE(command_error({"novalue"}).find("expected key=value"), std::string::npos);
    EXPECT_NE(command_error({"=v"}).find("expected key=value"), std::string::npos);
    EXPECT_NE(command_error({"a=1", "a=2"}).find("given twice"), std::string::npos);
    EXPECT_NE(command_error({"a=1", "a.b=2"}).find("both a value and an object"), std::string::npos);
    EXPECT_NE(command_error({"a.b=1", "a=2"}).find("given twice"), std::string::npos);
    EXPECT_NE(command_error({"a..b=1"}).find("empty part"), std::string::npos);
    EXPECT_NE(command_error({"a.=1"}).find("empty part"), std::string::npos);
    EXPECT_FALSE(build_command("", {}).has_value());
}

TEST(SplitWords, QuotesAndEscapes) {
    using Words = std::vector<std::string>;
    EXPECT_EQ(split_words("  a  b\tc "), (Words{"a", "b", "c"}));
    EXPECT_EQ(split_words(R"(k='a b' "x\"y" z\ w '' e=)"), (Words{"k=a b", "x\"y", "z w", "", "e="}));
    EXPECT_EQ(split_words(R"(j:='{"a": 1}')"), (Words{R"(j:={"a": 1})"}));
    EXPECT_FALSE(split_words("'open").has_value());
    EXPECT_FALSE(split_words("\"open").has_value());
    EXPECT_FALSE(split_words("trailing\\").has_value());
}

TEST(ParseLine, BlankRawJsonAndWords) {
    EXPECT_EQ(parse_line("  \r").value(), std::nullopt);
    EXPECT_EQ(parse_line(R"( {"execute": "stop", "id": 7} )").value(), json::parse(R"({"execute": "stop", "id": 7})"));
    EXPECT_EQ(parse_line("blockdev-del node-name='my node'").value(),
              json::parse(R"({"execute": "blockdev-del", "arguments": {"node-name": "my node"}})"));
    // JSON after the command name needs no shell quoting.
    EXPECT_EQ(parse_line(R"(blockdev-add {"driver": "null-co", "node-name": "n 1"})").value(),
              json::parse(R"({"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n 1"}})"));
    EXPECT_FALSE(parse_line("{broken").has_value());
    EXPECT_FALSE(parse_line("cmd 'open").has_value());
    EXPECT_FALSE(parse_line("cmd noequals").has_value());
}

}  // namespace
}  // namespace ioplane::qmp_tool
