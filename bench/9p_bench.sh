#!/usr/bin/env bash
# 9P2000.L export benchmark: ioplane-storage-daemon's 9P export and diod,
# side by side on the same tmpfs directory, driven by ioplane-9pload
# (tools/9pload) over TCP on 127.0.0.1. Every (server, workload,
# concurrency) triple runs REPS times, the servers taking turns, each run
# against a freshly started server. Per run, ioplane-9pload reports ops/s,
# latency and the server's CPU time: utime+stime of /proc/PID/stat (all
# threads), sampled at the start and end of the measured window (the file
# set-up before it is not counted). The report gives medians per server and
# workload: ops/s, server CPU time per op, and the ratio ioplane/diod of ops
# per server CPU-second (above 1: ioplane does more work per CPU-second).
#
#   bench/9p_bench.sh                 # full run, ~22 minutes on 2 cores
#   bench/9p_bench.sh --quick         # 2 s runs, 1 repetition: checks the script
#
# Options:
#   --duration S          measured seconds per run (default 5; --quick: 2)
#   --warmup S            seconds run before measuring (default 1; --quick: 0.5)
#   --reps N              repetitions (default 3; --quick: 1)
#   --workloads LIST      comma-separated (default all: getattr,read4k,read1m,
#                         write4k,write1m,create-unlink,readdir,open)
#   --concurrency LIST    comma-separated outstanding requests (default 1,16)
#   --servers LIST        ioplane,diod,ref (default all three). ref is
#                         bench/9p_reference_responder: canned replies, no file
#                         system, a thread per connection doing one read() and
#                         one write() per batch: the machine's floor for the
#                         same client. It skips readdir (it lists nothing).
#   --msize BYTES         msize proposed to both servers (default 65536: diod
#                         1.0.24 caps msize there, so with the default both
#                         servers see the same messages; a 1 MiB op is then 17
#                         Treads or Twrites)
#   --file-size BYTES     the file of read*/write* (default 64M)
#   --entries N           files in the readdir directory (default 1000)
#   --diod-threads N      diod's worker threads (default: diod's own, 16)
#   --daemon PATH         ioplane-storage-daemon (default build/release/daemon/...)
#   --load PATH           ioplane-9pload (default build/release/tools/9pload/...)
#   --ref PATH            9p_reference_responder (default build/release/bench/...)
#   --dir DIR             the directory both servers export (default: a new one
#                         under /dev/shm, or a tmpfs mounted for the run if
#                         /dev/shm is not tmpfs); removed afterwards
#   --out DIR             where results go (default /tmp/9p-bench-YYYYmmdd-HHMMSS)
#   --no-build            do not run `make build` first
#   --retries N           run a measurement again, up to N times, when other
#                         processes used more than --disturbed CPUs (default 1)
#   --disturbed CPUS      that threshold (default 0.25)
#   --retry-budget S      at most S seconds in all spent on retries (default 120)
#
# If ioplane's 9P export is not available (the daemon rejects the option,
# exits, or does not answer a first Tgetattr), the run goes on with diod
# alone and says so. A server that fails during a run (crash, Rlerror) has
# that run counted as failed, and the report lists the failures.
#
# Output in DIR: runs.jsonl (one line per kept run: the tool's JSON plus
# server, rep, exit status, other processes' CPU use), runs-discarded.jsonl,
# logs/, machine.txt, report.md, summary.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORIG_ARGS="$*"
DURATION=5
WARMUP=1
REPS=3
QUICK=0
BUILD=1
WORKLOADS=getattr,read4k,read1m,write4k,write1m,create-unlink,readdir,open
CONCURRENCY=1,16
SERVERS=ioplane,diod,ref
MSIZE=65536
FILE_SIZE=64M
ENTRIES=1000
DIOD_THREADS=
DAEMON=$ROOT/build/release/daemon/ioplane-storage-daemon
LOAD=$ROOT/build/release/tools/9pload/ioplane-9pload
REF=$ROOT/build/release/bench/9p_reference_responder
EXPORT_DIR=
OUT=
RETRIES=1
DISTURBED=0.25
RETRY_BUDGET=120
QUIET_WAIT=20
PY=/usr/bin/python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
duration_set=0 warmup_set=0 reps_set=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --duration) DURATION=$2; duration_set=1; shift ;;
    --warmup) WARMUP=$2; warmup_set=1; shift ;;
    --reps) REPS=$2; reps_set=1; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --concurrency) CONCURRENCY=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --msize) MSIZE=$2; shift ;;
    --file-size) FILE_SIZE=$2; shift ;;
    --entries) ENTRIES=$2; shift ;;
    --diod-threads) DIOD_THREADS=$2; shift ;;
    --daemon) DAEMON=$2; shift ;;
    --load) LOAD=$2; shift ;;
    --ref) REF=$2; shift ;;
    --dir) EXPORT_DIR=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --retries) RETRIES=$2; shift ;;
    --disturbed) DISTURBED=$2; shift ;;
    --retry-budget) RETRY_BUDGET=$2; shift ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [ "$duration_set" = 1 ] || DURATION=2
    [ "$warmup_set" = 1 ] || WARMUP=0.5
    [ "$reps_set" = 1 ] || REPS=1
