// QEMU option strings: keyval, JSON and QemuOpts syntax, scalar conversions,
// and typed reading with OptionReader.
#include "ioplane/core/keyval.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace ioplane {
namespace {

using nlohmann::json;

// The tree of a keyval string that must parse.
json keyval(std::string_view text, std::string_view implied = {}) {
    auto t = parse_keyval(text, implied);
    EXPECT_TRUE(t.has_value()) << text << ": " << (t ? "" : t.error().message);
    return t ? t->root : json();
}

// The message of a keyval string that must fail.
std::string keyval_error(std::string_view text, std::string_view implied = {}) {
    auto t = parse_keyval(text, implied);
    EXPECT_FALSE(t.has_value()) << text << " parsed as " << (t ? t->root.dump() : "");
    if (t) return {};
    EXPECT_EQ(t.error().code, EINVAL);
    return t.error().message;
}

// ---------------------------------------------------------------- keyval

TEST(Keyval, FlatKeysAreStrings) {
    EXPECT_EQ(keyval("driver=file,node-name=disk,filename=x.img,aio=threads"),
              json({{"driver", "file"}, {"node-name", "disk"}, {"filename", "x.img"}, {"aio", "threads"}}));
}

TEST(Keyval, EmptyStringAndTrailingComma) {
    EXPECT_EQ(keyval(""), json::object());
    EXPECT_EQ(keyval("a=b,"), json({{"a", "b"}}));
    EXPECT_EQ(keyval("a="), json({{"a", ""}}));
}

TEST(Keyval, DoubleCommaEscapesAComma) {
    EXPECT_EQ(keyval("filename=a,,b.img,x=1"), json({{"filename", "a,b.img"}, {"x", "1"}}));
    EXPECT_EQ(keyval("filename=,,,,"), json({{"filename", ",,"}}));
    EXPECT_EQ(keyval("filename=end,,"), json({{"filename", "end,"}}));
    // '=' needs no escape in a value.
    EXPECT_EQ(keyval("a=b=c"), json({{"a", "b=c"}}));
}

TEST(Keyval, DottedKeysNest) {
    EXPECT_EQ(keyval("driver=raw,file.driver=file,file.filename=x,cache.direct=on"),
              json({{"driver", "raw"},
                    {"file", {{"driver", "file"}, {"filename", "x"}}},
                    {"cache", {{"direct", "on"}}}}));
    EXPECT_EQ(keyval("a.b.c.d=1"), json({{"a", {{"b", {{"c", {{"d", "1"}}}}}}}}));
}

TEST(Keyval, NumericFragmentsMakeArrays) {
    EXPECT_EQ(keyval("server.1.host=b,server.0.host=a,server.0.port=1"),
              json({{"server", json::array({{{"host", "a"}, {"port", "1"}}, {{"host", "b"}}})}}));
    EXPECT_EQ(keyval("l.0=x,l.1=y"), json({{"l", json::array({"x", "y"})}}));
}

TEST(Keyval, ArrayErrors) {
    EXPECT_EQ(keyval_error("l.1=y"), "parameter 'l.0' missing");
    EXPECT_EQ(keyval_error("l.0=x,l.2=y"), "parameter 'l.1' missing");
    EXPECT_EQ(keyval_error("l.0=x,l.a=y"), "parameters 'l.*' used inconsistently");
    // "00" and "0" are the same element.
    EXPECT_EQ(keyval_error("l.0=x,l.00=y"), "parameter 'l.00' is given twice");
    // The first fragment is never an index.
    EXPECT_EQ(keyval_error("0=x"), "invalid parameter '0'");
}

TEST(Keyval, ImpliedKeyForTheFirstItemOnly) {
    EXPECT_EQ(keyval("file,node-name=disk", "driver"), json({{"driver", "file"}, {"node-name", "disk"}}));
    EXPECT_EQ(keyval("driver=file", "driver"), json({{"driver", "file"}}));
    EXPECT_EQ(keyval_error("node-name=disk,file", "driver"), "expected '=' after parameter 'file'");
    EXPECT_EQ(keyval_error("file,node-name=a", {}), "expected '=' after parameter 'file'");
    EXPECT_EQ(keyval_error("file,driver=raw", "driver"), "parameter 'driver' is given twice");
}

TEST(Keyval, KeyGivenTwiceIsAnError) {
    EXPECT_EQ(keyval_error("a=1,a=2"), "parameter 'a' is given twice");
    EXPECT_EQ(keyval_error("x.y=1,x.y=2"), "parameter 'x.y' is given twice");
}

TEST(Keyval, InconsistentNesting) {
    EXPECT_EQ(keyval_error("a.b=1,a=2"), "parameters 'a.*' used inconsistently");
    EXPECT_EQ(keyval_error("a=2,a.b=1"), "parameters 'a.*' used inconsistently");
}

TEST(Keyval, InvalidKeys) {
    EXPECT_EQ(keyval_error("driver=file,filename"), "expected '=' after parameter 'filename'");
    EXPECT_EQ(keyval_error(",a=b"), "invalid parameter ''");
    EXPECT_EQ(keyval_error("=b"), "invalid parameter ''");
    EXPECT_EQ(keyval_error("a b=c"), "invalid parameter 'a b'");
    EXPECT_EQ(keyval_error("a..b=c"), "invalid parameter 'a..b'");
    EXPECT_EQ(keyval_error("a.=c"), "invalid parameter 'a.'");
    EXPECT_EQ(keyval_error("-a=c"), "invalid parameter '-a'");
    EXPECT_EQ(keyval_error("a.1b=c"), "invalid parameter 'a.1b'");
    EXPECT_EQ(keyval_error("a=b,,c,d"), "expected '=' after parameter 'd'");
    EXPECT_EQ(keyval(std::string(127, 'k') + "=v").size(), 1u);
    EXPECT_EQ(keyval_error(std::string(128, 'k') + "=v"), "parameter '" + std::string(128, 'k') + "' is too long");
}

TEST(Keyval, DownstreamExtensionNames) {
    EXPECT_EQ(keyval("__com.redhat_foo.bar=1"), json({{"__com.redhat_foo", {{"bar", "1"}}}}));
}

TEST(Keyval, NestingIsBounded) {
    std::string key = "a";
    for (int i = 1; i < kMaxOptionDepth; i++) key += ".a";
    EXPECT_TRUE(parse_keyval(key + "=v").has_value());
    EXPECT_EQ(keyval_error(key + ".a=v"), "parameter '" + key + ".a' is nested too deeply");
}

TEST(Keyval, Help) {
    bool help = false;
    auto t = parse_keyval("help", "qom-type", &help);
    ASSERT_TRUE(t.has_value());
    EXPECT_TRUE(help);
    EXPECT_EQ(t->root, json::object());

    t = parse_keyval("iothread,?", "qom-type", &help);
    ASSERT_TRUE(t.has_value());
    EXPECT_TRUE(help);
    EXPECT_EQ(t->root, json({{"qom-type", "iothread"}}));

    t = parse_keyval("iothread,id=x", "qom-type", &help);
    ASSERT_TRUE(t.has_value());
    EXPECT_FALSE(help);

    EXPECT_EQ(keyval_error("help"), "help is not available for this option");
    // "help=x" is an ordinary key.
    EXPECT_EQ(keyval("help=x"), json({{"help", "x"}}));
}

// ---------------------------------------------------------------- JSON

TEST(JsonOptions, TypesAreKept) {
    auto t = parse_json_options(R"({"driver":"raw","node-name":"d","file":{"driver":"file","filename":"x"},
                                    "read-only":true,"n":42,"neg":-1})");
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->syntax, OptionSyntax::json);
    EXPECT_EQ(t->root["file"]["filename"], "x");
    EXPECT_EQ(t->root["read-only"], true);
    EXPECT_EQ(t->root["n"], 42);
    EXPECT_EQ(t->root["neg"], -1);
}

