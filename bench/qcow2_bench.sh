#!/usr/bin/env bash
# qcow2 benchmark: in one run, serves the same qcow2 images from
# ioplane-storage-daemon and qemu-storage-daemon (both with the NBD export in
# an IOThread, the same command line), and the same data as a raw file from
# ioplane (the floor: no format), all on tmpfs, and drives each with the same
# fio jobs (nbd engine, unix socket). Per run it records fio's IOPS and
# completion latency, and the server's CPU time (utime+stime of
# /proc/PID/stat, all threads) over fio's measured window, divided by the
# I/Os fio completed. Every (row, server) pair runs REPS times, the servers
# taking turns (round-robin), and the report gives the medians, the ratios
# and the issue's targets with PASS/FAIL.
#
#   bench/qcow2_bench.sh                # full run, ~15 minutes on 2 cores (~20 with retries)
#   bench/qcow2_bench.sh --quick        # 3 s runs, 1 repetition, 1 GiB allocations: checks the script
#
# Options:
#   --runtime S        measured seconds per fio run (default 10; --quick: 3);
#                      for the alloc rows, at most S seconds
#   --ramp S           fio ramp_time of the rows on existing data (default 1;
#                      the alloc rows have none: they measure the whole pass)
#   --reps N           repetitions of each pair (default 3; --quick: 1)
#   --rows LIST        comma-separated row names (below), or "all" (default)
#   --servers LIST     comma-separated: ioplane,qsd,raw (default all three)
#   --alloc-gib N      virtual size of the alloc rows' images, in GiB: one
#                      write per cluster, N*16384 writes per run, up to N GiB
#                      of tmpfs per run (default 4; --quick: 1)
#   --qsd-export MODE  iothread (default) or main: where qsd's export runs
#                      (see "qsd" below; the script falls back to main by
#                      itself when an IOThread run of qsd cannot complete)
#   --poll-max-ns N    poll-max-ns of every server's IOThread (default 0: the
#                      threads sleep in the kernel when idle, so CPU per I/O
#                      counts work, not busy-polling)
#   --daemon PATH      ioplane-storage-daemon (default build/release/daemon/...)
#   --out DIR          where results go (default /tmp/qcow2-bench-YYYYmmdd-HHMMSS)
#   --no-build         do not run `make build` first
#   --retries N        run a measurement again, up to N times, when other
#                      processes used more than --disturbed CPUs during it
#                      (default 1)
#   --disturbed CPUS   that threshold (default 0.25)
#   --quiet-wait S     before such a retry, wait up to S seconds for the
#                      machine to go quiet (default 30)
#   --retry-budget S   at most S seconds in all spent on retries and waits
#                      (default 300), so a busy machine cannot stretch the run
#
# Rows (64 KiB clusters everywhere):
#   rr4k-qd1, rr4k-qd16, rw4k-qd1, rw4k-qd16
#       randread / randwrite 4k over a 1 GiB image whose every cluster holds
#       data (qemu-img convert of 1 GiB of random data); the raw server
#       serves that random data as a raw file.
#   alloc4k-qd16, alloc64k-qd16
#       allocating writes into a fresh empty image (made for every run) of
#       --alloc-gib GiB: one write of 4k (the rest of the cluster is filled
#       with zeroes) or 64k (a whole cluster) at the start of each cluster,
#       every cluster once, in a random order (an fio iolog: fio's random map
#       cannot be combined with blockalign), QD 16, until every cluster is
#       written or --runtime passes. For raw: the same writes into a fresh
#       raw file, preallocated (fallocate), so there is no allocation at all.
#   alloc4k-qd16-backed, alloc64k-qd16-backed
#       the same into a fresh overlay whose backing file is a fully
#       allocated qcow2 image of the same size: the 4k writes copy the rest
#       of each cluster from it. The raw floor is the unbacked row's.
#   chain-rr4k-qd16
#       randread 4k QD 16 of a 3-deep chain: base (the 1 GiB image above),
#       mid and top each with a third of the clusters rewritten (disjoint,
#       random), so a read finds its cluster in top, mid or base with equal
#       odds. The raw floor is rr4k-qd16's.
#
# Servers:
#   ioplane  --object iothread,id=io0,poll-max-ns=N --blockdev driver=qcow2,
#            node-name=disk,file.driver=file,file.filename=IMG --nbd-server
#            addr.type=unix,... --export type=nbd,...,writable=on,iothread=io0
#   qsd      qemu-storage-daemon with the same command line. Debian's 7.2
#            build aborts (an assertion in nbd_blockdev_client_closed) when a
#            client disconnects from an export in an IOThread. Two things
#            keep its measurement whole: fio's nbd engine opens a first
#            connection only to learn the size, so a stand-in (the helper
#            below) answers that probe for every server and moves the
#            server's socket into place, and the job's connection is the only
#            one a server sees; and the server's CPU time at the end of the
#            window is read from /proc when fio exits or, when qsd has
#            already died at fio's disconnect, from wait4() on it (its whole
#            CPU time, which then includes its abort and exit: the report
#            gives that cost, measured before the matrix). The abort is
#            recorded per run. If a short qsd run with the export in an
#            IOThread still fails, qsd runs in its main loop and the report
#            says so.
#   raw      ioplane, --blockdev driver=raw,node-name=disk,file.driver=file,
#            file.filename=DATA, export in an IOThread: the floor.
#
# Output in DIR: runs.tsv (one line per kept run; runs-discarded.tsv: the
# disturbed attempts that a retry replaced), preflight.tsv, fio/*.json,
# logs/, machine.txt, images.txt, report.md, summary.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORIG_ARGS="$*"
RUNTIME=10
RAMP=1
REPS=3
QUICK=0
BUILD=1
QUIET_WAIT=30
RETRIES=1
RETRY_BUDGET=300
DISTURBED=0.25
POLL_NS=0
ALLOC_GIB=4
QSD_EXPORT=iothread
ROWS=all
SERVERS=ioplane,qsd,raw
OUT=
DAEMON=$ROOT/build/release/daemon/ioplane-storage-daemon
SIZE=1073741824  # the rows on existing data: 1 GiB
CLUSTER=65536
PY=/usr/bin/python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
runtime_set=0 reps_set=0 alloc_set=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --runtime) RUNTIME=$2; runtime_set=1; shift ;;
    --ramp) RAMP=$2; shift ;;
    --reps) REPS=$2; reps_set=1; shift ;;
    --rows) ROWS=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --alloc-gib) ALLOC_GIB=$2; alloc_set=1; shift ;;
    --qsd-export) QSD_EXPORT=$2; shift ;;
    --poll-max-ns) POLL_NS=$2; shift ;;
    --daemon) DAEMON=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
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
    [ "$alloc_set" = 1 ] || ALLOC_GIB=1
