#!/usr/bin/env bash
# NBD export benchmark: in one run, starts ioplane-storage-daemon,
# qemu-storage-daemon, nbdkit and bench/nbd_reference_responder on the same
# back ends (null, and a file of random data on tmpfs) and drives each with
# the same fio jobs (nbd engine, unix socket). Per run it records fio's IOPS
# and completion latency, and the server's CPU time (utime+stime of
# /proc/PID/stat, all threads) over fio's measured window, divided by the
# I/Os fio completed. Every (back end, server, workload) pair runs REPS times,
# the servers taking turns (round-robin), and the report gives the medians.
#
#   bench/nbd_bench.sh                  # full run, ~25 minutes on 2 cores
#   bench/nbd_bench.sh --quick          # 3 s runs, 1 repetition: checks the script
#
# Options:
#   --runtime S       measured seconds per fio run (default 10; --quick: 3)
#   --ramp S          fio ramp_time before measuring (default 1)
#   --reps N          repetitions of each pair (default 3; --quick: 1)
#   --backends LIST   comma-separated: null,file (default both)
#   --workloads LIST  comma-separated names (below), or "all" (default: all, the issue's list)
#   --servers LIST    comma-separated: ioplane,ioplane-poll,ioplane-main,qsd,nbdkit,ref
#                     (default all)
#   --poll-max-ns N   poll-max-ns of the ioplane variant's IOThread (default 0:
#                     no busy-polling; see "Servers")
#   --poll-long N     poll-max-ns of the ioplane-poll variant (default 200000)
#   --out DIR         where results go (default /tmp/nbd-bench-YYYYmmdd-HHMMSS)
#   --chart PATH      also copy the chart there (e.g. docs/nbd_bench.png)
#   --no-build        do not run `make build` first
#   --no-profile      skip the perf profile of ioplane at the end
#   --retries N       run a measurement again, up to N times, when other
#                     processes used more than --disturbed CPUs during it
#                     (default 1)
#   --disturbed CPUS  that threshold (default 0.25)
#   --quiet-wait S    before such a retry, wait up to S seconds for the
#                     machine to go quiet (default 30)
#   --retry-budget S  at most S seconds in all spent on retries and waits
#                     (default 300), so a busy machine cannot stretch the run
#
# Workloads (4k unless said): rr4k-qd1, rr4k-qd16, rr4k-qd64 (randread);
# rw4k-qd1, rw4k-qd16, rw4k-qd64 (randwrite); sr64k-qd16 (64k sequential read);
# rr4k-qd16x2 (randread QD16 on each of two connections: fio numjobs=2).
#
# Servers:
#   ioplane       export in an IOThread, poll-max-ns=POLL_NS (0: the thread
#                 sleeps in epoll when idle). Busy-polling trades CPU for
#                 latency: on a client-bound workload a polling server is
#                 100% busy, so its CPU per I/O is 1/IOPS whatever it does.
#   ioplane-poll  the same with adaptive polling up to POLL_LONG, long enough
#                 to span a QD1 round trip on this VM (null back end, rr4k-qd1, rw4k-qd1
#                 and rr4k-qd16 only)
#   ioplane-main  export in the main loop: the same command line as qsd's
#                 (null back end, rr4k-qd1, rw4k-qd1 and rr4k-qd16 only)
#   qsd           qemu-storage-daemon, export in its main loop: Debian's 7.2
#                 build aborts on the first client disconnect when the export
#                 is in an iothread (see docs/BENCHMARKS.md)
#   nbdkit        nbdkit null / nbdkit file
#   ref           bench/nbd_reference_responder (null back end only)
#
# Output in DIR: runs.tsv (one line per kept run; runs-discarded.tsv: the
# disturbed attempts that a retry replaced), fio/*.json, logs, report.md,
# summary.json, nbd_bench.png, profile.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORIG_ARGS="$*"
RUNTIME=10
RAMP=1
REPS=3
QUICK=0
BUILD=1
PROFILE=1
QUIET_WAIT=30
RETRIES=1
RETRY_BUDGET=300
DISTURBED=0.25
POLL_NS=0
POLL_LONG=200000
BACKENDS=null,file
WORKLOADS=
SERVERS=ioplane,ioplane-poll,ioplane-main,qsd,nbdkit,ref
OUT=
CHART=
SIZE=1073741824
IMG=/dev/shm/ioplane-nbd-bench.img
PY=/usr/bin/python3  # Debian's, for python3-matplotlib

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
runtime_set=0 reps_set=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --runtime) RUNTIME=$2; runtime_set=1; shift ;;
    --ramp) RAMP=$2; shift ;;
    --reps) REPS=$2; reps_set=1; shift ;;
    --backends) BACKENDS=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --poll-max-ns) POLL_NS=$2; shift ;;
    --poll-long) POLL_LONG=$2; shift ;;
    --out) OUT=$2; shift ;;
    --chart) CHART=$2; shift ;;
    --no-build) BUILD=0 ;;
    --no-profile) PROFILE=0 ;;
    --quiet-wait) QUIET_WAIT=$2; shift ;;
    --retries) RETRIES=$2; shift ;;
    --retry-budget) RETRY_BUDGET=$2; shift ;;
    --disturbed) DISTURBED=$2; shift ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [ "$runtime_set" = 1 ] || RUNTIME=3
    [ "$reps_set" = 1 ] || REPS=1
