// JSON text as QEMU 7.2 writes it (qobject_to_json_pretty()), byte for byte:
// QEMU's iotests compare a storage daemon's QMP output with expected files
// as text, so the spacing and the order of members are part of the interface.
//
// - Members come in the order QEMU's QDict iterates them: a QDict hashes each
//   key into one of 512 buckets (tdb_hash), visits the buckets in order, and
//   within a bucket visits the key inserted last first. nlohmann::json keeps
//   no insertion order, so keys that share a bucket are ordered by a table of
//   the pairs that occur in what ioplane sends (in QEMU's order), and by name
//   otherwise (docs/QMP.md: where the order can still differ).
// - ": " after a key and ", " between members and elements. Pretty: each
//   member or element on its own line, indented 4 spaces per level, and the
//   closing bracket on a line of its own, also for an empty container.
// - Strings escape ", \, \b, \f, \n, \r, \t by name, every other character
//   below 0x20 or from 0x7F up as \uXXXX (upper-case hex; a surrogate pair
//   beyond U+FFFF), and each invalid UTF-8 sequence as \uFFFD: the text is
//   ASCII.
// - Integers in decimal, doubles as printf's "%.17g" (0.1 is
//   0.10000000000000001, 2.0 is 2). Infinities and NaN, which QEMU prints as
//   the non-JSON inf and nan, are null here (our parser refuses 1e999, so
//   none comes from a client).
//
// Thread contract: every function here is pure; any thread.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ioplane::monitor {

// Thread contract: any thread; pure.
// `value` as QEMU's JSON writer prints it. Pretty lines end in "\n"; QEMU's
// monitor turns every "\n" it sends into "\r\n" (qmp_message.h does that).
std::string to_qemu_json(const nlohmann::json& value, bool pretty);

// Thread contract: any thread; pure.
// The QDict bucket (0 to 511) of `key`: members print in bucket order.
unsigned qdict_bucket(std::string_view key);

}  // namespace ioplane::monitor