fi
case $QSD_EXPORT in iothread | main) ;; *) echo "--qsd-export: iothread or main" >&2; exit 2 ;; esac
[[ "$ALLOC_GIB" =~ ^[1-9][0-9]*$ ]] || { echo "--alloc-gib: a whole number of GiB" >&2; exit 2; }
ALLOC_SIZE=$((ALLOC_GIB * 1073741824))

# name:image:rw:bs:iodepth. image: full (every cluster holds data), empty
# (fresh, no backing file), backed (fresh overlay on a full image), chain.
ALL_ROWS=(
    rr4k-qd1:full:randread:4k:1
    rr4k-qd16:full:randread:4k:16
    rw4k-qd1:full:randwrite:4k:1
    rw4k-qd16:full:randwrite:4k:16
    alloc4k-qd16:empty:randwrite:4k:16
    alloc64k-qd16:empty:randwrite:64k:16
    alloc4k-qd16-backed:backed:randwrite:4k:16
    alloc64k-qd16-backed:backed:randwrite:64k:16
    chain-rr4k-qd16:chain:randread:4k:16
)
declare -A ROW
for r in "${ALL_ROWS[@]}"; do ROW[${r%%:*}]=$r; done
[ "$ROWS" = all ] && ROWS=$(printf '%s\n' "${ALL_ROWS[@]}" | cut -d: -f1 | paste -sd,)
IFS=, read -r -a ROW_LIST <<<"$ROWS"
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for r in "${ROW_LIST[@]}"; do [ -n "${ROW[$r]:-}" ] || { echo "unknown row $r" >&2; exit 2; }; done
for s in "${SERVER_LIST[@]}"; do
    case $s in ioplane | qsd | raw) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done

row_field() { local f; IFS=: read -r -a f <<<"${ROW[$1]}"; echo "${f[$2]}"; }
row_image() { row_field "$1" 1; }
# floor_row ROW: the raw server's row that is ROW's floor (raw has no
# backing file and no chain: those rows take the unbacked row's and
# rr4k-qd16's).
floor_row() {
    case $(row_image "$1") in
    backed) echo "${1%-backed}" ;;
    chain) echo rr4k-qd16 ;;
    *) echo "$1" ;;
    esac
}
# The rows the matrix walks: the chosen ones, then the floors raw needs that
# were not chosen (run by raw only).
MATRIX_ROWS=("${ROW_LIST[@]}")
declare -A CHOSEN RAW_ROWS
for r in "${ROW_LIST[@]}"; do CHOSEN[$r]=1; done
for r in "${ROW_LIST[@]}"; do
    fr=$(floor_row "$r")
    RAW_ROWS[$fr]=1
    [ -n "${CHOSEN[$fr]:-}" ] || { CHOSEN[$fr]=floor; MATRIX_ROWS+=("$fr"); }
