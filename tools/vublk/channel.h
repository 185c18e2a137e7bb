// The vhost-user control channel: whole messages (header, payload, file
// descriptors as SCM_RIGHTS) over a connected unix stream socket, and the
// request/reply patterns the protocol uses, including REPLY_ACK.
//
// The raw calls (send(), receive()) take and return any bytes, so that a
// test can send a malformed message and see what the back end answers.
//
// Thread contract: one thread at a time uses a Channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <expected>
#include <span>
#include <string>
#include <vector>

#include "vhost_user_defs.h"

namespace ioplane::vublk {

struct Message {
    uint32_t request = 0;
    uint32_t flags = kVersion;
    std::vector<uint8_t> payload;  // header.size is payload.size()
    std::vector<int> fds;          // sent: borrowed; received: owned by the caller

    template <typename T>
    static Message with(Request r, const T& body) {
        Message m;
        m.request = uint32_t(r);
        m.payload.resize(sizeof body);
        std::memcpy(m.payload.data(), &body, sizeof body);
        return m;
    }
    static Message empty(Request r) {
        Message m;
        m.request = uint32_t(r);
        return m;
    }
};

class Channel {
public:
    static std::expected<Channel, std::string> connect(const std::string& path);
    Channel(Channel&& other) noexcept;
    Channel& operator=(Channel&& other) noexcept;
    Channel(const Channel&) = delete;
    ~Channel();

    int fd() const { return fd_; }
    // How long receive() waits for a reply before failing (default 10 s).
    void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
    // Whether REPLY_ACK was negotiated: request() then sets need_reply on
    // messages without a reply of their own and checks the ack.
    void set_reply_ack(bool on) { reply_ack_ = on; }
    bool reply_ack() const { return reply_ack_; }

    // Raw: sends the header (size = payload size, whatever the request),
    // the payload and the fds in one sendmsg, the fds with its first byte.
    std::expected<void, std::string> send(const Message& m);
    // Raw: the next message from the back end, whatever it is. Fails on a
    // timeout, a closed connection or a payload over 64 KiB (no legitimate
    // reply is that large). Received fds are the caller's to close.
    std::expected<Message, std::string> receive();

    // A request whose reply carries a payload (GET_*): sends it, reads the
    // reply, checks that it answers `m.request` with the reply flag and
    // version 1, and that its payload is `reply_size` bytes (any size if
    // reply_size is SIZE_MAX).
    std::expected<Message, std::string> call(const Message& m, size_t reply_size);
    // A request without a reply of its own (SET_*): sends it; with REPLY_ACK
    // negotiated it also sets need_reply and fails unless the back end acks
    // with a zero u64.
    std::expected<void, std::string> command(Message m);

private:
    explicit Channel(int fd) : fd_(fd) {}
    std::expected<Message, std::string> reply_to(const Message& m, size_t reply_size);
    int fd_ = -1;
    bool reply_ack_ = false;
    std::chrono::milliseconds timeout_{10000};
};

}  // namespace ioplane::vublk