TEST(JsonOptions, Errors) {
    auto t = parse_json_options(R"({"a":1,"a":2})");
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "invalid JSON: duplicate key 'a'");

    t = parse_json_options(R"({"a":{"b":1,"b":1}})");
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "invalid JSON: duplicate key 'b'");

    t = parse_json_options(R"({"a":)");
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().code, EINVAL);
    EXPECT_TRUE(t.error().message.starts_with("invalid JSON: parse error at line 1, column 6"))
        << t.error().message;

    t = parse_json_options(R"({"a":1} x)");
    ASSERT_FALSE(t.has_value());

    t = parse_json_options("[1]");
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "expected a JSON object, got an array");
}

TEST(JsonOptions, SingleQuotedStringsAsInQemu) {
    auto t = parse_json_options(R"({'driver':'file','filename':'it\'s "x"'})");
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->root["driver"], "file");
    EXPECT_EQ(t->root["filename"], "it's \"x\"");
    t = parse_json_options(R"({"a":"it\'s"})");
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->root["a"], "it's");
}

TEST(JsonOptions, NestingIsBounded) {
    std::string ok, deep;
    for (int i = 0; i < kMaxOptionDepth - 1; i++) ok += R"({"a":)";
    ok += "{}";
    for (int i = 0; i < kMaxOptionDepth - 1; i++) ok += "}";
    EXPECT_TRUE(parse_json_options(ok).has_value());
    for (int i = 0; i < 100000; i++) deep += "[";
    auto t = parse_json_options(R"({"a":)" + deep);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "invalid JSON: nested more than 32 levels deep");
}

