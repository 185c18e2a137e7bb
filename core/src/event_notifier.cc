#include "ioplane/core/event_notifier.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace ioplane {

Result<EventNotifier> EventNotifier::create() {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return fail_errno("eventfd");
    return EventNotifier(fd);
}

EventNotifier& EventNotifier::operator=(EventNotifier&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        other.fd_ = -1;
    }
    return *this;
}

EventNotifier::~EventNotifier() {
    if (fd_ >= 0) ::close(fd_);
}

void EventNotifier::set() const {
    uint64_t one = 1;
    ssize_t ignored = ::write(fd_, &one, sizeof one);  // EAGAIN: already set
    (void)ignored;
}

bool EventNotifier::test_and_clear() const {
    uint64_t value = 0;
    bool was_set = false;
    // An eventfd read returns and resets the whole counter; loop only on EINTR.
    for (;;) {
        ssize_t n = ::read(fd_, &value, sizeof value);
        if (n == sizeof value) was_set = true;
        if (n < 0 && errno == EINTR) continue;
        return was_set;
    }
}

}  // namespace ioplane
