// Error values that cross ioplane's APIs (see ARCHITECTURE.md "Errors").
//
// Thread contract: plain values; any thread.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

namespace ioplane {

// An errno plus a message that names the object it concerns.
struct Error {
    int code = EIO;       // positive errno value
    std::string message;  // human readable, e.g. "node 'disk0': read past end"

    // "message: strerror(code)"
    std::string describe() const;
};

template <class T>
using Result = std::expected<T, Error>;

// Builds the unexpected value for a Result: `return fail(EINVAL, "...")`.
inline std::unexpected<Error> fail(int code, std::string message) {
    return std::unexpected<Error>(Error{code, std::move(message)});
}

// Same, with code = errno at the time of the call.
std::unexpected<Error> fail_errno(std::string message);

}  // namespace ioplane
