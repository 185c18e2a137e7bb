#!/usr/bin/env bash
# A/B of two ioplane-storage-daemon builds: the server's CPU time per I/O on
# block exports, for the rows {nbd, vublk (vhost-user-blk)} x {null, file}.
# Per row it runs A, B, A, B, ... (a fresh daemon per run: one IOThread, the
# export in it) and prints every run, the medians, the ratio B/A of the
# server's CPU per I/O and the number of pairs B won (used less CPU per I/O
# than the A run just before it); at the end, a table for docs/BENCHMARKS.md.
# Interleaving matters: this machine's speed drifts by tens of percent within
# minutes, so two blocks of runs one after the other measure the drift as
# much as the change. Count the pairs B wins, too.
#
#   bench/block_ab.sh OLD NEW [--export nbd|vublk|all] [--backend null|file|all]
#                     [--rw randread|randwrite] [--iodepth N] [--pairs N] [--runtime S]
#
# OLD (A) and NEW (B) are ioplane-storage-daemon binaries; the script runs
# private copies of them, so rebuilding one during the runs changes nothing.
#
# Options:
#   --export E       nbd, vublk or all (default all)
#   --backend B      null, file or all (default all)
#   --rw MODE        randread or randwrite (read, write and randrw work too;
#                    default randread)
#   --iodepth N      requests in flight (default 16)
#   --pairs N        A/B pairs per row (default 8)
#   --runtime S      measured seconds per run, after a 1 s ramp (default 4)
#   --queues N       vhost-user-blk queues (vublk rows only; default 1)
#   --vublk PATH     the ioplane-vublk binary (default build/release/tools/vublk/ioplane-vublk)
#   --vublk-arg ARG  pass ARG to ioplane-vublk in every vublk run; repeatable
#                    (e.g. --inflight: an old daemon that does not offer
#                    INFLIGHT_SHMFD then runs without it)
#   -h, --help
#
# Rows: 4k requests, --rw at --iodepth, over a 1 GiB device.
#   null   driver=null-co,size=1G,read-zeroes=on
#   file   driver=file on a 1 GiB file of random data on tmpfs (/dev/shm),
#          made once per invocation and removed at exit
#   nbd    fio's nbd engine over a unix socket (one connection), time_based,
#          1 s ramp. Server CPU: utime+stime of /proc/PID/stat (all threads)
#          from the end of fio's ramp to fio's exit, over the I/Os fio
#          completed (as bench/nbd_bench.sh). Client: fio's usr+sys CPU.
#   vublk  ioplane-vublk --server-pid, 1 s ramp: it measures the server's
#          CPU over its own window (as bench/vublk_bench.sh). Client: the tool's.
#
# Needs fio with the nbd engine for the nbd rows (Debian's fio has it:
# apt-get install fio, or `make deps-test`) and ioplane-vublk for the vublk
# rows (make build).
#
# With the defaults: 4 rows x 8 pairs x 2 runs of about 5.5 s, ~6 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
# bad_usage MESSAGE: the message, the synopsis, exit 2.
bad_usage() {
    echo "block_ab.sh: $1" >&2
    sed -n '/^#   bench\/block_ab.sh/,/^#$/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    echo "(--help for more)" >&2
    exit 2
}
die() { echo "block_ab.sh: $*" >&2; exit 1; }

EXPORTS=all BACKENDS=all RW=randread IODEPTH=16 PAIRS=8 RUNTIME=4 QUEUES=1
RAMP=1
SIZE=1073741824
VUBLK=$ROOT/build/release/tools/vublk/ioplane-vublk
VUBLK_ARGS=()
POS=()
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage ;;
    --export | --backend | --rw | --iodepth | --pairs | --runtime | --queues | --vublk | --vublk-arg)
        [ $# -ge 2 ] || bad_usage "$1 needs a value"
        case $1 in
        --export) EXPORTS=$2 ;;
        --backend) BACKENDS=$2 ;;
        --rw) RW=$2 ;;
        --iodepth) IODEPTH=$2 ;;
        --pairs) PAIRS=$2 ;;
        --runtime) RUNTIME=$2 ;;
        --queues) QUEUES=$2 ;;
        --vublk) VUBLK=$2 ;;
        --vublk-arg) VUBLK_ARGS+=("$2") ;;
        esac
        shift 2
        ;;
    -*) bad_usage "unknown option $1" ;;
    *) POS+=("$1"); shift ;;
    esac