fi
IFS=, read -r -a WL_LIST <<<"$WORKLOADS"
IFS=, read -r -a QD_LIST <<<"$CONCURRENCY"
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for w in "${WL_LIST[@]}"; do
    case $w in getattr | read4k | read1m | write4k | write1m | create-unlink | readdir | open) ;;
    *) echo "unknown workload $w" >&2; exit 2 ;; esac
done
for q in "${QD_LIST[@]}"; do [[ $q =~ ^[1-9][0-9]*$ ]] || { echo "bad concurrency $q" >&2; exit 2; }; done
for s in "${SERVER_LIST[@]}"; do
    case $s in ioplane | diod | ref) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done

# ---------------------------------------------------------------- tools

if ! command -v diod >/dev/null && [ ! -x /usr/sbin/diod ]; then
    echo "installing: diod"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq diod >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq diod >/dev/null
    fi
fi
DIOD=$(command -v diod || echo /usr/sbin/diod)
[ "$(id -u)" = 0 ] || { echo "diod serves attaches as root here: run as root" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    make -C "$ROOT" build >/dev/null
fi
[ -x "$LOAD" ] || { echo "missing $LOAD (make build, or --load PATH)" >&2; exit 1; }

[ -n "$OUT" ] || OUT=/tmp/9p-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/9p-bench-work-XXXXXX)
# Private copies: a rebuild during the run must not change the binaries.
mkdir -p "$WORK/bin"
cp "$LOAD" "$WORK/bin/"
LOAD=$WORK/bin/$(basename "$LOAD")
if [ -x "$DAEMON" ]; then
    cp "$DAEMON" "$WORK/bin/"
    DAEMON=$WORK/bin/$(basename "$DAEMON")
fi
if [ -x "$REF" ]; then
    cp "$REF" "$WORK/bin/"
    REF=$WORK/bin/$(basename "$REF")
fi
HZ=$(getconf CLK_TCK)

# The export: tmpfs, so that the servers' CPU, not a disk, is measured.
MOUNTED=
MADE_DIR=
if [ -z "$EXPORT_DIR" ]; then
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
        EXPORT_DIR=$(mktemp -d /dev/shm/9p-bench-XXXXXX)
    else
        EXPORT_DIR=$WORK/export
        mkdir -p "$EXPORT_DIR"
        mount -t tmpfs -o size=1g tmpfs "$EXPORT_DIR"
        MOUNTED=$EXPORT_DIR
    fi
    MADE_DIR=$EXPORT_DIR
fi
EXPORT_DIR=$(cd "$EXPORT_DIR" && pwd)

# ---------------------------------------------------------------- processes

PIDS=()  # every background process this script started
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [ -z "$MOUNTED" ] || umount "$MOUNTED" 2>/dev/null || true
    [ -z "$MADE_DIR" ] || rm -rf "$MADE_DIR"
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"  # process, CPU and retry helpers
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SPID= PORT=  # the running server and its port
START_ERROR=
# start_server SERVER LOG: 0 when it listens; else 1 with START_ERROR set.
start_server() {
    local server=$1 log=$2 i
    PORT=$(free_port)
    case $server in
    diod)
        local threads=()
        [ -z "$DIOD_THREADS" ] || threads=(-t "$DIOD_THREADS")
        "$DIOD" -f -n -c /dev/null "${threads[@]}" -l "127.0.0.1:$PORT" -e "$EXPORT_DIR" >"$log" 2>&1 &
        ;;
    ref)
        "$REF" "$PORT" >"$log" 2>&1 &
        ;;
    ioplane)
        "$DAEMON" --export "type=9p,id=s0,path=$EXPORT_DIR,addr.type=inet,addr.host=127.0.0.1,addr.port=$PORT" \
            >"$log" 2>&1 &
        ;;
    esac
    SPID=$!
    PIDS+=("$SPID")
    for i in $(seq 200); do
        port_open "$PORT" && return 0
        if ! kill -0 "$SPID" 2>/dev/null; then
            wait "$SPID" 2>/dev/null || true
            forget_pid "$SPID"
            START_ERROR="$server exited during startup: $(grep -v '^ *$' "$log" | tail -1)"
            SPID=
            return 1
        fi
        sleep 0.05
    done
    START_ERROR="$server did not listen on 127.0.0.1:$PORT within 10 s"
    stop_server
    return 1
}


