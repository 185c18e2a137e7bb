// Copying between a host file and the device (--write-from, --read-to),
// one request at a time in chunks of the runner's slot 0, so that a test
// can put known bytes at a known offset and compare the image afterwards.
//
// Thread contract: run on the thread that drives the runner's queue.
#pragma once

#include <cstdint>
#include <expected>
#include <string>

#include "device_limits.h"
#include "queue_runner.h"

namespace ioplane::vublk {

// Writes the whole file (a multiple of 512 bytes) at `offset`; returns the bytes written.
std::expected<uint64_t, std::string> write_from_file(QueueRunner& r, const DeviceLimits& l, const std::string& path,
                                                     uint64_t offset);
// Reads `length` bytes at `offset` into the file (created or truncated).
std::expected<uint64_t, std::string> read_to_file(QueueRunner& r, const DeviceLimits& l, const std::string& path,
                                                  uint64_t offset, uint64_t length);

}  // namespace ioplane::vublk
