// The cases of vhost_user_bad_input, by group. Each runs on fresh
// connections of its own and throws Failure (harness.h) when the daemon does
// not do what the specs and docs/VHOST-USER-BLK.md require.
#pragma once

#include <vector>

namespace vubbad {

struct Case {
    const char* name;
    void (*run)();
};

std::vector<Case> message_cases();  // message_cases.cc: the control channel
std::vector<Case> ring_cases();     // ring_cases.cc: virtqueues and requests
std::vector<Case> session_cases();  // session_cases.cc: connections, in-flight I/O

// A well-behaved front end through the library's normal path: setup,
// write+read back with verification on every queue, GET_VRING_BASE (every
// request taken), RESET_DEVICE. Run after every other case.
void good_client();

}  // namespace vubbad