done
# included ROW SERVER: whether the pair is part of the matrix.
included() {
    local s
    for s in "${SERVER_LIST[@]}"; do [ "$s" = "$2" ] && break; s=; done
    [ -n "$s" ] || return 1
    if [ "$2" = raw ]; then [ -n "${RAW_ROWS[$1]:-}" ]; else [ "${CHOSEN[$1]}" = 1 ]; fi
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
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || need+=(qemu-utils)
[ -x "$PY" ] || need+=(python3)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

if [ "$BUILD" = 1 ]; then
    make -C "$ROOT" build >/dev/null
fi
[ -x "$DAEMON" ] || { echo "missing $DAEMON (make build, or --daemon PATH)" >&2; exit 1; }
DAEMON=$(cd "$(dirname "$DAEMON")" && pwd)/$(basename "$DAEMON")
# The daemon's build type, and whether sources changed after it was built.
DAEMON_BUILD=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$(dirname "$DAEMON")/../CMakeCache.txt" 2>/dev/null || true)
DAEMON_STALE=$(find "$ROOT" \( -path "$ROOT/build" -o -path "$ROOT/.git" \) -prune -o -type f \
    \( -name '*.cc' -o -name '*.h' -o -name CMakeLists.txt \) -newer "$DAEMON" -print -quit 2>/dev/null || true)
[ -z "$DAEMON_STALE" ] || echo "WARNING: $DAEMON is older than the sources (${DAEMON_STALE#"$ROOT"/}, ...)"

[ -n "$OUT" ] || OUT=/tmp/qcow2-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/fio" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/qcow2-bench-work-XXXXXX)
SHM=  # the images, on tmpfs; made below
# A private copy: a rebuild during the run must not change the binary
# between repetitions.
mkdir -p "$WORK/bin"
cp "$DAEMON" "$WORK/bin/"
DAEMON_SRC=$DAEMON
DAEMON=$WORK/bin/$(basename "$DAEMON")
HZ=$(getconf CLK_TCK)
REF=  # lib.sh's reference server: none here

# ---------------------------------------------------------------- processes

PIDS=()  # every background process this script started
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    [ -z "$SHM" ] || rm -rf "$SHM"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"  # process, CPU and retry helpers
trap 'exit 130' INT TERM

# The helper that runs each server: starts it, answers fio's size probe in
# its place (see "qsd" above), and reports how the server ended and its
# whole CPU time, from wait4().
cat >"$WORK/helper.py" <<'EOF'
"""helper.py SOCK SERVER_SOCK SIZE STATUS -- SERVER_COMMAND...

1. Starts SERVER_COMMAND (no core dumps), writes its pid to STATUS.pid and
   waits for it to listen on SERVER_SOCK.
2. Listens on SOCK, fio's URI, in the server's place for fio's probe: fio's
   nbd engine connects once in its setup to learn the size, closes, and
   connects again for the job. The moment the probe arrives, SERVER_SOCK is
   renamed onto SOCK, so the job's connection, the only one the server
   sees, goes to the server; the probe is answered here with SIZE.
3. Waits for the server and writes STATUS: "<how it ended> <its whole CPU
   time, s> <unix time>", exact even when the server died at the client's
   disconnect and is gone from /proc.
"""
import os
import resource
import socket
import struct
import sys
import threading
import time

sock_path, server_sock, size, status_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cmd = sys.argv[sys.argv.index("--") + 1:]
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
with open(status_path + ".pid", "w") as f:
    f.write(f"{pid}\n")

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
NBD_OPT_ABORT, NBD_OPT_INFO, NBD_OPT_GO = 2, 6, 7
NBD_REP_ACK, NBD_REP_INFO, NBD_REP_ERR_UNSUP = 1, 3, 0x80000001


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


def reply(c, opt, typ, data=b""):
    c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, typ, len(data)) + data)


def stand_in(listener):
    c, _ = listener.accept()
    os.rename(server_sock, sock_path)  # from now on, connections go to the server
    listener.close()
    try:
        c.sendall(b"NBDMAGIC" + struct.pack(">QH", IHAVEOPT, 1 | 2))  # fixed newstyle, no zeroes
        recv_exact(c, 4)
        while True:
            magic, opt, length = struct.unpack(">QII", recv_exact(c, 16))
            if magic != IHAVEOPT:
                return
            recv_exact(c, length)
            if opt in (NBD_OPT_GO, NBD_OPT_INFO):
                # NBD_INFO_EXPORT: size, flags (has flags, send flush)
                reply(c, opt, NBD_REP_INFO, struct.pack(">HQH", 0, size, 1 | 4))
                reply(c, opt, NBD_REP_ACK)
                if opt == NBD_OPT_GO:
                    break
            elif opt == NBD_OPT_ABORT:
                reply(c, opt, NBD_REP_ACK)
                return
            else:
                reply(c, opt, NBD_REP_ERR_UNSUP)
        while c.recv(4096):  # NBD_CMD_DISC, then EOF
            pass
    except (EOFError, OSError):
        pass
    finally:
        c.close()


def how_ended(st):
    return f"sig{os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit{os.WEXITSTATUS(st)}"


