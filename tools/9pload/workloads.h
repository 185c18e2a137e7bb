// ioplane-9pload's workloads and the measured run. A workload is a small
// state machine per slot: a slot is one tag with at most one request in
// flight, so CONCURRENCY slots keep that many requests outstanding. An op
// may take several requests in turn (walk, lopen, clunk); its latency runs
// from its first request to its last reply.
//
// Thread contract: single-threaded program.
#pragma once

#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "latency_histogram.h"
#include "options.h"
#include "session.h"

namespace ioplane::load9p {

using Histogram = tools::LatencyHistogram;

struct Slot {
    uint16_t tag = 0;
    uint32_t fid = 0;        // the slot's own fid (create-unlink, readdir, open)
    uint8_t expect = 0;      // the reply type its request in flight wants
    uint8_t step = 0;        // where in the op it is
    bool busy = false;       // a request in flight
    bool fid_live = false;   // `fid` is in use on the server
    uint64_t start_ns = 0;   // when the op started
    uint64_t offset = 0;     // read*/write*: the op's offset; readdir: the next offset
    uint64_t done = 0;       // read*/write*: bytes done; readdir: entries seen
    uint32_t pending = 0;    // read*/write*: bytes of the request in flight
    uint64_t seq = 0;        // ops started: create-unlink's unique names
    char name[32] = {};      // create-unlink: this op's file name
    uint8_t name_len = 0;
};

class Workload {
public:
    explicit Workload(Session& session) : session_(session) {}
    virtual ~Workload() = default;
    // Makes its files in the work directory (kWorkFid) and opens what it
    // reads or writes: everything the measured run needs.
    virtual Result<void> prepare() = 0;
    // Encodes the first request of a new op of `slot` (and sets slot.expect).
    virtual void start(Slot& slot) = 0;
    // Takes the reply to slot's request, of the type it expected, and
    // encodes the next request of the op (false) or says the op is done
    // (true). Errors: EPROTO for a malformed reply, EIO for a count or
    // listing that is not what was asked.
    virtual Result<bool> reply(Slot& slot, const Message& reply) = 0;
    // Data moved by one op (read*/write*), else 0.
    virtual uint64_t bytes_per_op() const { return 0; }

protected:
    Session& session_;
};

std::unique_ptr<Workload> make_workload(const Options& options, Session& session);

struct RunStats {
    uint64_t ops = 0;       // completed in the window
    uint64_t messages = 0;  // replies received in the window
    double window_s = 0;
    Histogram latency;      // ns, of the ops counted
    double client_cpu_s = 0;
    std::optional<double> server_cpu_s;
    bool interrupted = false;
};

// Runs `workload` on `slots` (tags 0..n-1, their fids set): warmup, then
// the measured window, then waits for the ops in flight to finish. Ops that
// finish outside the window are not counted. `stop` set by a signal ends the
// run early (stats.interrupted). On an error the run stops starting ops,
// waits for the requests in flight unless the session is broken, and
// returns the error.
Result<RunStats> run(Session& session, Workload& workload, std::vector<Slot>& slots, const Options& options,
                     const volatile std::sig_atomic_t& stop);

// Best-effort cleanup after a run: clunks the slots' fids still in use.
void release_slots(Session& session, std::vector<Slot>& slots);

}  // namespace ioplane::load9p
