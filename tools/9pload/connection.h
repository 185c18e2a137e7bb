// A 9P connection for a single-threaded client that pipelines: messages are
// encoded straight into one output buffer and sent with one sendmsg per
// batch (a Twrite's data by reference, not copied); replies are cut out of
// one receive buffer, as many as one recv brought. When nothing waits to be
// sent, a wait for replies is a single blocking recv.
//
// Thread contract: single-threaded program; one thread uses the object.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane::load9p {

// One message out of the receive buffer; `body` follows size[4] type[1]
// tag[2] and stays valid until the next exchange().
struct Message {
    uint8_t type;
    uint16_t tag;
    std::span<const uint8_t> body;
};

class Connection {
public:
    // HOST:PORT ([ADDR]:PORT for IPv6), TCP with Nagle off.
    static Result<Connection> connect_tcp(std::string_view host_port);
    static Result<Connection> connect_unix(const std::string& path);

    Connection(Connection&& other) noexcept;
    Connection& operator=(Connection&&) = delete;
    ~Connection();

    // The largest message accepted from the server: the proposed msize
    // before Rversion, the negotiated one after.
    void set_max_message(uint32_t bytes);
    // How long exchange() waits for input before giving up with ETIMEDOUT.
    void set_timeout(std::chrono::milliseconds timeout);

    // Encoders append whole messages here; they are sent in order.
    std::vector<uint8_t>& out() { return out_; }
    // Sends `data` after what out() holds now, without copying it: it must
    // stay valid and unchanged until the next exchange() has sent it.
    void append_external(std::span<const uint8_t> data);
    bool output_pending() const { return out_.size() > sealed_ || next_segment_ < segments_.size(); }

    // Sends what the socket takes, then waits for replies and reads what has
    // arrived. Errors: ETIMEDOUT (nothing came within the timeout), EINTR (a
    // signal came first: nothing lost, call again), ECONNRESET (the server
    // closed the connection), or the socket's error.
    Result<void> exchange();

    // The next whole message in the receive buffer, or nullopt. EPROTO for a
    // size field under 7 bytes or over the maximum.
    Result<std::optional<Message>> next();

private:
    explicit Connection(int fd);
    // out_[offset, offset + length), or `external` when it is set.
    struct Segment {
        const uint8_t* external;
        size_t offset;
        size_t length;
    };
    void seal();
    Result<void> send_some();
    void make_room();
    Result<size_t> receive(int flags);

    int fd_ = -1;
    uint32_t max_message_ = 8192;
    int timeout_ms_ = 10000;

    std::vector<uint8_t> out_;
    std::vector<Segment> segments_;
    size_t sealed_ = 0;         // bytes of out_ already in segments_
    size_t next_segment_ = 0;   // send progress: segment index
    size_t segment_sent_ = 0;   // and bytes of it sent

    std::vector<uint8_t> in_;
    size_t in_start_ = 0;  // unparsed bytes are in_[in_start_, in_end_)
    size_t in_end_ = 0;
};

}  // namespace ioplane::load9p
