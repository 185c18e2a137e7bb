// QMP text, byte for byte as qemu-storage-daemon 7.2 sends it: QEMU's
// iotests compare it as text. The expected texts follow QEMU's
// qobject/json-writer.c and qdict.c; the spacing, member order and escapes
// were also checked against the real daemon (tests/integration/qmp_text.py
// does that in CTest).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "qemu_json.h"
#include "qmp_message.h"

namespace ioplane::monitor {
namespace {

using nlohmann::json;

TEST(QemuJson, BucketsAreQemusTdbHash) {
    // Values from QEMU's tdb_hash() % 512.
    const std::map<std::string, unsigned> expected = {
        {"timestamp", 26}, {"event", 361}, {"data", 505}, {"seconds", 5}, {"microseconds", 374},
        {"status", 202},   {"id", 486},    {"return", 401}, {"error", 489}, {"class", 211},
        {"desc", 377},     {"minor", 225}, {"micro", 225}, {"", 57},
    };
    for (const auto& [key, bucket] : expected) EXPECT_EQ(qdict_bucket(key), bucket) << key;
}

TEST(QemuJson, MessagesAreInQemusMemberOrderWithItsSpacing) {
    EXPECT_EQ(format_return(json::object(), std::nullopt, false), "{\"return\": {}}\r\n");
    EXPECT_EQ(format_return(json::array(), json(7), false), "{\"return\": [], \"id\": 7}\r\n");
    // "id" hashes before "error".
    EXPECT_EQ(format_error(generic_error("bad"), json("x"), false),
              "{\"id\": \"x\", \"error\": {\"class\": \"GenericError\", \"desc\": \"bad\"}}\r\n");
    // As in QEMU's tests/qemu-iotests/tests/qsd-jobs.out.
    EXPECT_EQ(format_event("JOB_STATUS_CHANGE", {{"id", "job0"}, {"status", "created"}}, 1'700'000'000'012'345, false),
              "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 12345}, \"event\": \"JOB_STATUS_CHANGE\", "
              "\"data\": {\"status\": \"created\", \"id\": \"job0\"}}\r\n");
    EXPECT_EQ(format_event("X", nullptr, 0, false),
              "{\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}, \"event\": \"X\"}\r\n");
}

TEST(QemuJson, KeysThatShareABucketPrintInQemusOrder) {
    // The keys of each object ioplane sends, by the QAPI type it copies.
    // Two pairs share a bucket; QEMU prints the member later in the schema
    // first (qemu_json.cc's table). A new pair here needs an entry there.
    const std::map<std::string, std::string> objects = {
        {"greeting", "QMP version capabilities qemu package"},
        {"VersionTriple", "major minor micro"},
        {"response", "return error id class desc"},
        {"event", "timestamp event data seconds microseconds"},
        {"BlockDeviceInfo", "file node-name ro drv backing_file backing_file_depth encrypted detect_zeroes bps bps_rd "
                            "bps_wr iops iops_rd iops_wr image cache write_threshold"},
        {"BlockdevCacheInfo", "writeback direct no-flush"},
        {"ImageInfo", "filename format dirty-flag actual-size virtual-size cluster-size backing-filename "
                      "full-backing-filename backing-filename-format snapshots backing-image format-specific"},
        {"ImageInfoSpecific", "type data"},
        {"ImageInfoSpecificQCow2", "compat lazy-refcounts corrupt refcount-bits extended-l2 compression-type"},
        {"SnapshotInfo", "id name vm-state-size date-sec date-nsec vm-clock-sec vm-clock-nsec icount"},
        {"IOThreadInfo", "id thread-id poll-max-ns poll-grow poll-shrink aio-max-batch"},
        {"JobInfo", "id type status current-progress total-progress error"},
        {"BlockExportInfo", "id type node-name shutting-down"},
        {"ThrottleLimits", "iops-total iops-total-max iops-total-max-length iops-read iops-read-max "
                           "iops-read-max-length iops-write iops-write-max iops-write-max-length bps-total "
                           "bps-total-max bps-total-max-length bps-read bps-read-max bps-read-max-length bps-write "
                           "bps-write-max bps-write-max-length iops-size"},
        {"JOB_STATUS_CHANGE", "id status"},
        {"BLOCK_EXPORT_DELETED", "id"},
        {"CommandInfo", "name"},
        {"x-query-export-stats", "id type node-name connections ops"},
        {"x-query-export-stats ops", "read write flush discard write-zeroes block-status"},
        {"x-query-export-stats op", "requests bytes errors total-time-ns latency-histogram"},
        {"BlockLatencyHistogramInfo", "boundaries bins"},
    };
    std::set<std::pair<std::string, std::string>> shared;
    for (const auto& [type, keys] : objects) {
        std::map<unsigned, std::string> seen;
        std::istringstream in(keys);
        for (std::string key; in >> key;) {
            auto [it, fresh] = seen.emplace(qdict_bucket(key), key);
            if (!fresh) shared.insert(std::minmax(it->second, key));
        }
    }
    const std::set<std::pair<std::string, std::string>> expected = {{"micro", "minor"},
                                                                     {"backing_file", "write_threshold"}};
    EXPECT_EQ(shared, expected);
    EXPECT_EQ(to_qemu_json({{"major", 7}, {"minor", 2}, {"micro", 0}}, false),
              "{\"micro\": 0, \"minor\": 2, \"major\": 7}");
    EXPECT_EQ(to_qemu_json({{"backing_file", "b"}, {"write_threshold", 0}}, false),
              "{\"write_threshold\": 0, \"backing_file\": \"b\"}");
    // Other keys that share a bucket go by name ("k3" and "z": 348).
    EXPECT_EQ(to_qemu_json({{"z", 1}, {"k3", 2}}, false), "{\"k3\": 2, \"z\": 1}");
}

TEST(QemuJson, GreetingIsQemusTextWithOurVersion) {
    EXPECT_EQ(format_greeting(false), "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
                                      "\"package\": \"ioplane " IOPLANE_VERSION "\"}, \"capabilities\": []}}\r\n");
}

const json kNested = {{"list", json::array({1, "two", 3.5, true, nullptr, json::object(), json::array()})},
                      {"nested", {{"a", {{"b", json::array({json::object()})}}}}},
                      {"name", "x"}};

TEST(QemuJson, CompactNestsObjectsAndArraysWithCommaSpace) {
    // Buckets: name 39, list 81, nested 393.
    EXPECT_EQ(to_qemu_json(kNested, false),
              R"({"name": "x", "list": [1, "two", 3.5, true, null, {}, []], "nested": {"a": {"b": [{}]}}})");
    EXPECT_EQ(to_qemu_json(json::object(), false), "{}");
    EXPECT_EQ(to_qemu_json(json::array(), false), "[]");
    EXPECT_EQ(to_qemu_json("s", false), "\"s\"");
}

TEST(QemuJson, PrettyPutsEveryItemAndEveryClosingBracketOnItsOwnLine) {
    EXPECT_EQ(to_qemu_json(kNested, true),
              "{\n"
              "    \"name\": \"x\",\n"
              "    \"list\": [\n"
              "        1,\n"
              "        \"two\",\n"
              "        3.5,\n"
              "        true,\n"
              "        null,\n"
              "        {\n"
              "        },\n"
              "        [\n"
              "        ]\n"
              "    ],\n"
              "    \"nested\": {\n"
              "        \"a\": {\n"
              "            \"b\": [\n"
              "                {\n"
              "                }\n"
              "            ]\n"
              "        }\n"
              "    }\n"
              "}");
    EXPECT_EQ(to_qemu_json(json::object(), true), "{\n}");
    EXPECT_EQ(to_qemu_json(json::array(), true), "[\n]");
    // On the wire every newline is "\r\n", as QEMU's monitor sends it.
    EXPECT_EQ(format_return(json::object(), json(1), true), "{\r\n    \"return\": {\r\n    },\r\n    \"id\": 1\r\n}\r\n");
}

TEST(QemuJson, NumbersAsQemuPrintsThem) {
    const json numbers = {std::numeric_limits<int64_t>::min(),
                          std::numeric_limits<uint64_t>::max(),
                          0,
                          0.1,
                          2.0,
                          -0.5,
                          1e300,
                          1e-7,
                          std::nan(""),
                          std::numeric_limits<double>::infinity()};
    EXPECT_EQ(to_qemu_json(numbers, false),
              "[-9223372036854775808, 18446744073709551615, 0, 0.10000000000000001, 2, -0.5, "
              "1.0000000000000001e+300, 9.9999999999999995e-08, null, null]");
}

TEST(QemuJson, StringsAreAsciiWithQemusEscapes) {
    const struct {
        std::string in;
        const char* out;
    } cases[] = {
        {"\"\\/\b\f\n\r\t", R"("\"\\/\b\f\n\r\t")"},
        {"\x01\x1f \x7f~", R"("\u0001\u001F \u007F~")"},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", R"("\u00E9\u20AC\uD83D\uDE00")"},  // é € 😀
        {std::string("a\0b", 3), R"("a\u0000b")"},
        {"\xc0\x80", R"("\u0000")"},  // modified UTF-8's U+0000
        // Invalid UTF-8: one U+FFFD per bad sequence, then on after it.
        {"\xff\x80", R"("\uFFFD\uFFFD")"},          // impossible byte, stray continuation byte
        {"\xc3", R"("\uFFFD")"},                    // cut short by the end
        {"\xe2\x82" "A", R"("\uFFFDA")"},           // cut short by a byte that is no continuation
        {"\xc1\xbf", R"("\uFFFD")"},                // overlong
        {"\xfc\x80\x80\x80\x80\x80", R"("\uFFFD")"},  // six bytes, overlong
        {"\xed\xa0\x80", R"("\uFFFD")"},            // a surrogate
        {"\xef\xbf\xbe\xef\xb7\x90", R"("\uFFFD\uFFFD")"},  // noncharacters U+FFFE, U+FDD0
        {"\xf4\x90\x80\x80", R"("\uFFFD")"},        // past U+10FFFF
    };
    for (const auto& c : cases) EXPECT_EQ(to_qemu_json(c.in, false), c.out) << testing::PrintToString(c.in);
    // Keys too.
    EXPECT_EQ(to_qemu_json({{"\xc3\xa9", 1}}, false), R"({"\u00E9": 1})");
}

}  // namespace
}  // namespace ioplane::monitor
