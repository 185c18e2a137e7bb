#include "ioplane/core/error.h"

#include <cstring>

namespace ioplane {

std::string Error::describe() const {
    return message + ": " + std::strerror(code);
}

std::unexpected<Error> fail_errno(std::string message) {
    return fail(errno, std::move(message));
}

}  // namespace ioplane