# load_args SERVER WORKLOAD QD: the tool's command line (LOAD_ARGS).
LOAD_ARGS=()
load_args() {
    LOAD_ARGS=(--tcp "127.0.0.1:$PORT" --aname "$EXPORT_DIR" --workload "$2" --concurrency "$3"
        --duration "$DURATION" --warmup "$WARMUP" --msize "$MSIZE" --file-size "$FILE_SIZE"
        --entries "$ENTRIES" --server-pid "$SPID" --timeout 20 --quiet)
}

# ---------------------------------------------------------------- is ioplane's 9P export there?

IOPLANE_NOTE=
want_ioplane=0
for s in "${SERVER_LIST[@]}"; do [ "$s" = ioplane ] && want_ioplane=1; done
if [ "$want_ioplane" = 1 ]; then
    if [ ! -x "$DAEMON" ]; then
        IOPLANE_NOTE="no ioplane-storage-daemon at $DAEMON"
    elif ! start_server ioplane "$OUT/logs/probe.ioplane.log"; then
        IOPLANE_NOTE=$START_ERROR
    else
        load_args ioplane getattr 1
        if ! "$LOAD" "${LOAD_ARGS[@]}" --duration 0.3 --warmup 0 >/dev/null 2>"$OUT/logs/probe.ioplane.9pload.log"; then
            IOPLANE_NOTE="its 9P export did not complete a Tgetattr run: $(tail -1 "$OUT/logs/probe.ioplane.9pload.log")"
            kill -0 "$SPID" 2>/dev/null || IOPLANE_NOTE="$IOPLANE_NOTE; the daemon died: $(grep -v '^ *$' "$OUT/logs/probe.ioplane.log" | tail -1)"
        fi
        stop_server
    fi
    if [ -n "$IOPLANE_NOTE" ]; then
        echo "ioplane's 9P export is not available ($IOPLANE_NOTE): running without it"
        drop_server ioplane
    fi
