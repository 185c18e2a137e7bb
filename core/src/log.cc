#include "ioplane/core/log.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ioplane::log {
namespace {

Level level_from_env() {
    const char* env = std::getenv("IOPLANE_LOG");
    if (env == nullptr) return Level::info;
    if (std::strcmp(env, "debug") == 0) return Level::debug;
    if (std::strcmp(env, "warn") == 0) return Level::warn;
    if (std::strcmp(env, "error") == 0) return Level::error;
    return Level::info;
}

std::atomic<Level>& current_level() {
    static std::atomic<Level> value{level_from_env()};
    return value;
}

const char* level_name(Level l) {
    switch (l) {
        case Level::debug: return "debug";
        case Level::info: return "info";
        case Level::warn: return "warning";
        case Level::error: return "error";
    }
    return "?";
}

}  // namespace

void set_level(Level l) { current_level().store(l, std::memory_order_relaxed); }
Level level() { return current_level().load(std::memory_order_relaxed); }

void vwrite(Level l, const char* fmt, va_list ap) {
    char thread_name[16] = "?";
    pthread_getname_np(pthread_self(), thread_name, sizeof thread_name);
    char line[2048];
    int n = std::snprintf(line, sizeof line, "ioplane: %s [%s]: ", level_name(l), thread_name);
    int m = std::vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
    line[len++] = '\n';
    // One write per line: atomic with respect to other threads' lines.
    ssize_t ignored = ::write(STDERR_FILENO, line, len);
    (void)ignored;
}

void write(Level l, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwrite(l, fmt, ap);
    va_end(ap);
}

}  // namespace ioplane::log