def finish(how, ru):
    with open(status_path + ".tmp", "w") as f:
        f.write(f"{how} {ru.ru_utime + ru.ru_stime:.6f} {time.time():.3f}\n")
    os.rename(status_path + ".tmp", status_path)


for _ in range(800):  # up to 20 s for the server to listen
    if os.path.exists(server_sock):
        break
    done, st, ru = os.wait4(pid, os.WNOHANG)
    if done:
        finish("nostart-" + how_ended(st), ru)
        sys.exit(1)
    time.sleep(0.025)
else:
    os.kill(pid, 9)
    _, st, ru = os.wait4(pid, 0)
    finish("nostart-timeout", ru)
    sys.exit(1)
tmp = sock_path + ".standin"
if os.path.exists(tmp):
    os.unlink(tmp)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(tmp)
listener.listen(1)
os.rename(tmp, sock_path)
threading.Thread(target=stand_in, args=(listener,), daemon=True).start()
_, st, ru = os.wait4(pid, 0)
finish(how_ended(st), ru)
EOF

# ---------------------------------------------------------------- images

SHM=$(mktemp -d /dev/shm/ioplane-qcow2-bench-XXXXXX)
DATA=$SHM/data.raw          # 1 GiB of random data: the raw server's file
FULL=$SHM/full.qcow2        # the same data as qcow2, every cluster allocated
BASE=$FULL                  # the backed rows' backing file (ALLOC_SIZE)
MID=$SHM/chain-mid.qcow2
TOP=$SHM/chain-top.qcow2
RUN_QCOW2=$SHM/run.qcow2    # the alloc rows' fresh image
RUN_RAW=$SHM/run.raw        # raw's preallocated file for the alloc rows
[ "$ALLOC_GIB" = 1 ] || BASE=$SHM/base.qcow2

any_row() {  # any_row IMAGE: whether a row on that image is in the matrix
    local r
    for r in "${MATRIX_ROWS[@]}"; do [ "$(row_image "$r")" = "$1" ] && return 0; done
    return 1
}
need_gib=$((1 + 1))  # data + full
any_row backed && [ "$ALLOC_GIB" != 1 ] && need_gib=$((need_gib + ALLOC_GIB))
any_row chain && need_gib=$((need_gib + 1))
{ any_row empty || any_row backed; } && need_gib=$((need_gib + ALLOC_GIB))
avail_gib=$(df -k --output=avail /dev/shm | tail -1 | awk '{printf "%d", $1 / 1048576}')
mem_gib=$(awk '/MemAvailable/ {printf "%d", $2 / 1048576}' /proc/meminfo)
if [ "$need_gib" -gt "$avail_gib" ] || [ $((need_gib + 2)) -gt "$mem_gib" ]; then
    echo "the images need ~${need_gib} GiB of tmpfs (and 2 GiB of memory besides); /dev/shm has ${avail_gib} GiB," \
        "${mem_gib} GiB of memory is available: try a smaller --alloc-gib" >&2
    exit 1
fi

qimg() { qemu-img "$@" >>"$OUT/logs/images.log" 2>&1; }
allocated() {  # allocated IMG: "N/M" clusters allocated in IMG itself
    qemu-img check "$1" 2>/dev/null | sed -n 's/^\([0-9]*\/[0-9]*\) = .*allocated.*/\1/p'
}
echo "images on $SHM (~${need_gib} GiB)"
head -c "$SIZE" /dev/urandom >"$DATA"
qimg convert -f raw -O qcow2 -o cluster_size=$CLUSTER "$DATA" "$FULL"
if [ "$BASE" != "$FULL" ] && any_row backed; then
    # ALLOC_GIB copies of the random data, end to end (qemu-img convert
    # concatenates its sources).
    srcs=()
    for i in $(seq "$ALLOC_GIB"); do srcs+=("$DATA"); done
    qimg convert -f raw -O qcow2 -o cluster_size=$CLUSTER "${srcs[@]}" "$BASE"
fi
if any_row chain; then
    # mid and top: each rewrites a third of the clusters, disjoint, at random.
    "$PY" - "$SIZE" "$CLUSTER" "$WORK/mid.cmds" "$WORK/top.cmds" <<'EOF'