fi
drop_ref_if_missing
[ ${#SERVER_LIST[@]} -gt 0 ] || { echo "no server to run" >&2; exit 1; }

# ---------------------------------------------------------------- runs

# attempt SERVER WORKLOAD QD REP TAG: one tool run against a fresh server;
# ATTEMPT_LINE is its runs.jsonl line, ATTEMPT_OTHER the CPUs other
# processes used meanwhile.
ATTEMPT_LINE='' ATTEMPT_OTHER=0
attempt() {
    local server=$1 wl=$2 qd=$3 rep=$4 tag=$5 rc=0 json='null' m0 m1 s0 s1 c0 c1 t0 t1 err=''
    local log=$OUT/logs/$tag.server.log
    ATTEMPT_OTHER=0
    if ! start_server "$server" "$log"; then
        err=$START_ERROR
        rc=98
    else
        load_args "$server" "$wl" "$qd"
        children_ticks; c0=$CT
        m0=$(machine_busy); s0=$(proc_ticks "$SPID" || echo 0); t0=$(date +%s.%N)
        "$LOAD" "${LOAD_ARGS[@]}" >"$OUT/logs/$tag.json" 2>"$OUT/logs/$tag.err" || rc=$?
        m1=$(machine_busy); s1=$(proc_ticks "$SPID" || echo 0); t1=$(date +%s.%N)
        children_ticks; c1=$CT
        kill -0 "$SPID" 2>/dev/null || { rc=99; err="the server died: $(grep -v '^ *$' "$log" | tail -1)"; }
        stop_server
        [ "$rc" = 0 ] || [ -n "$err" ] || err=$(tail -1 "$OUT/logs/$tag.err")
        [ "$rc" != 0 ] || json=$(head -1 "$OUT/logs/$tag.json")
        # Other processes: what the machine did beyond the server and the tool.
        ATTEMPT_OTHER=$(awk -v m=$((m1 - m0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v hz="$HZ" -v a="$t0" -v b="$t1" \
            'BEGIN { o = (m - s - c) / hz / (b - a); if (o < 0) o = 0; printf "%.2f", o }')
    fi
    ATTEMPT_LINE=$("$PY" -c 'import json, sys
server, wl, qd, rep, rc, other, err, res = sys.argv[1:]
print(json.dumps({"server": server, "workload": wl, "concurrency": int(qd), "rep": int(rep), "rc": int(rc),
                  "other_cpus": float(other), "error": err, "result": json.loads(res)}))' \
        "$server" "$wl" "$qd" "$rep" "$rc" "$ATTEMPT_OTHER" "$err" "$json")
    if [ "$rc" = 0 ]; then
        "$PY" -c 'import json, sys
r = json.loads(sys.argv[1])["result"]
cpu = r["server_cpu_us_per_op"]
print("  %s: %.0f ops/s, p50 %.0f us, p99 %.0f us, server CPU %s us/op, %.2f msgs/op, other processes %s CPUs" % (
    sys.argv[2], r["ops_per_s"], r["lat_p50_us"], r["lat_p99_us"], "?" if cpu is None else "%.1f" % cpu,
    r["msgs_per_op"], sys.argv[3]))' "$ATTEMPT_LINE" "$tag" "$ATTEMPT_OTHER"
    else
        echo "  $tag: FAILED (exit status $rc): $err"
    fi
}

RUN_NO=0
run_one() {
    local server=$1 wl=$2 qd=$3 rep=$4
    RUN_NO=$((RUN_NO + 1))
    echo "[$RUN_NO/$NRUNS, $((SECONDS / 60))m$((SECONDS % 60))s] $server $wl concurrency $qd rep $rep"
    keep_least_disturbed "$server.$wl.qd$qd.$rep" "$OUT/runs.jsonl" "$OUT/runs-discarded.jsonl" \
        attempt "$server" "$wl" "$qd" "$rep"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: bench/9p_bench.sh $ORIG_ARGS"
    echo "duration: $DURATION s, warmup: $WARMUP s, reps: $REPS, msize proposed: $MSIZE, file: $FILE_SIZE, readdir entries: $ENTRIES"
    echo "export: $EXPORT_DIR ($(stat -f -c %T "$EXPORT_DIR"))"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "diod: $(dpkg-query -W -f '${Version}' diod 2>/dev/null), ${DIOD_THREADS:-16 (default)} worker threads"
    if [ -x "$DAEMON" ]; then
        echo "ioplane: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)'), binary sha256 $(sha256sum "$DAEMON" | cut -c1-16)"
    fi
    [ -z "$IOPLANE_NOTE" ] || echo "ioplane 9P export not available: $IOPLANE_NOTE"
} >"$OUT/machine.txt"

# included SERVER WORKLOAD: whether the pair is run. The reference lists
# nothing: its readdir is not the same work.
included() { [ "$1" != ref ] || [ "$2" != readdir ]; }
NRUNS=0
for s in "${SERVER_LIST[@]}"; do
    for wl in "${WL_LIST[@]}"; do
        if included "$s" "$wl"; then NRUNS=$((NRUNS + ${#QD_LIST[@]} * REPS)); fi
    done
done
echo "9P benchmark: ${SERVER_LIST[*]}; $NRUNS runs of ${DURATION}s + ${WARMUP}s warmup (~$((NRUNS * (${DURATION%.*} + 4) / 60 + 1)) min); results in $OUT"
: >"$OUT/runs.jsonl"
: >"$OUT/runs-discarded.jsonl"
for rep in $(seq "$REPS"); do
    for wl in "${WL_LIST[@]}"; do
        for qd in "${QD_LIST[@]}"; do
            # Rotate the server order each repetition so no server always runs first.
            n=${#SERVER_LIST[@]}
            for i in $(seq 0 $((n - 1))); do
                s=${SERVER_LIST[$(((i + rep - 1) % n))]}
                included "$s" "$wl" || continue
                run_one "$s" "$wl" "$qd" "$rep"
            done
        done
    done
done

# ---------------------------------------------------------------- report

"$PY" - "$OUT" "$DISTURBED" "$IOPLANE_NOTE" <<'PYEOF' | tee "$OUT/report.md"
import json, statistics, sys
out, disturbed, ioplane_note = sys.argv[1], float(sys.argv[2]), sys.argv[3]
runs = [json.loads(l) for l in open(out + "/runs.jsonl") if l.strip()]
machine = open(out + "/machine.txt").read()

def median(xs):
    return statistics.median(xs) if xs else None

keys, groups, failures = [], {}, []
for r in runs:
    k = (r["workload"], r["concurrency"])
    if k not in keys:
        keys.append(k)
    if r["rc"] != 0 or not r["result"]:
        failures.append(r)
        continue
    groups.setdefault((r["server"], k), []).append(r)

def stats(server, k):
    rs = groups.get((server, k), [])
    if not rs:
        return None
    res = [r["result"] for r in rs]
    per_cpu = [x["ops"] / x["server_cpu_s"] for x in res if x["server_cpu_s"]]
    cpu_op = [x["server_cpu_us_per_op"] for x in res if x["server_cpu_us_per_op"] is not None]
    return {
        "runs": len(rs),
        "ops_per_s": median([x["ops_per_s"] for x in res]),
        "server_cpu_us_per_op": median(cpu_op),
        "ops_per_server_cpu_s": median(per_cpu),
        "lat_p50_us": median([x["lat_p50_us"] for x in res]),
        "lat_p99_us": median([x["lat_p99_us"] for x in res]),
        "msgs_per_op": median([x["msgs_per_op"] for x in res]),
        "client_cpu_us_per_op": median([x["client_cpu_us_per_op"] for x in res]),
        "max_other_cpus": max(r["other_cpus"] for r in rs),
    }

servers = [s for s in ("diod", "ioplane", "ref") if any(g[0] == s for g in groups)]
def f(v, fmt):
    return "–" if v is None else fmt % v

print("# 9P2000.L benchmark: ioplane vs diod (ref: the machine's floor)\n")
print("```\n" + machine.rstrip() + "\n```\n")
if ioplane_note:
    print("**ioplane's 9P export was not available (%s): diod only.**\n" % ioplane_note)
head = ["workload", "conc"]
for s in servers:
    head += [s + " ops/s", s + " CPU µs/op", s + " p50 µs", s + " p99 µs", s + " msgs/op"]
if "ioplane" in servers and "diod" in servers:
    head.append("ioplane/diod ops per CPU-s")
if "ref" in servers and "diod" in servers:
    head.append("ref/diod ops per CPU-s (the best any server could reach)")
head.append("other CPUs (max)")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
# SERVER's operations per server CPU-second over diod's, or None.
def per_cpu_ratio(st, server):
    a, b = st.get(server), st.get("diod")
    if a and b and a["ops_per_server_cpu_s"] and b["ops_per_server_cpu_s"]:
        return a["ops_per_server_cpu_s"] / b["ops_per_server_cpu_s"]
    return None

summary = []
for k in keys:
    row = [k[0], str(k[1])]
    st = {s: stats(s, k) for s in servers}
    other = 0.0
    for s in servers:
        x = st[s]
        if x is None:
            row += ["–" if s == "ref" else "failed", "", "", "", ""]
            continue
        row += [f(x["ops_per_s"], "%.0f"), f(x["server_cpu_us_per_op"], "%.1f"), f(x["lat_p50_us"], "%.0f"),
                f(x["lat_p99_us"], "%.0f"), f(x["msgs_per_op"], "%.2f")]
        other = max(other, x["max_other_cpus"])
    ratio = per_cpu_ratio(st, "ioplane")
    floor = per_cpu_ratio(st, "ref")
    for server, value in (("ioplane", ratio), ("ref", floor)):
        if server in servers and "diod" in servers:
            row.append(f(value, "%.2f"))
    row.append("%.2f%s" % (other, " (disturbed)" if other > disturbed else ""))
    print("| " + " | ".join(row) + " |")
    summary.append({"workload": k[0], "concurrency": k[1], "servers": st, "ioplane_over_diod_ops_per_cpu_s": ratio,
                    "ref_over_diod_ops_per_cpu_s": floor})
print()
print("Medians over the repetitions. CPU µs/op: the server's utime+stime (all threads) over the measured")
print("window divided by the ops completed in it. ops per CPU-s = ops / server CPU seconds; the ratio")
print("is ioplane's over diod's (above 1: ioplane spends less CPU per op). msgs/op: 9P requests per op")
print("(a 1 MiB op is split at the negotiated msize; create-unlink is 5 where the server lacks Tunlinkat")
print("and the client falls back to Twalk + Tremove, as diod 1.0.24 needs). other CPUs: what other")
print("processes used during the run, beyond server and client (above %.2f: disturbed)." % disturbed)
if "ref" in servers:
    print("ref: bench/9p_reference_responder, canned replies with no file system behind them (one read()")
    print("and one write() per batch, a thread per connection): what the kernel and the client cost. ref/diod")
    print("is the ratio a server that did no work at all would reach; readdir is not run against it.")
if failures:
    print("\n## Failed runs\n")
    for r in failures:
        print("- %s %s concurrency %d rep %d: exit status %d: %s" % (
            r["server"], r["workload"], r["concurrency"], r["rep"], r["rc"], r["error"]))
json.dump({"machine": machine, "ioplane_note": ioplane_note, "rows": summary,
           "failures": len(failures)}, open(out + "/summary.json", "w"), indent=1)
PYEOF
echo "results: $OUT"
