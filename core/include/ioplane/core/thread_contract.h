// Contract assertions: every public function says from which thread it may be
// called (ARCHITECTURE.md "Thread contracts"); debug builds check it.
//
// Thread contract: the macros may be used from any thread.
#pragma once

namespace ioplane::detail {
[[noreturn]] void contract_failed(const char* what, const char* file, int line, const char* func);
}  // namespace ioplane::detail

#ifdef NDEBUG
#define IOPLANE_ASSERT(cond) ((void)0)
#else
#define IOPLANE_ASSERT(cond) \
    ((cond) ? (void)0 : ::ioplane::detail::contract_failed(#cond, __FILE__, __LINE__, __func__))
#endif

// The caller runs in the home thread of AioContext `ctx`.
#define assert_in_context(ctx) IOPLANE_ASSERT((ctx).in_home_thread())
// The caller is the main thread (and so may change the graph / configuration).
#define assert_in_main_thread() IOPLANE_ASSERT(::ioplane::in_main_thread())