import random, sys
size, cluster, mid, top = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
n = size // cluster
c = list(range(n))
random.Random(1).shuffle(c)
for path, part, pat in ((mid, c[: n // 3], 0x4D), (top, c[n // 3: 2 * n // 3], 0x54)):
    with open(path, "w") as f:
        for i in sorted(part):
            f.write(f"write -P {pat} {i * cluster} {cluster}\n")
EOF
    qimg create -f qcow2 -o cluster_size=$CLUSTER -b "$FULL" -F qcow2 "$MID"
    qemu-io -f qcow2 "$MID" <"$WORK/mid.cmds" >"$WORK/qemu-io.log" 2>&1
    qimg create -f qcow2 -o cluster_size=$CLUSTER -b "$MID" -F qcow2 "$TOP"
    qemu-io -f qcow2 "$TOP" <"$WORK/top.cmds" >>"$WORK/qemu-io.log" 2>&1
    ! grep -qi -E 'error|failed' "$WORK/qemu-io.log" || { echo "qemu-io failed writing the chain:" >&2; grep -i -m3 -E 'error|failed' "$WORK/qemu-io.log" >&2; exit 1; }
fi
# The alloc rows' writes: every cluster once, in a random order (fio
# replays the log at the job's iodepth; "nbd" is the nbd engine's file).
if any_row empty || any_row backed; then
    for bs in 4k 64k; do
        "$PY" - "$ALLOC_SIZE" "$CLUSTER" "$bs" "$WORK/alloc-$bs.iolog" <<'EOF'
import random, sys
size, cluster, bs, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
length = int(bs[:-1]) * 1024
c = list(range(size // cluster))
random.Random(2).shuffle(c)
with open(path, "w") as f:
    f.write("fio version 2 iolog\nnbd add\nnbd open\n")
    f.writelines(f"nbd write {i * cluster} {length}\n" for i in c)
    f.write("nbd close\n")
EOF
    done
fi
{
    echo "data.raw: $SIZE bytes of random data (the raw server's file for the rows on existing data)"
    echo "full.qcow2: qemu-img convert of data.raw, $CLUSTER-byte clusters: $(allocated "$FULL") clusters allocated"
    if any_row backed; then
        echo "backing file of the alloc*-backed rows: $(basename "$BASE"), $ALLOC_SIZE bytes: $(allocated "$BASE") clusters allocated"
    fi
    if any_row chain; then
        echo "chain: full.qcow2 <- chain-mid.qcow2 ($(allocated "$MID") clusters) <- chain-top.qcow2 ($(allocated "$TOP") clusters)"
    fi
    if any_row empty || any_row backed; then
        echo "alloc rows: a fresh $ALLOC_SIZE-byte image per run, $((ALLOC_SIZE / CLUSTER)) writes (one per cluster, random order); raw: a fresh fallocated raw file of that size"
    fi
} | tee "$OUT/images.txt"

# ---------------------------------------------------------------- servers

SPID=   # the running server
HPID=   # its helper
SOCK=$WORK/nbd.sock      # fio's URI
SRV_SOCK=$WORK/srv.sock  # where the server listens
STATUS=$WORK/status
URI="nbd+unix:///disk?socket=$SOCK"
RUN_IMG='' RUN_SIZE=''

# prepare ROW SERVER: sets RUN_IMG and RUN_SIZE, making the run's fresh image.
prepare() {
    local image
    image=$(row_image "$1")
    rm -f "$RUN_QCOW2" "$RUN_RAW"
    case $2:$image in
    raw:full) RUN_IMG=$DATA RUN_SIZE=$SIZE ;;
    raw:empty) fallocate -l "$ALLOC_SIZE" "$RUN_RAW"; RUN_IMG=$RUN_RAW RUN_SIZE=$ALLOC_SIZE ;;
    *:full) RUN_IMG=$FULL RUN_SIZE=$SIZE ;;
    *:empty) qimg create -f qcow2 -o cluster_size=$CLUSTER "$RUN_QCOW2" "$ALLOC_SIZE"; RUN_IMG=$RUN_QCOW2 RUN_SIZE=$ALLOC_SIZE ;;
    *:backed) qimg create -f qcow2 -o cluster_size=$CLUSTER -b "$BASE" -F qcow2 "$RUN_QCOW2"; RUN_IMG=$RUN_QCOW2 RUN_SIZE=$ALLOC_SIZE ;;
    *:chain) RUN_IMG=$TOP RUN_SIZE=$SIZE ;;
    *) echo "no image for $1 on $2" >&2; exit 1 ;;
    esac
}

# start_server SERVER IMG SIZE LOG [EXPORT]: EXPORT iothread (default) or main.
start_server() {
    local server=$1 img=$2 size=$3 log=$4 export=${5:-iothread} bin=$DAEMON driver=qcow2
    local cmd=()
    rm -f "$SOCK" "$SRV_SOCK" "$STATUS" "$STATUS.pid"
    [ "$server" != qsd ] || bin=qemu-storage-daemon
    [ "$server" != raw ] || driver=raw
    cmd=("$bin")
    [ "$export" = main ] || cmd+=(--object "iothread,id=io0,poll-max-ns=$POLL_NS")
    cmd+=(--blockdev "driver=$driver,node-name=disk,file.driver=file,file.filename=$img"
        --nbd-server "addr.type=unix,addr.path=$SRV_SOCK")
    if [ "$export" = main ]; then
        cmd+=(--export "type=nbd,id=e0,node-name=disk,writable=on")
    else
        cmd+=(--export "type=nbd,id=e0,node-name=disk,writable=on,iothread=io0")
    fi
    echo "${cmd[*]}" >"$log"
    (cd "$WORK" && exec "$PY" "$WORK/helper.py" "$SOCK" "$SRV_SOCK" "$size" "$STATUS" -- "${cmd[@]}") >>"$log" 2>&1 &
    HPID=$!
    PIDS+=("$HPID")
    SPID=
    local i
    for i in $(seq 400); do
        [ -n "$SPID" ] || { [ -s "$STATUS.pid" ] && SPID=$(<"$STATUS.pid") && PIDS+=("$SPID"); }
        [ -S "$SOCK" ] && [ -n "$SPID" ] && return 0
        if [ -s "$STATUS" ] || ! kill -0 "$HPID" 2>/dev/null; then
            echo "  $server did not start ($(cat "$STATUS" 2>/dev/null)):" >&2
            tail -3 "$log" >&2
            wait "$HPID" 2>/dev/null || true
            forget_pid "$HPID"
            [ -z "$SPID" ] || forget_pid "$SPID"
            [ ! -s "$STATUS" ] || read -r END_HOW END_CPU _ <"$STATUS"
            SPID='' HPID=''
            return 1
        fi
        sleep 0.05
    done
    echo "  $server did not start in 20 s" >&2
    stop_run
    return 1
}

