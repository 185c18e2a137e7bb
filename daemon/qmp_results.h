// Turning the daemon's results into QMP replies, for the command files
// (qmp_commands.cc, job_commands.cc, bitmap_commands.cc).
//
// Thread contract: pure; any thread.
#pragma once

#include <string>
#include <utility>

#include "ioplane/core/error.h"
#include "ioplane/core/keyval.h"
#include "qmp_message.h"

namespace ioplane::daemon {

// {} on success, else a GenericError with the error's message.
inline monitor::QmpResult done(const Result<void>& r) {
    if (!r) return std::unexpected(monitor::generic_error(r.error().message));
    return nlohmann::json::object();
}

// A GenericError reply.
inline std::unexpected<monitor::QmpError> refuse(std::string message) {
    return std::unexpected(monitor::generic_error(std::move(message)));
}

// The GenericError reply of a failed Result.
template <class T>
std::unexpected<monitor::QmpError> error_of(const Result<T>& r) {
    return refuse(r.error().message);
}

// A command's arguments, typed as QEMU's JSON input visitor types them.
inline OptionTree arguments(const nlohmann::json& args) { return {args, OptionSyntax::json}; }

}  // namespace ioplane::daemon