done
[ ${#POS[@]} -eq 2 ] || bad_usage "give two daemon binaries, OLD and NEW"
A=${POS[0]} B=${POS[1]}

case $EXPORTS in nbd | vublk) EXPORT_LIST=("$EXPORTS") ;; all) EXPORT_LIST=(nbd vublk) ;; *) die "--export: nbd, vublk or all, not $EXPORTS" ;; esac
case $BACKENDS in null | file) BACKEND_LIST=("$BACKENDS") ;; all) BACKEND_LIST=(null file) ;; *) die "--backend: null, file or all, not $BACKENDS" ;; esac
case $RW in read | write | randread | randwrite | randrw) ;; *) die "--rw: randread, randwrite, read, write or randrw, not $RW" ;; esac
for v in IODEPTH PAIRS RUNTIME QUEUES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} wants a positive integer, not ${!v}"
done

# ---------------------------------------------------------------- tools

for f in "$A" "$B"; do [[ -f $f && -x $f ]] || die "$f is not an executable"; done
command -v python3 >/dev/null || die "python3 is missing"
if [[ " ${EXPORT_LIST[*]} " == *" nbd "* ]]; then
    command -v fio >/dev/null || die "fio is missing (the nbd rows need it with its nbd engine: apt-get install fio, or make deps-test)"
    fio --enghelp 2>/dev/null | grep -qw nbd ||
        die "$(command -v fio) has no nbd engine (Debian's fio package has it: apt-get install fio); or run --export vublk"
fi
if [[ " ${EXPORT_LIST[*]} " == *" vublk "* ]]; then
    [[ -f $VUBLK && -x $VUBLK ]] || die "no ioplane-vublk at $VUBLK (make build, or --vublk PATH); or run --export nbd"
fi

# ---------------------------------------------------------------- processes

WORK=$(mktemp -d /tmp/block-ab-XXXXXX)
IMG=
PIDS=()  # every background process this script started
SPID=    # the running daemon
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    [ ${#PIDS[@]} -eq 0 ] || sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [ -z "$IMG" ] || rm -f "$IMG"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
HZ=$(getconf CLK_TCK)
. "$ROOT/bench/lib.sh"  # proc_ticks, stop_server, forget_pid

# Private copies: a rebuild of OLD or NEW during the runs changes nothing.
mkdir "$WORK/bin"
cp "$A" "$WORK/bin/daemon-A"
cp "$B" "$WORK/bin/daemon-B"
if [[ " ${EXPORT_LIST[*]} " == *" vublk "* ]]; then
    cp "$VUBLK" "$WORK/bin/ioplane-vublk"
    VUBLK=$WORK/bin/ioplane-vublk
fi
SOCK=$WORK/export.sock

ROWS=()
for e in "${EXPORT_LIST[@]}"; do for b in "${BACKEND_LIST[@]}"; do ROWS+=("$e-$b"); done; done
if [[ " ${BACKEND_LIST[*]} " == *" file "* ]]; then
    IMG=$(mktemp /dev/shm/block-ab-XXXXXX.img)
    echo "creating $IMG ($SIZE bytes of random data)"
    head -c "$SIZE" /dev/urandom >"$IMG"
fi

# fail MESSAGE: stop with the message and the tails of the run's logs.
fail() {
    local f
    echo "block_ab.sh: $1" >&2
    for f in "$WORK"/run.*; do
        [ -s "$f" ] || continue
        echo "--- $(basename "$f") (tail):" >&2
        tail -5 "$f" >&2
    done
    exit 1
}

# start_daemon SIDE EXPORT BACKEND: a fresh daemon (SPID), back once its
# socket is there.
start_daemon() {
    local bin=$WORK/bin/daemon-$1 bdev
    rm -f "$SOCK" "$WORK"/run.*
    case $3 in
    null) bdev=driver=null-co,node-name=disk,size=$SIZE,read-zeroes=on ;;
    file) bdev=driver=file,node-name=disk,filename=$IMG ;;
    esac
    case $2 in
    nbd)
        "$bin" --object iothread,id=io0 --blockdev "$bdev" \
            --nbd-server "addr.type=unix,addr.path=$SOCK" \
            --export type=nbd,id=e0,node-name=disk,writable=on,iothread=io0 >"$WORK/run.daemon.log" 2>&1 &
        ;;
    vublk)
        "$bin" --object iothread,id=io0 --blockdev "$bdev" \
            --export "type=vhost-user-blk,id=e0,node-name=disk,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$QUEUES,iothread=io0" \
            >"$WORK/run.daemon.log" 2>&1 &
        ;;
    esac
    SPID=$!
    PIDS+=("$SPID")
    for _ in $(seq 200); do
        [ -S "$SOCK" ] && return 0
        kill -0 "$SPID" 2>/dev/null || fail "daemon $1 (${!1}) exited during start-up"
        sleep 0.05
    done
    fail "daemon $1 (${!1}): no socket $SOCK after 10 s"
}