TEST(OptionString, BraceSelectsJson) {
    bool help = true;
    auto t = parse_option_string(R"({"driver":"file"})", "driver", &help);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->syntax, OptionSyntax::json);
    EXPECT_FALSE(help);
    t = parse_option_string("file", "driver");
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->syntax, OptionSyntax::keyval);
    EXPECT_EQ(t->root, json({{"driver", "file"}}));
    // Like QEMU, only a '{' in the first position means JSON.
    EXPECT_FALSE(parse_option_string(R"( {"driver":"file"})").has_value());
}

// ---------------------------------------------------------------- QemuOpts

TEST(QemuOpts, ChardevSyntax) {
    std::vector<std::string> warnings;
    auto t = parse_qemu_opts("socket,id=c0,path=/tmp/q,,s.sock,server=on,wait=off", "backend", warnings);
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->root, json({{"backend", "socket"},
                             {"id", "c0"},
                             {"path", "/tmp/q,s.sock"},
                             {"server", "on"},
                             {"wait", "off"}}));
    EXPECT_TRUE(warnings.empty());
}

TEST(QemuOpts, ShortFormBooleansWarn) {
    std::vector<std::string> warnings;
    auto t = parse_qemu_opts("socket,id=c0,path=p,server,nowait", "backend", warnings);
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->root["server"], "on");
    EXPECT_EQ(t->root["wait"], "off");
    ASSERT_EQ(warnings.size(), 2u);
    EXPECT_EQ(warnings[0], "short-form boolean option 'server' is deprecated; use server=on instead");
    EXPECT_EQ(warnings[1], "short-form boolean option 'nowait' is deprecated; use wait=off instead");
}

TEST(QemuOpts, Errors) {
    std::vector<std::string> warnings;
    auto t = parse_qemu_opts("socket,id=a,id=b", "backend", warnings);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "parameter 'id' is given twice");
    t = parse_qemu_opts("socket,=x", "backend", warnings);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().message, "invalid parameter ''");
    bool help = false;
    t = parse_qemu_opts("help", "backend", warnings, &help);
    ASSERT_TRUE(t.has_value());
    EXPECT_TRUE(help);
}

// ---------------------------------------------------------------- scalars

TEST(Scalars, Bool) {
    for (const char* s : {"on", "yes", "true", "y"}) EXPECT_EQ(parse_bool_value(s), true) << s;
    for (const char* s : {"off", "no", "false", "n"}) EXPECT_EQ(parse_bool_value(s), false) << s;
    auto b = parse_bool_value("On");
    ASSERT_FALSE(b.has_value());
    EXPECT_EQ(b.error().message, "expected 'on' or 'off', got 'On'");
    EXPECT_FALSE(parse_bool_value("").has_value());
}

