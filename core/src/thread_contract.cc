#include "ioplane/core/thread_contract.h"

#include <cstdlib>

#include "ioplane/core/log.h"

namespace ioplane::detail {

void contract_failed(const char* what, const char* file, int line, const char* func) {
    log::write(log::Level::error, "contract violated in %s (%s:%d): %s", func, file, line, what);
    std::abort();
}

}  // namespace ioplane::detail