# run_nbd SIDE: one fio run against the daemon; sets RESULT.
run_nbd() {
    local json=$WORK/run.fio.json c0 c1 rc=0 fpid
    fio --name=ab --ioengine=nbd --uri="nbd+unix:///disk?socket=$SOCK" --rw="$RW" --bs=4k \
        --iodepth="$IODEPTH" --norandommap --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
        --output-format=json --output="$json" >"$WORK/run.fio.log" 2>&1 &
    fpid=$!
    PIDS+=("$fpid")
    sleep "$RAMP"  # fio's measured window starts after its ramp
    c0=$(proc_ticks "$SPID") || fail "daemon $1 died during fio's ramp"
    wait "$fpid" || rc=$?
    forget_pid "$fpid"
    c1=$(proc_ticks "$SPID") || fail "daemon $1 died under load"
    [ "$rc" = 0 ] || fail "fio failed (exit status $rc) against daemon $1"
    RESULT=$(python3 - "$json" $((c1 - c0)) "$HZ" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
job = json.loads(t[t.index("{"):])["jobs"][0]  # fio may print notes before the JSON
ios = job["read"]["total_ios"] + job["write"]["total_ios"]
secs = job["job_runtime"] / 1e3
if ios == 0 or job["error"]:
    sys.exit("fio completed no I/O")
server_s = int(sys.argv[2]) / int(sys.argv[3])
client_s = (job["usr_cpu"] + job["sys_cpu"]) / 100 * secs
print("%.0f %.3f %.3f" % (ios / secs, server_s * 1e6 / ios, client_s * 1e6 / ios))
EOF
    ) || fail "could not read fio's results"
}

# run_vublk SIDE: one ioplane-vublk run against the daemon; sets RESULT.
run_vublk() {
    local rc=0
    "$VUBLK" --socket "$SOCK" --rw "$RW" --bs 4k --iodepth "$IODEPTH" --queues "$QUEUES" --runtime "$RUNTIME" \
        --ramp "$RAMP" --server-pid "$SPID" --quiet --json "${VUBLK_ARGS[@]}" >"$WORK/run.vublk.json" 2>"$WORK/run.vublk.log" || rc=$?
    kill -0 "$SPID" 2>/dev/null || fail "daemon $1 died under load"
    [ "$rc" = 0 ] || fail "ioplane-vublk failed (exit status $rc) against daemon $1"
    RESULT=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("%.0f %.3f %.3f" % (d["iops"], d["server_cpu_us_per_io"], d["tool_cpu_us_per_io"]))' \
        "$WORK/run.vublk.json") || fail "could not read ioplane-vublk's results"
}