fi

# name:rw:bs:iodepth:numjobs
ALL_WORKLOADS=(
    rr4k-qd1:randread:4k:1:1
    rr4k-qd16:randread:4k:16:1
    rr4k-qd64:randread:4k:64:1
    rw4k-qd1:randwrite:4k:1:1
    rw4k-qd16:randwrite:4k:16:1
    rw4k-qd64:randwrite:4k:64:1
    sr64k-qd16:read:64k:16:1
    rr4k-qd16x2:randread:4k:16:2
)
[ -n "$WORKLOADS" ] || WORKLOADS=all
[ "$WORKLOADS" = all ] && WORKLOADS=$(printf '%s\n' "${ALL_WORKLOADS[@]}" | cut -d: -f1 | paste -sd,)
declare -A WL
for w in "${ALL_WORKLOADS[@]}"; do WL[${w%%:*}]=$w; done
IFS=, read -r -a WL_LIST <<<"$WORKLOADS"
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
IFS=, read -r -a BACKEND_LIST <<<"$BACKENDS"
for w in "${WL_LIST[@]}"; do [ -n "${WL[$w]:-}" ] || { echo "unknown workload $w" >&2; exit 2; }; done
for s in "${SERVER_LIST[@]}"; do
    case $s in ioplane | ioplane-poll | ioplane-main | qsd | nbdkit | ref) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done
for b in "${BACKEND_LIST[@]}"; do
    case $b in null | file) ;; *) echo "unknown back end $b" >&2; exit 2 ;; esac
done

# included BACKEND SERVER WORKLOAD: whether the pair is part of the matrix.
included() {
    case $2 in
    ref) [ "$1" = null ] || return 1 ;;
    ioplane-main | ioplane-poll) [ "$1" = null ] && { [ "$3" = rr4k-qd1 ] || [ "$3" = rw4k-qd1 ] || [ "$3" = rr4k-qd16 ]; } || return 1 ;;
    esac
    # QD64 writes only on the null back end (time budget).
    [ "$3" = rw4k-qd64 ] && [ "$1" != null ] && return 1
    return 0
}

# ---------------------------------------------------------------- tools

