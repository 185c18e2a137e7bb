#!/usr/bin/env bash
# A/B of two ioplane-storage-daemon builds on one vhost-user-blk workload:
# runs A, B, A, B, ... (a fresh daemon per run: an IOThread, null-co with
# read-zeroes, the export in the IOThread), each driven by ioplane-vublk, and
# prints every pair and the medians of IOPS, the server's CPU µs per I/O and
# the tool's. Interleaving matters here: this machine's speed drifts by tens
# of percent within minutes, so two blocks of runs one after the other
# measure the drift as much as the change. Count the pairs B wins, too.
#
#   bench/vublk_ab.sh OLD_DAEMON NEW_DAEMON [--rw randread] [--iodepth 16]
#                     [--queues 1] [--pairs 8] [--runtime 4] [--tool-arg ARG]...
#
# --tool-arg passes ARG to ioplane-vublk in every run (e.g. --inflight: an
# old daemon that does not offer INFLIGHT_SHMFD then runs without it).
#
# Keep the binaries outside the build tree (cp them to /tmp), so that
# rebuilding one does not change it under the runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$1
B=$2
shift 2
RW=randread IODEPTH=16 QUEUES=1 PAIRS=8 RUNTIME=4
TOOL_ARGS=()
VUBLK=$ROOT/build/release/tools/vublk/ioplane-vublk
while [ $# -gt 0 ]; do
    case $1 in
        --rw) RW=$2 ;;
        --iodepth) IODEPTH=$2 ;;
        --queues) QUEUES=$2 ;;
        --pairs) PAIRS=$2 ;;
        --runtime) RUNTIME=$2 ;;
        --vublk) VUBLK=$2 ;;
        --tool-arg) TOOL_ARGS+=("$2") ;;
        *) echo "vublk_ab.sh: unknown option $1" >&2; exit 1 ;;
    esac
    shift 2
done
for f in "$A" "$B" "$VUBLK"; do [ -x "$f" ] || { echo "vublk_ab.sh: $f is not an executable" >&2; exit 1; }; done
TMP=$(mktemp -d)
DAEMON_PID=
trap '[ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# Prints "IOPS server-µs/IO tool-µs/IO" for one run of daemon $1.
run_one() {
    local sock=$TMP/vhost.sock
    rm -f "$sock"
    "$1" --object iothread,id=io0 \
        --blockdev driver=null-co,node-name=n,size=1073741824,read-zeroes=on \
        --export type=vhost-user-blk,id=e0,node-name=n,addr.type=unix,addr.path="$sock",writable=on,num-queues="$QUEUES",iothread=io0 \
        >"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    "$VUBLK" --socket "$sock" --rw "$RW" --bs 4k --iodepth "$IODEPTH" --queues "$QUEUES" --runtime "$RUNTIME" \
        --ramp 1 --server-pid "$DAEMON_PID" --quiet --json "${TOOL_ARGS[@]}" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print("%.0f %.3f %.3f" % (d["iops"], d["server_cpu_us_per_io"], d["tool_cpu_us_per_io"]))'
    kill "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
}

echo "$RW 4k QD $IODEPTH, $QUEUES queue(s), $PAIRS pairs of ${RUNTIME} s runs; A=$A B=$B"
echo "run IOPS server-us/IO tool-us/IO"
for _ in $(seq "$PAIRS"); do
    echo "A $(run_one "$A")"
    echo "B $(run_one "$B")"
done | tee "$TMP/runs"
python3 - "$TMP/runs" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {k: [statistics.median(float(r[i]) for r in rows if r[0] == k) for i in (1, 2, 3)] for k in "AB"}
for k in "AB":
    print("%s median: %.0f IOPS, server %.3f us/IO, tool %.3f us/IO" % (k, *med[k]))
a = [float(r[2]) for r in rows if r[0] == "A"]
b = [float(r[2]) for r in rows if r[0] == "B"]
wins = sum(y < x for x, y in zip(a, b))
print("B/A server CPU per I/O: %.3f; B used less CPU per I/O in %d of %d pairs" % (med["B"][1] / med["A"][1], wins, len(a)))
EOF