# ---------------------------------------------------------------- summary

cat >"$WORK/summary.py" <<'EOF'
import statistics, sys

NAMES = {"nbd": "nbd", "vublk": "vhost-user-blk", "null": "null-co", "file": "file (tmpfs)"}
mode, path = sys.argv[1], sys.argv[2]
runs = [line.split() for line in open(path)]  # row pair side IOPS server-us client-us


def row_stats(row):
    mine = [r for r in runs if r[0] == row]
    med = {s: [statistics.median(float(r[i]) for r in mine if r[2] == s) for i in (3, 4, 5)] for s in "AB"}
    by_pair = {(r[1], r[2]): float(r[4]) for r in mine}
    pairs = sorted({r[1] for r in mine}, key=int)
    wins = sum(by_pair[(p, "B")] < by_pair[(p, "A")] for p in pairs)
    return med, med["B"][1] / med["A"][1], wins, len(pairs)


def label(row):
    e, b = row.split("-")
    return "%s, %s" % (NAMES[e], NAMES[b])


if mode == "row":
    med, ratio, wins, n = row_stats(sys.argv[3])
    for s in "AB":
        print("%s median: %.0f IOPS, server %.3f us/IO, client %.3f us/IO" % (s, *med[s]))
    print("B/A server CPU per I/O: %.3f; B used less CPU per I/O in %d of %d pairs" % (ratio, wins, n))
else:
    print("| %s | A µs/IO | B µs/IO | B/A | pairs B won |" % sys.argv[3])
    print("|---|---|---|---|---|")
    for row in dict.fromkeys(r[0] for r in runs):
        med, ratio, wins, n = row_stats(row)
        print("| %s | %.3f | %.3f | %.3f | %d of %d |" % (label(row), med["A"][1], med["B"][1], ratio, wins, n))
EOF

# ---------------------------------------------------------------- runs

RUNS=$WORK/runs
: >"$RUNS"
DESC="$RW 4k QD $IODEPTH"
[ "$QUEUES" = 1 ] || DESC="$DESC, $QUEUES vhost-user-blk queues"
EST=$((${#ROWS[@]} * PAIRS * 2 * (RUNTIME * 10 + RAMP * 10 + 6) / 10))  # seconds; ~0.6 s start and stop per run
[ "$EST" -lt 120 ] && EST="$EST s" || EST="$(((EST + 30) / 60)) min"
echo "$DESC; rows: ${ROWS[*]}; $PAIRS pairs of ${RUNTIME} s runs (+${RAMP} s ramp) per row, ~$EST"
echo "A=$A (sha256 $(sha256sum "$A" | cut -c1-12))"
echo "B=$B (sha256 $(sha256sum "$B" | cut -c1-12))"
[ ${#VUBLK_ARGS[@]} -eq 0 ] || echo "ioplane-vublk arguments: ${VUBLK_ARGS[*]}"
for row in "${ROWS[@]}"; do
    export=${row%-*} backend=${row#*-}
    echo
    echo "== $row: $DESC"
    echo "pair run IOPS server-us/IO client-us/IO"
    for p in $(seq "$PAIRS"); do
        for side in A B; do
            start_daemon "$side" "$export" "$backend"
            "run_$export" "$side"
            stop_server
            echo "$row $p $side $RESULT" >>"$RUNS"
            echo "$p $side $RESULT"
        done
    done
    python3 "$WORK/summary.py" row "$RUNS" "$row"
done
echo
echo "Server CPU µs per I/O, medians of $PAIRS pairs of ${RUNTIME} s runs ($DESC):"
echo
python3 "$WORK/summary.py" table "$RUNS" "$DESC"
