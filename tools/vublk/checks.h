// Functional checks of a back end (--check), run on one queue with one
// request at a time before any workload. They write: the data in the check
// area (8 blocks from --offset) and the device's last block are destroyed.
//   rw            a multi-block write split over several descriptors, read
//                 back whole and block by block; the device's last block
//   flush         FLUSH completes OK (skipped without VIRTIO_BLK_F_FLUSH)
//   get-id        GET_ID completes OK and gives a NUL-padded string
//   write-zeroes  ranges written with and without the unmap flag (and two
//                 ranges in one request when max_write_zeroes_seg allows)
//                 read back as zeroes, their neighbours keep their data
//   discard       a discard completes OK, its neighbours keep their data
//
// Thread contract: run on the thread that drives the runner's queue.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "device_limits.h"
#include "queue_runner.h"

namespace ioplane::vublk {

struct CheckResult {
    enum Outcome { kOk, kSkipped, kFailed };
    std::string name;
    Outcome outcome;
    std::string detail;
};

// The data buffer the checks need in their runner's slot 0.
uint32_t check_buffer_bytes(const DeviceLimits& l);

// Runs the checks in `mask` (options.h's Check bits) on slot 0 of `runner`.
// A failed check does not stop the others; a protocol failure does (the
// last result says so).
std::vector<CheckResult> run_checks(QueueRunner& runner, const DeviceLimits& l, unsigned mask, uint64_t offset,
                                    uint32_t seed);

}  // namespace ioplane::vublk