APT_UPDATED=0
apt_install() {
    echo "installing: $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
        [ "$APT_UPDATED" = 1 ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}
need=()
command -v fio >/dev/null || need+=(fio)
command -v qemu-storage-daemon >/dev/null || need+=(qemu-system-common)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
"$PY" -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || need+=(linux-perf)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
[ -e /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-null-plugin.so ] || nbdkit null --dump-plugin >/dev/null 2>&1 ||
    apt_install nbdkit-plugin-null 2>/dev/null || true

if [ "$BUILD" = 1 ]; then
    make -C "$ROOT" build >/dev/null
fi
DAEMON=$ROOT/build/release/daemon/ioplane-storage-daemon
REF=$ROOT/build/release/bench/nbd_reference_responder
[ -x "$DAEMON" ] || { echo "missing $DAEMON (make build)" >&2; exit 1; }
[ -x "$REF" ] || { echo "missing $REF (make build)" >&2; exit 1; }

[ -n "$OUT" ] || OUT=/tmp/nbd-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/fio" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/nbd-bench-work-XXXXXX)
# Run private copies: a rebuild of build/release during the run must not
# change the binaries between repetitions.
mkdir -p "$WORK/bin"
cp "$DAEMON" "$REF" "$WORK/bin/"
DAEMON=$WORK/bin/$(basename "$DAEMON")
REF=$WORK/bin/$(basename "$REF")
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- processes

PIDS=()  # every background process this script started
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"  # process, CPU and retry helpers
trap 'exit 130' INT TERM

# Back-end file: random data on tmpfs, made once and reused.
if [[ " ${BACKEND_LIST[*]} " == *" file "* ]]; then
    if [ "$(stat -c %s "$IMG" 2>/dev/null || echo 0)" != "$SIZE" ]; then
        echo "creating $IMG ($SIZE bytes of random data)"
        head -c "$SIZE" /dev/urandom >"$IMG.tmp" && mv "$IMG.tmp" "$IMG"
    fi
fi

SPID=  # the running server
SOCK=$WORK/nbd.sock
URI="nbd+unix:///disk?socket=$SOCK"

# start_server SERVER BACKEND LOG
start_server() {
    local server=$1 backend=$2 log=$3 pidf=$WORK/server.pid bdev
    rm -f "$SOCK" "$pidf"
    case $backend in
    null) bdev=driver=null-co,node-name=disk,size=$SIZE,read-zeroes=on ;;
    file) bdev=driver=file,node-name=disk,filename=$IMG ;;
    esac
    case $server in
    ioplane | ioplane-poll)
        local poll=$POLL_NS
        [ "$server" = ioplane ] || poll=$POLL_LONG
        "$DAEMON" --object "iothread,id=io0,poll-max-ns=$poll" --blockdev "$bdev" \
            --nbd-server "addr.type=unix,addr.path=$SOCK" \
            --export type=nbd,id=e0,node-name=disk,writable=on,iothread=io0 --pidfile "$pidf" >"$log" 2>&1 &
        ;;
    ioplane-main)
        "$DAEMON" --blockdev "$bdev" --nbd-server "addr.type=unix,addr.path=$SOCK" \
            --export type=nbd,id=e0,node-name=disk,writable=on --pidfile "$pidf" >"$log" 2>&1 &
        ;;
    qsd)
        qemu-storage-daemon --blockdev "$bdev" --nbd-server "addr.type=unix,addr.path=$SOCK" \
            --export type=nbd,id=e0,node-name=disk,writable=on --pidfile "$pidf" >"$log" 2>&1 &
        ;;
    nbdkit)
        case $backend in
        null) nbdkit -U "$SOCK" -P "$pidf" -f null "$SIZE" >"$log" 2>&1 & ;;
        file) nbdkit -U "$SOCK" -P "$pidf" -f file "$IMG" >"$log" 2>&1 & ;;
        esac
        ;;
    ref)
        "$REF" "$SOCK" "$SIZE" >"$log" 2>&1 &
        ;;
    esac
    SPID=$!
    PIDS+=("$SPID")
    local i
    for i in $(seq 200); do
        if [ "$server" = ref ]; then
            grep -q listening "$log" 2>/dev/null && return 0
        else
            [ -s "$pidf" ] && [ -S "$SOCK" ] && return 0
        fi
        kill -0 "$SPID" 2>/dev/null || { echo "$server exited during startup:" >&2; tail -5 "$log" >&2; exit 1; }
        sleep 0.05
    done
    echo "$server did not start" >&2
    exit 1
}

# fio_args WORKLOAD JSON [RUNTIME]: sets FIO_ARGS, fio's command line for a workload.
# The nbd engine has no direct/buffered I/O: it sends each I/O as one NBD request.
FIO_ARGS=()
fio_args() {
    local name rw bs qd jobs
    IFS=: read -r name rw bs qd jobs <<<"${WL[$1]}"
    FIO_ARGS=(--name="$name" --ioengine=nbd --uri="$URI" --rw="$rw" --bs="$bs" --iodepth="$qd"
        --numjobs="$jobs" --group_reporting --norandommap --time_based --runtime="${3:-$RUNTIME}"
        --ramp_time="$RAMP" --output-format=json --output="$2")
}

