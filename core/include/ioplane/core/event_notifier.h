// EventNotifier: an eventfd used as a level-triggered "something happened"
// flag between threads (QEMU's EventNotifier). Also the type of a guest's kick
// and call fds later on.
//
// Thread contract: set() from any thread; test_and_clear() from the thread
// that watches the fd.
#pragma once

#include "ioplane/core/error.h"

namespace ioplane {

class EventNotifier {
public:
    // Any thread. Creates a non-blocking eventfd.
    static Result<EventNotifier> create();
    // Any thread. Adopts an existing eventfd (e.g. one received over a socket).
    explicit EventNotifier(int fd) : fd_(fd) {}
    EventNotifier(EventNotifier&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    EventNotifier& operator=(EventNotifier&& other) noexcept;
    EventNotifier(const EventNotifier&) = delete;
    EventNotifier& operator=(const EventNotifier&) = delete;
    ~EventNotifier();

    // Any thread. Makes the fd readable. Never fails on a valid eventfd (the
    // counter cannot overflow in practice; EAGAIN means it is already set).
    void set() const;
    // Watching thread. Returns whether it was set, and clears it.
    bool test_and_clear() const;

    int fd() const { return fd_; }

private:
    int fd_ = -1;
};

}  // namespace ioplane
