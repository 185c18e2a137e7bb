// One process-wide logger with levels. Messages go to stderr, one line each,
// prefixed with the level and the thread's name.
//
// Thread contract: any thread. Each call writes its line with one write(2), so
// lines from different threads never interleave.
#pragma once

#include <cstdarg>

namespace ioplane::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

// Any thread. Messages below `level` are dropped. Default: info, or the value
// of IOPLANE_LOG (debug|info|warn|error) read at first use.
void set_level(Level level);
Level level();

// Any thread.
void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void vwrite(Level level, const char* fmt, va_list ap);

}  // namespace ioplane::log

#define IOPLANE_LOG_AT(lvl, ...)                                         \
    do {                                                                 \
        if (static_cast<int>(lvl) >= static_cast<int>(::ioplane::log::level())) \
            ::ioplane::log::write(lvl, __VA_ARGS__);                     \
    } while (0)
#define LOG_DEBUG(...) IOPLANE_LOG_AT(::ioplane::log::Level::debug, __VA_ARGS__)
#define LOG_INFO(...) IOPLANE_LOG_AT(::ioplane::log::Level::info, __VA_ARGS__)
#define LOG_WARN(...) IOPLANE_LOG_AT(::ioplane::log::Level::warn, __VA_ARGS__)
#define LOG_ERROR(...) IOPLANE_LOG_AT(::ioplane::log::Level::error, __VA_ARGS__)