# stop_run: SIGTERM to the server (if still running), up to 5 s, then
# SIGKILL; sets END_HOW (exit0, sig6, ...) and END_CPU (its whole CPU time, s).
END_HOW='' END_CPU=''
stop_run() {
    local i
    END_HOW=none END_CPU=-1
    [ -n "$HPID" ] || return 0
    [ -z "$SPID" ] || kill -TERM "$SPID" 2>/dev/null || true
    for i in $(seq 100); do
        [ -s "$STATUS" ] && break
        sleep 0.05
    done
    [ -s "$STATUS" ] || { [ -z "$SPID" ] || kill -KILL "$SPID" 2>/dev/null || true; }
    wait "$HPID" 2>/dev/null || true
    forget_pid "$HPID"
    [ -z "$SPID" ] || forget_pid "$SPID"
    [ ! -s "$STATUS" ] || read -r END_HOW END_CPU _ <"$STATUS"
    SPID='' HPID=''
}

# fio_args ROW JSON RUNTIME RAMP: sets FIO_ARGS. The nbd engine has no
# direct/buffered I/O: it sends each I/O as one NBD request.
FIO_ARGS=()
fio_args() {
    local name image rw bs qd
    IFS=: read -r name image rw bs qd <<<"${ROW[$1]}"
    FIO_ARGS=(--name="$name" --ioengine=nbd --uri="$URI" --bs="$bs" --iodepth="$qd" --output-format=json --output="$2")
    case $image in
    empty | backed) FIO_ARGS+=(--read_iolog="$WORK/alloc-$bs.iolog" --runtime="$3") ;;
    *) FIO_ARGS+=(--rw="$rw" --norandommap --time_based --runtime="$3" --ramp_time="$4") ;;
    esac
}

# image_check ROW SERVER: after an ioplane run that allocated clusters,
# qemu-img check of the image it left: "clean:N" (N clusters allocated in
# it) or "BAD:..."; "-" when there is nothing to check (qsd, which died
# without flushing its caches, and raw).
image_check() {
    case $(row_image "$1") in empty | backed) ;; *) echo -; return ;; esac
    [ "$2" = ioplane ] || { echo -; return; }
    local j
    j=$(qemu-img check --output=json "$RUN_QCOW2" 2>/dev/null) || true
    "$PY" -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError:
    print("BAD:unreadable"); sys.exit()
bad = {k: d.get(k, 0) for k in ("corruptions", "leaks", "check-errors") if d.get(k, 0)}
n = d.get("allocated-clusters", 0)
print(("BAD:" + ",".join(f"{k}={v}" for k, v in bad.items())) if bad else f"clean:{n}")' "$j"
}