TEST(Scalars, Unsigned) {
    EXPECT_EQ(parse_uint64_value("0"), 0u);
    EXPECT_EQ(parse_uint64_value("32768"), 32768u);
    EXPECT_EQ(parse_uint64_value("0x10"), 16u);
    EXPECT_EQ(parse_uint64_value("0XfF"), 255u);
    EXPECT_EQ(parse_uint64_value("18446744073709551615"), UINT64_MAX);
    EXPECT_EQ(parse_uint64_value("0xffffffffffffffff"), UINT64_MAX);
    EXPECT_EQ(parse_uint64_value("18446744073709551616").error().message, "'18446744073709551616' is out of range");
    EXPECT_EQ(parse_uint64_value("0x10000000000000000").error().message, "'0x10000000000000000' is out of range");
    EXPECT_EQ(parse_uint64_value("12a").error().message, "expected an integer, got '12a'");
    EXPECT_EQ(parse_uint64_value("-1").error().message, "expected an integer, got '-1'");
    EXPECT_EQ(parse_uint64_value(" 1").error().message, "expected an integer, got ' 1'");
    EXPECT_EQ(parse_uint64_value("").error().message, "expected an integer, got ''");
    EXPECT_EQ(parse_uint64_value("0x").error().message, "expected an integer, got '0x'");
    EXPECT_EQ(parse_uint64_value("010").error().message,
              "'010' has a leading zero, which QEMU would read as octal; write it in decimal or as 0x hex");
}

TEST(Scalars, Signed) {
    EXPECT_EQ(parse_int64_value("-5"), -5);
    EXPECT_EQ(parse_int64_value("-0x10"), -16);
    EXPECT_EQ(parse_int64_value("9223372036854775807"), INT64_MAX);
    EXPECT_EQ(parse_int64_value("-9223372036854775808"), INT64_MIN);
    EXPECT_EQ(parse_int64_value("9223372036854775808").error().message, "'9223372036854775808' is out of range");
    EXPECT_EQ(parse_int64_value("-9223372036854775809").error().message, "'-9223372036854775809' is out of range");
    EXPECT_EQ(parse_int64_value("-").error().message, "expected an integer, got '-'");
    EXPECT_EQ(parse_int64_value("+1").error().message, "expected an integer, got '+1'");
}

TEST(Scalars, Size) {
    EXPECT_EQ(parse_size_value("512"), 512u);
    EXPECT_EQ(parse_size_value("512b"), 512u);
    EXPECT_EQ(parse_size_value("4k"), 4096u);
    EXPECT_EQ(parse_size_value("4K"), 4096u);
    EXPECT_EQ(parse_size_value("64M"), 64ull << 20);
    EXPECT_EQ(parse_size_value("2G"), 2ull << 30);
    EXPECT_EQ(parse_size_value("1T"), 1ull << 40);
    EXPECT_EQ(parse_size_value("1P"), 1ull << 50);
    EXPECT_EQ(parse_size_value("15E"), 15ull << 60);
    EXPECT_EQ(parse_size_value("1.5G"), 3ull << 29);
    EXPECT_EQ(parse_size_value("0.5k"), 512u);
    EXPECT_EQ(parse_size_value("1.0001k"), 1024u);  // rounded down to whole bytes
    EXPECT_EQ(parse_size_value("0x1000"), 4096u);
    EXPECT_EQ(parse_size_value("010"), 10u);  // sizes are decimal in QEMU too
    EXPECT_EQ(parse_size_value("16E").error().message, "'16E' is out of range");
    EXPECT_EQ(parse_size_value("1.5").error().message, "'1.5' is a fraction of a byte");
    EXPECT_EQ(parse_size_value("1.5B").error().message, "'1.5B' is a fraction of a byte");
    for (const char* bad : {"", "k", "1x", "1KB", "1.k", ".5k", "-1", "0x1k", "1 k"}) {
        auto r = parse_size_value(bad);
        ASSERT_FALSE(r.has_value()) << bad;
        EXPECT_EQ(r.error().message, "expected a size (such as 4096, 64K or 1.5G), got '" + std::string(bad) + "'");
    }
}