# attempt BACKEND SERVER WORKLOAD REP TAG: one fio run against a fresh server;
# leaves its runs.tsv line in ATTEMPT_LINE and the other processes' load in
# ATTEMPT_OTHER (CPUs).
ATTEMPT_LINE='' ATTEMPT_OTHER=''
attempt() {
    local backend=$1 server=$2 wl=$3 rep=$4 tag=$5
    local json=$OUT/fio/$tag.json log=$OUT/logs/$tag.server.log c0 c1 m0 m1 t0 t1 rc=0
    start_server "$server" "$backend" "$log"
    fio_args "$wl" "$json"
    fio "${FIO_ARGS[@]}" >"$OUT/logs/$tag.fio.log" 2>&1 &
    local fpid=$!
    PIDS+=("$fpid")
    sleep "$RAMP"  # fio's measured window starts after its ramp
    c0=$(proc_ticks "$SPID"); m0=$(machine_ticks); t0=$(date +%s.%N)
    wait "$fpid" || rc=$?
    forget_pid "$fpid"
    c1=$(proc_ticks "$SPID" || echo -1); m1=$(machine_ticks); t1=$(date +%s.%N)
    kill -0 "$SPID" 2>/dev/null || rc=99  # the server died under load
    stop_server
    local mb0 mt0 mb1 mt1
    read -r mb0 mt0 <<<"$m0"
    read -r mb1 mt1 <<<"$m1"
    # backend server workload rep rc server_ticks machine_busy machine_total window_s hz json
    ATTEMPT_LINE=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$backend" "$server" "$wl" "$rep" "$rc" \
        $((c1 - c0)) $((mb1 - mb0)) $((mt1 - mt0)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" \
        "$HZ" "$json")
    local line
    line=$(NBD_BENCH_DISTURBED=$DISTURBED "$PY" "$ROOT/bench/nbd_report.py" --one <(echo "$ATTEMPT_LINE")) || line="(unparsed) other=9"
    ATTEMPT_OTHER=${line##*other=}
    ATTEMPT_OTHER=${ATTEMPT_OTHER%% *}
    echo "  $tag: $line"
    [ "$rc" = 0 ] || echo "  WARNING: $tag: exit status $rc (see $OUT/logs/$tag.*)"
}

# run_one BACKEND SERVER WORKLOAD REP: a measurement, retried while disturbed
# (keep_least_disturbed in lib.sh).
RUN_NO=0
run_one() {
    local backend=$1 server=$2 wl=$3 rep=$4
    RUN_NO=$((RUN_NO + 1))
    echo "[$RUN_NO/$NRUNS, $((SECONDS / 60))m$((SECONDS % 60))s]"
    keep_least_disturbed "$backend.$server.$wl.$rep" "$OUT/runs.tsv" "$OUT/runs-discarded.tsv" \
        attempt "$backend" "$server" "$wl" "$rep"
}

# ---------------------------------------------------------------- the matrix

npairs=0
for b in "${BACKEND_LIST[@]}"; do for w in "${WL_LIST[@]}"; do for s in "${SERVER_LIST[@]}"; do
    included "$b" "$s" "$w" && npairs=$((npairs + 1))