# attempt ROW SERVER REP TAG: one fio run against a fresh server (and, for
# the alloc rows, a fresh image); leaves its runs.tsv line in ATTEMPT_LINE
# and the other processes' load in ATTEMPT_OTHER (CPUs). RUN_RUNTIME is the
# fio runtime (the preflight's runs are shorter).
ATTEMPT_LINE='' ATTEMPT_OTHER=''
RUN_RUNTIME=$RUNTIME
attempt() {
    local row=$1 server=$2 rep=$3 tag=$4 export=iothread
    local json=$OUT/fio/$tag.json log=$OUT/logs/$tag.server.log c0=-1 c1=-1 src=proc m0 m1 t0 t1 rc=0 ramp=$RAMP
    local pass_ios=-  # the alloc rows: the writes of a whole pass
    [ "$server" != qsd ] || export=$QSD_EXPORT
    case $(row_image "$row") in empty | backed) ramp=0 pass_ios=$((ALLOC_SIZE / CLUSTER)) ;; esac
    rm -f "$json"
    END_HOW=none END_CPU=-1
    prepare "$row" "$server"
    m0=$(machine_ticks); m1=$m0; t0=$(date +%s.%N); t1=$t0
    if start_server "$server" "$RUN_IMG" "$RUN_SIZE" "$log" "$export"; then
        fio_args "$row" "$json" "$RUN_RUNTIME" "$ramp"
        fio "${FIO_ARGS[@]}" >"$OUT/logs/$tag.fio.log" 2>&1 &
        local fpid=$!
        PIDS+=("$fpid")
        sleep "$ramp"  # fio's measured window starts after its ramp
        c0=$(proc_ticks "$SPID" 2>/dev/null) || c0=-1
        m0=$(machine_ticks); t0=$(date +%s.%N)
        wait "$fpid" || rc=$?
        forget_pid "$fpid"
        # The server's CPU time at the end of the window: from /proc, or,
        # when it died at fio's disconnect (qsd in an IOThread) and is gone,
        # its whole CPU time from wait4() (stop_run).
        c1=$(proc_ticks "$SPID" 2>/dev/null) || c1=-1
        m1=$(machine_ticks); t1=$(date +%s.%N)
        stop_run
        if [ "$c1" = -1 ] && [ "$END_CPU" != -1 ]; then
            c1=$(awk -v s="$END_CPU" -v hz="$HZ" 'BEGIN {printf "%.2f", s * hz}')
            src='exit'
        fi
    else
        rc=98
        [ "$END_HOW" != none ] || END_HOW=nostart
    fi
    [ "$c0" != -1 ] && [ "$c1" != -1 ] || { [ "$rc" != 0 ] || rc=99; }
    local check
    check=$(image_check "$row" "$server")
    rm -f "$RUN_QCOW2" "$RUN_RAW"
    local mb0 mt0 mb1 mt1
    read -r mb0 mt0 <<<"$m0"
    read -r mb1 mt1 <<<"$m1"
    # row server rep rc server_ticks machine_busy machine_total window_s hz
    # json server_end cpu_end_source export image_check server_cpu_total_s pass_ios
    ATTEMPT_LINE=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$row" "$server" "$rep" "$rc" \
        "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print (a < 0 || b < 0) ? -1 : b - a}')" \
        $((mb1 - mb0)) $((mt1 - mt0)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" \
        "$HZ" "$json" "$END_HOW" "$src" "$export" "$check" "$END_CPU" "$pass_ios")
    local line
    line=$(QCOW2_BENCH_DISTURBED=$DISTURBED "$PY" "$ROOT/bench/qcow2_report.py" --one <(echo "$ATTEMPT_LINE")) ||
        line="(unparsed) other=9"
    ATTEMPT_OTHER=${line##*other=}
    ATTEMPT_OTHER=${ATTEMPT_OTHER%% *}
    echo "  $tag: $line"
    [ "$rc" = 0 ] || echo "  WARNING: $tag: exit status $rc (see $OUT/logs/$tag.*)"
}

# run_one ROW SERVER REP: a measurement, retried while disturbed
# (keep_least_disturbed in lib.sh).
RUN_NO=0
run_one() {
    local row=$1 server=$2 rep=$3
    RUN_NO=$((RUN_NO + 1))
    echo "[$RUN_NO/$NRUNS, $((SECONDS / 60))m$((SECONDS % 60))s]"
    keep_least_disturbed "$row.$server.$rep" "$OUT/runs.tsv" "$OUT/runs-discarded.tsv" \
        attempt "$row" "$server" "$rep"
}

# ---------------------------------------------------------------- preflight

# A 1 s run of each server on full.qcow2 (rr4k-qd1): ioplane must serve
# qcow2 (and raw); qsd with its export in an IOThread must give a complete
# measurement, or it runs in its main loop.
PRE=$OUT/preflight.tsv
: >"$PRE"
RUN_RUNTIME=1
pre_ok() {  # pre_ok SERVER: run it once; true when the run is complete
    attempt rr4k-qd1 "$1" 0 "preflight.$1" >/dev/null
    echo "$ATTEMPT_LINE" >>"$PRE"
    "$PY" "$ROOT/bench/qcow2_report.py" --ok <(echo "$ATTEMPT_LINE")
}
QSD_NOTE=
for s in "${SERVER_LIST[@]}"; do
    if pre_ok "$s"; then
        echo "preflight: $s: $(cut -f11,12 <<<"$ATTEMPT_LINE" | tr '\t' ' '), ok"
        continue
    fi
    case $s in
    ioplane | raw)
        echo "preflight: $s ($DAEMON_SRC) failed to serve $([ "$s" = raw ] && echo raw || echo qcow2):" \
            "see $OUT/logs/preflight.$s.*" >&2
        exit 1
        ;;
    qsd)
        if [ "$QSD_EXPORT" = iothread ]; then
            QSD_NOTE="qsd's export ran in its main loop: a short run with the export in an IOThread did not complete ($(cut -f11 <<<"$ATTEMPT_LINE"), logs/preflight.qsd.*)"
            echo "preflight: $QSD_NOTE"
            QSD_EXPORT=main
            pre_ok qsd || { echo "preflight: qsd failed in its main loop too: running without it"; drop_server qsd; }
        else
            echo "preflight: qsd failed: running without it"
            drop_server qsd
        fi
        ;;
    esac