// ---------------------------------------------------------------- OptionReader

TEST(OptionReader, KeyvalValuesAreConverted) {
    auto t = parse_keyval("s=str,b=on,u=0x20,i=-3,z=1M,o.x=1");
    ASSERT_TRUE(t.has_value());
    OptionReader r(*t);
    EXPECT_EQ(r.get_string("s").value(), "str");
    EXPECT_EQ(r.get_bool("b").value(), true);
    EXPECT_EQ(r.get_uint64("u").value(), 32u);
    EXPECT_EQ(r.get_int64("i").value(), -3);
    EXPECT_EQ(r.get_size("z").value(), 1u << 20);
    auto o = r.get_object("o");
    ASSERT_TRUE(o.has_value() && o->has_value());
    EXPECT_EQ((*o)->get_uint64("x").value(), 1u);
    EXPECT_TRUE((*o)->check_all_used().has_value());
    EXPECT_EQ(r.get_string("absent").value(), std::nullopt);
    EXPECT_TRUE(r.check_all_used().has_value());
}

TEST(OptionReader, ErrorsNameTheFullKey) {
    auto t = parse_keyval("cache.direct=maybe,n=abc,o=x,extra=1");
    ASSERT_TRUE(t.has_value());
    OptionReader r(*t);
    auto cache = r.get_object("cache");
    ASSERT_TRUE(cache.has_value() && cache->has_value());
    auto direct = (*cache)->get_bool("direct");
    ASSERT_FALSE(direct.has_value());
    EXPECT_EQ(direct.error().message, "parameter 'cache.direct': expected 'on' or 'off', got 'maybe'");
    EXPECT_EQ(r.get_uint64("n").error().message, "parameter 'n': expected an integer, got 'abc'");
    EXPECT_EQ(r.get_object("o").error().message, "parameter 'o': expected an object, got a string");
    EXPECT_EQ(r.get_string("cache").error().message, "parameter 'cache': expected a string, got an object");
    EXPECT_EQ(r.require_string("missing").error().message, "missing 'missing'");
    EXPECT_EQ(r.check_all_used().error().message, "unexpected parameter 'extra'");
    EXPECT_EQ(r.unused(), json({{"extra", "1"}}));
}

TEST(OptionReader, JsonTypesAreStrict) {
    auto t = parse_json_options(R"({"b":"on","n":"1","s":1,"f":1.5,"neg":-1,"ok":true,"u":7,"big":18446744073709551615})");
    ASSERT_TRUE(t.has_value());
    OptionReader r(*t);
    EXPECT_EQ(r.get_bool("b").error().message, "parameter 'b': expected a boolean, got a string");
    EXPECT_EQ(r.get_uint64("n").error().message, "parameter 'n': expected an integer, got a string");
    EXPECT_EQ(r.get_string("s").error().message, "parameter 's': expected a string, got a number");
    EXPECT_EQ(r.get_int64("f").error().message, "parameter 'f': expected an integer, got a number");
    EXPECT_EQ(r.get_uint64("neg").error().message, "parameter 'neg': must not be negative");
    EXPECT_EQ(r.get_int64("neg").value(), -1);
    EXPECT_EQ(r.get_bool("ok").value(), true);
    EXPECT_EQ(r.get_size("u").value(), 7u);
    EXPECT_EQ(r.get_uint64("big").value(), UINT64_MAX);
    EXPECT_EQ(r.get_int64("big").error().message, "parameter 'big': out of range");
}

TEST(OptionReader, RawValueForAlternates) {
    auto t = parse_keyval("file=disk0,backing.driver=file");
    ASSERT_TRUE(t.has_value());
    OptionReader r(*t);
    const json* file = r.get_raw("file");
    ASSERT_NE(file, nullptr);
    EXPECT_TRUE(file->is_string());
    const json* backing = r.get_raw("backing");
    ASSERT_NE(backing, nullptr);
    EXPECT_TRUE(backing->is_object());
    EXPECT_EQ(r.get_raw("nothing"), nullptr);
    EXPECT_TRUE(r.check_all_used().has_value());
}

}  // namespace
}  // namespace ioplane