done; done; done
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: bench/nbd_bench.sh $ORIG_ARGS"
    echo "disturbed: other processes above $DISTURBED CPUs; retries $RETRIES, budget ${RETRY_BUDGET}s"
    echo "runtime: $RUNTIME s, ramp: $RAMP s, reps: $REPS, poll-max-ns: ioplane $POLL_NS, ioplane-poll $POLL_LONG"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "fio: $(fio --version)"
    echo "qsd: $(qemu-storage-daemon --version | head -1) ($(dpkg-query -W -f '${Version}' qemu-system-common 2>/dev/null))"
    echo "nbdkit: $(nbdkit --version)"
    echo "libnbd: $(nbdinfo --version 2>/dev/null | head -1)"
    echo "ioplane: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)'), binary sha256 $(sha256sum "$DAEMON" | cut -c1-16)"
} >"$OUT/machine.txt"
echo "NBD benchmark: $npairs pairs x $REPS reps, ${RUNTIME}s + ${RAMP}s ramp each (~$((npairs * REPS * (RUNTIME + RAMP + 1) / 60 + 1)) min); results in $OUT"
: >"$OUT/runs.tsv"
: >"$OUT/runs-discarded.tsv"
NRUNS=$((npairs * REPS))
for rep in $(seq "$REPS"); do
    for b in "${BACKEND_LIST[@]}"; do
        for w in "${WL_LIST[@]}"; do
            # Rotate the server order each repetition so no server always runs first.
            n=${#SERVER_LIST[@]}
            for i in $(seq 0 $((n - 1))); do
                s=${SERVER_LIST[$(((i + rep - 1) % n))]}
                included "$b" "$s" "$w" || continue
                run_one "$b" "$s" "$w" "$rep"
            done
        done
    done
done

# ---------------------------------------------------------------- profile

if [ "$PROFILE" = 1 ]; then
    P=$OUT/profile.txt
    PROF_RT=$((RUNTIME < 5 ? RUNTIME : 5))
    echo "profiling: rr4k-qd16, null back end, ${PROF_RT}s per measurement"
    : >"$P"
    # Syscalls per I/O (perf stat on the syscall tracepoint: counting only,
    # little overhead), for ioplane, qsd and the reference responder; and
    # for ioplane a flat CPU profile (perf record; the VM has no hardware
    # counters, so the software cpu-clock event).
    # fio_bg WORKLOAD JSON RUNTIME: fio in the background (FPID).
    fio_bg() {
        fio_args "$1" "$2" "$3"
        fio "${FIO_ARGS[@]}" >/dev/null 2>&1 &
        FPID=$!
        PIDS+=("$FPID")
    }
    fio_wait() { wait "$FPID" || true; forget_pid "$FPID"; }
    for s in ioplane qsd ref; do
        # 1. Syscalls per I/O: perf stat counting the syscall tracepoint.
        start_server "$s" null "$OUT/logs/profile.$s.log"
        fio_bg rr4k-qd16 "$OUT/fio/profile.$s.json" $((PROF_RT + 1))
        sleep "$RAMP"
        perf stat -x, -e raw_syscalls:sys_enter -p "$SPID" -o "$WORK/stat.$s" -- sleep "$PROF_RT" >/dev/null 2>&1 || true
        fio_wait
        stop_server
        # 2. Which syscalls: perf trace -s (slows the server; only the mix counts).
        start_server "$s" null "$OUT/logs/profile.$s.trace.log"
        fio_bg rr4k-qd16 "$WORK/trace.json" 3
        sleep "$RAMP"
        perf trace -s -p "$SPID" -o "$WORK/trace.$s" -- sleep 1 >/dev/null 2>&1 || true
        fio_wait
        stop_server
        # 3. ioplane only: a flat CPU profile. The VM has no hardware
        #    counters, so the software cpu-clock event.
        if [ "$s" = ioplane ]; then
            start_server "$s" null "$OUT/logs/profile.$s.record.log"
            fio_bg rr4k-qd16 "$OUT/fio/profile.$s.record.json" $((PROF_RT + 1))
            sleep "$RAMP"
            perf record -q -e cpu-clock -F 4999 -g -p "$SPID" -o "$OUT/perf.ioplane.data" -- sleep "$PROF_RT" >/dev/null 2>&1 || true
            fio_wait
            stop_server
        fi
        iops=$("$PY" -c 'import json,sys; t=open(sys.argv[1]).read(); d=json.loads(t[t.index("{"):]); print(round(d["jobs"][0]["read"]["iops"]))' "$OUT/fio/profile.$s.json")
        calls=$(awk -F, '/raw_syscalls/ {print $1}' "$WORK/stat.$s")
        {
            echo "=== $s: rr4k-qd16, null back end: $iops IOPS; $calls syscalls in ${PROF_RT}s = $(awk -v c="$calls" -v i="$iops" -v t="$PROF_RT" 'BEGIN {printf "%.2f", c / (i * t)}') per I/O"
            echo "--- syscall mix (perf trace -s, 1 s; counts relative only):"
            grep -E '^ +[a-z_0-9]+ +[0-9]+ ' "$WORK/trace.$s" | sort -k2,2nr | awk '{printf "  %-16s %s\n", $1, $2}' | head -8
        } >>"$P"
    done
    {
        echo "=== ioplane flat profile (perf record -e cpu-clock, ${PROF_RT}s), top symbols:"
        perf report -i "$OUT/perf.ioplane.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.7 2>/dev/null |
            grep '%' | head -40
        echo "--- by object:"
        perf report -i "$OUT/perf.ioplane.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -8
        echo "--- by thread:"
        perf report -i "$OUT/perf.ioplane.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep '%' | head -5
    } >>"$P"
fi

# ---------------------------------------------------------------- report

NBD_BENCH_DISTURBED=$DISTURBED "$PY" "$ROOT/bench/nbd_report.py" "$OUT" | tee "$OUT/report.md"
"$PY" "$ROOT/bench/nbd_chart.py" "$OUT/summary.json" "$OUT/nbd_bench.png"
if [ -n "$CHART" ]; then
    cp "$OUT/nbd_bench.png" "$CHART"
    echo "chart: $CHART"
fi
[ "$PROFILE" = 0 ] || { echo; echo "## Profile (rr4k-qd16, null back end)"; echo '```'; cat "$OUT/profile.txt"; echo '```'; } | tee -a "$OUT/report.md"
echo "results: $OUT"