done
# What qsd's abort and exit add when its CPU time is read at its death:
# qsd with the export in its main loop (no abort at the disconnect), 1 s of
# rr4k-qd16, then its CPU time from /proc, SIGABRT, and its whole CPU time.
ABORT_COST_MS=
if [ "$QSD_EXPORT" = iothread ] && [[ " ${SERVER_LIST[*]} " == *" qsd "* ]]; then
    prepare rr4k-qd16 qsd
    if start_server qsd "$RUN_IMG" "$RUN_SIZE" "$OUT/logs/preflight.qsd-abort.server.log" main; then
        fio_args rr4k-qd16 "$OUT/fio/preflight.qsd-abort.json" 1 0
        fio "${FIO_ARGS[@]}" >/dev/null 2>&1 || true
        sleep 0.2
        a=$(proc_ticks "$SPID" 2>/dev/null) || a=
        kill -ABRT "$SPID" 2>/dev/null || true
        stop_run
        [ -z "$a" ] || [ "$END_CPU" = -1 ] ||
            ABORT_COST_MS=$(awk -v a="$a" -v e="$END_CPU" -v hz="$HZ" 'BEGIN {printf "%.0f", (e - a / hz) * 1000}')
        echo "preflight: qsd's abort and exit cost ${ABORT_COST_MS:-?} ms of CPU ($END_HOW; /proc ticks are $((1000 / HZ)) ms)"
    fi
fi
RUN_RUNTIME=$RUNTIME

# ---------------------------------------------------------------- the matrix

npairs=0 est=0
for r in "${MATRIX_ROWS[@]}"; do for s in "${SERVER_LIST[@]}"; do
    included "$r" "$s" || continue
    npairs=$((npairs + 1))
    case $(row_image "$r") in
    empty | backed) est=$((est + (RUNTIME < 5 ? RUNTIME : 5) * ALLOC_GIB / 4 + 3)) ;;
    *) est=$((est + RUNTIME + RAMP + 2)) ;;
    esac
done; done
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: bench/qcow2_bench.sh $ORIG_ARGS"
    echo "disturbed: other processes above $DISTURBED CPUs; retries $RETRIES, budget ${RETRY_BUDGET}s"
    echo "runtime: $RUNTIME s (alloc rows: at most), ramp: $RAMP s (alloc rows: 0), reps: $REPS, alloc images: $ALLOC_GIB GiB"
    echo "iothreads: poll-max-ns=$POLL_NS for every server; qsd export: $QSD_EXPORT"
    [ -z "$QSD_NOTE" ] || echo "note: $QSD_NOTE"
    [ -z "$ABORT_COST_MS" ] || echo "qsd abort+exit CPU: ${ABORT_COST_MS} ms (preflight; counted in a run's window when qsd died before /proc was read)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "fio: $(fio --version)"
    echo "qsd: $(qemu-storage-daemon --version | head -1) ($(dpkg-query -W -f '${Version}' qemu-system-common 2>/dev/null))"
    echo "qemu-img: $(qemu-img --version | head -1)"
    echo "ioplane: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)'), ${DAEMON_SRC#"$ROOT"/} (${DAEMON_BUILD:-unknown} build, $(date -u -r "$DAEMON_SRC" +%Y-%m-%dT%H:%M:%SZ)), sha256 $(sha256sum "$DAEMON" | cut -c1-16)"
    [ -z "$DAEMON_STALE" ] || echo "WARNING: the daemon binary is older than the sources (${DAEMON_STALE#"$ROOT"/}, ...)"
} >"$OUT/machine.txt"
NRUNS=$((npairs * REPS))
echo "qcow2 benchmark: $npairs pairs x $REPS reps (~$((est * REPS / 60 + 1)) min without retries); results in $OUT"
: >"$OUT/runs.tsv"
: >"$OUT/runs-discarded.tsv"
for rep in $(seq "$REPS"); do
    for r in "${MATRIX_ROWS[@]}"; do
        # Rotate the server order each repetition so no server always runs first.
        n=${#SERVER_LIST[@]}
        for i in $(seq 0 $((n - 1))); do
            s=${SERVER_LIST[$(((i + rep - 1) % n))]}
            included "$r" "$s" || continue
            run_one "$r" "$s" "$rep"
        done
    done
done

# full.qcow2 after every server wrote into it (the rw rows write in place).
echo "full.qcow2 after the runs: $(qemu-img check "$FULL" 2>&1 | head -1)" | tee -a "$OUT/images.txt"

# ---------------------------------------------------------------- report

QCOW2_BENCH_DISTURBED=$DISTURBED "$PY" "$ROOT/bench/qcow2_report.py" "$OUT" | tee "$OUT/report.md"
echo "results: $OUT"
