#!/usr/bin/env bash
# vhost-user-blk export benchmark: ioplane-storage-daemon and
# qemu-storage-daemon started with the same command line (an IOThread, a
# vhost-user-blk export in it on a unix socket), driven by ioplane-vublk
# (tools/vublk), a front end that shares memory with the server and drives
# its virtqueues as a VM would, without a VM. Back ends: null-co (1 GiB,
# read-zeroes=on) and a preallocated 1 GiB file on tmpfs. Every (back end,
# rw, iodepth, queues, server) runs REPS times, the servers taking turns,
# each run against a freshly started server. Per run ioplane-vublk reports
# IOPS, latency, its own CPU time and the server's CPU time (utime+stime of
# /proc/PID/stat, all threads) sampled at the edges of the measured window
# (after the ramp). The report gives medians: IOPS, server CPU µs per I/O,
# and the ratio ioplane/qsd of I/Os per server CPU-second (above 1: ioplane
# does more work per CPU-second). With the reference back end (ref) the
# report also gives ref/qsd: the ratio a server that does no work at all
# would reach on this machine with the same front end.
#
#   bench/vublk_bench.sh                  # full run, ~20 minutes on 2 cores
#   bench/vublk_bench.sh --quick          # 2 s runs, 1 repetition: checks the script
#
# Options:
#   --runtime S           measured seconds per run (default 5; --quick: 2)
#   --ramp S              seconds run before measuring (default 1; --quick: 0.5)
#   --reps N              repetitions (default 3; --quick: 1)
#   --backends LIST       null,file (default both)
#   --rw LIST             randread,randwrite (default both; also read, write, randrw)
#   --bs BYTES            request size (default 4k)
#   --iodepth LIST        requests outstanding per queue (default 1,16,128)
#   --queues LIST         virtqueues, one front-end thread each (default 1,2)
#   --wait MODE           the front end's completion wait: event (sleep on the
#                         call eventfd, as a guest driver with interrupts) or
#                         poll (default event)
#   --servers LIST        ioplane,qsd,ref (default ioplane,qsd, plus ref when
#                         its binary exists). ref is bench/vublk_reference_backend:
#                         requests completed on the spot with no back end, a
#                         thread per queue doing one blocking read() of the kick
#                         eventfd and at most one call-eventfd write per batch:
#                         the machine's floor for the same front end and a
#                         server that sleeps between kicks (one that busy-polls
#                         can beat it at low QD). It runs the null back end
#                         only (it has no file back end).
#   --ioplane-iothread-per-queue
#                         give ioplane a second IOThread and the export
#                         iothread.0=io0,iothread.1=io1 (one per queue; qsd 7.2
#                         has no such option and keeps iothread=io0)
#   --daemon PATH         ioplane-storage-daemon (default build/release/daemon/...)
#   --vublk PATH          ioplane-vublk (default build/release/tools/vublk/...)
#   --ref PATH            vublk_reference_backend (default build/release/bench/...)
#   --out DIR             where results go (default /tmp/vublk-bench-YYYYmmdd-HHMMSS)
#   --no-build            do not run `make build` first
#   --retries N           run a measurement again, up to N times, when other
#                         processes used more than --disturbed CPUs (default 1)
#   --disturbed CPUS      that threshold (default 0.25)
#   --quiet-wait S        before such a retry, wait up to S s for quiet (default 20)
#   --retry-budget S      at most S seconds in all spent on retries (default 180)
#
# If ioplane's daemon does not serve vhost-user-blk (it rejects the export,
# exits, or a first short run against it fails), the run goes on without it
# and says so; likewise without ref if --servers names it and its binary is
# missing. A run that fails (server crash, I/O error, protocol error) is
# counted as failed and listed in the report.
#
# Output in DIR: runs.jsonl (one line per kept run: ioplane-vublk's JSON plus
# back end, server, rep, exit status, other processes' CPU use),
# runs-discarded.jsonl, logs/, machine.txt, report.md, summary.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORIG_ARGS="$*"
RUNTIME=5
RAMP=1
REPS=3
QUICK=0
BUILD=1
BACKENDS=null,file
RWS=randread,randwrite
BS=4k
IODEPTHS=1,16,128
QUEUES=1,2
WAIT=event
SERVERS=  # default: ioplane,qsd, and ref if REF exists (decided after the build)
IOTHREAD_PER_QUEUE=0
DAEMON=$ROOT/build/release/daemon/ioplane-storage-daemon
VUBLK=$ROOT/build/release/tools/vublk/ioplane-vublk
REF=$ROOT/build/release/bench/vublk_reference_backend
OUT=
RETRIES=1
DISTURBED=0.25
QUIET_WAIT=20
RETRY_BUDGET=180
SIZE=1073741824
PY=/usr/bin/python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
runtime_set=0 ramp_set=0 reps_set=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --runtime) RUNTIME=$2; runtime_set=1; shift ;;
    --ramp) RAMP=$2; ramp_set=1; shift ;;
    --reps) REPS=$2; reps_set=1; shift ;;
    --backends) BACKENDS=$2; shift ;;
    --rw) RWS=$2; shift ;;
    --bs) BS=$2; shift ;;
    --iodepth) IODEPTHS=$2; shift ;;
    --queues) QUEUES=$2; shift ;;
    --wait) WAIT=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --ioplane-iothread-per-queue) IOTHREAD_PER_QUEUE=1 ;;
    --daemon) DAEMON=$2; shift ;;
    --vublk) VUBLK=$2; shift ;;
    --ref) REF=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --retries) RETRIES=$2; shift ;;
    --disturbed) DISTURBED=$2; shift ;;
    --quiet-wait) QUIET_WAIT=$2; shift ;;
    --retry-budget) RETRY_BUDGET=$2; shift ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [ "$runtime_set" = 1 ] || RUNTIME=2
    [ "$ramp_set" = 1 ] || RAMP=0.5
    [ "$reps_set" = 1 ] || REPS=1
fi
IFS=, read -r -a BACKEND_LIST <<<"$BACKENDS"
IFS=, read -r -a RW_LIST <<<"$RWS"
IFS=, read -r -a QD_LIST <<<"$IODEPTHS"
IFS=, read -r -a NQ_LIST <<<"$QUEUES"
IFS=, read -r -a SERVER_LIST <<<"${SERVERS:-ioplane,qsd}"
for b in "${BACKEND_LIST[@]}"; do case $b in null | file) ;; *) echo "unknown back end $b" >&2; exit 2 ;; esac; done
for r in "${RW_LIST[@]}"; do
    case $r in read | write | randread | randwrite | randrw) ;; *) echo "unknown rw $r" >&2; exit 2 ;; esac
done
for q in "${QD_LIST[@]}" "${NQ_LIST[@]}"; do [[ $q =~ ^[1-9][0-9]*$ ]] || { echo "bad number $q" >&2; exit 2; }; done
for s in "${SERVER_LIST[@]}"; do case $s in ioplane | qsd | ref) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac; done
case $WAIT in event | poll) ;; *) echo "--wait: event or poll" >&2; exit 2 ;; esac

# ---------------------------------------------------------------- tools

if ! command -v qemu-storage-daemon >/dev/null; then
    echo "installing: qemu-system-common (qemu-storage-daemon)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-common >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-common >/dev/null
    fi
fi
if [ "$BUILD" = 1 ]; then
    make -C "$ROOT" build >/dev/null
fi
[ -x "$VUBLK" ] || { echo "missing $VUBLK (make build, or --vublk PATH)" >&2; exit 1; }
[ -n "$SERVERS" ] || [ ! -x "$REF" ] || SERVER_LIST+=(ref)

[ -n "$OUT" ] || OUT=/tmp/vublk-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/vublk-bench-work-XXXXXX)
# Private copies: a rebuild during the run must not change the binaries.
mkdir -p "$WORK/bin"
cp "$VUBLK" "$WORK/bin/"
VUBLK=$WORK/bin/$(basename "$VUBLK")
if [ -x "$DAEMON" ]; then
    cp "$DAEMON" "$WORK/bin/"
    DAEMON=$WORK/bin/$(basename "$DAEMON")
fi
if [ -x "$REF" ]; then
    cp "$REF" "$WORK/bin/"
    REF=$WORK/bin/$(basename "$REF")
fi
HZ=$(getconf CLK_TCK)

# The file back end: on tmpfs, preallocated, so that the servers' CPU and
# not a disk is measured.
IMG=
if [[ " ${BACKEND_LIST[*]} " == *" file "* ]]; then
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || { echo "/dev/shm is not tmpfs" >&2; exit 1; }
    IMG=$(mktemp /dev/shm/vublk-bench-XXXXXX.img)
    fallocate -l "$SIZE" "$IMG" 2>/dev/null || head -c "$SIZE" /dev/zero >"$IMG"
fi

# ---------------------------------------------------------------- processes

PIDS=()  # every background process this script started
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [ -z "$IMG" ] || rm -f "$IMG"
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"  # process, CPU and retry helpers
trap 'exit 130' INT TERM

# last_error LOG: the log's last line that is not blank or an info message.
last_error() { grep -v -e '^ *$' -e ': info \[' "$1" | tail -1 || true; }

SPID=  # the running server
SOCK=$WORK/vhost.sock
START_ERROR=
# start_server SERVER BACKEND QUEUES LOG: 0 when it serves; else 1 with START_ERROR set.
start_server() {
    local server=$1 backend=$2 nq=$3 log=$4 pidf=$WORK/server.pid bdev bin i
    local objects=(--object iothread,id=io0) placement=iothread=io0
    rm -f "$SOCK" "$pidf"
    case $backend in
    null) bdev=driver=null-co,node-name=disk,size=$SIZE,read-zeroes=on ;;  # qsd 7.2 wants bytes, not 1G
    file) bdev=driver=file,node-name=disk,filename=$IMG ;;
    esac
    case $server in
    qsd) bin=qemu-storage-daemon ;;
    ioplane)
        bin=$DAEMON
        if [ "$IOTHREAD_PER_QUEUE" = 1 ] && [ "$nq" -gt 1 ]; then
            objects+=(--object iothread,id=io1)
            placement=iothread.0=io0,iothread.1=io1
        fi
        ;;
    esac
    if [ "$server" = ref ]; then
        # Null back end only (the caller skips file); it offers 16 queues whatever the run drives.
        "$REF" "$SOCK" "$SIZE" >"$log" 2>&1 &
    else
        "$bin" "${objects[@]}" --blockdev "$bdev" \
            --export "type=vhost-user-blk,id=e0,node-name=disk,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$nq,$placement" \
            --pidfile "$pidf" >"$log" 2>&1 &
    fi
    SPID=$!
    PIDS+=("$SPID")
    for i in $(seq 200); do
        if [ "$server" = ref ]; then
            # It has no pidfile, and its socket exists a moment before it listens.
            grep -q listening "$log" 2>/dev/null && return 0
        else
            [ -s "$pidf" ] && [ -S "$SOCK" ] && return 0
        fi
        if ! kill -0 "$SPID" 2>/dev/null; then
            wait "$SPID" 2>/dev/null || true
            forget_pid "$SPID"
            START_ERROR="$server exited during startup: $(last_error "$log")"
            SPID=
            return 1
        fi
        sleep 0.05
    done
    START_ERROR="$server did not create its socket within 10 s"
    stop_server
    return 1
}


# vublk_args RW QD NQ: the front end's command line (VUBLK_ARGS).
VUBLK_ARGS=()
vublk_args() {
    VUBLK_ARGS=(--socket "$SOCK" --rw "$1" --bs "$BS" --iodepth "$2" --queues "$3" --wait "$WAIT"
        --runtime "$RUNTIME" --ramp "$RAMP" --server-pid "$SPID" --timeout 20 --json --quiet)
}

# ---------------------------------------------------------------- does ioplane serve vhost-user-blk?

IOPLANE_NOTE=
want_ioplane=0
for s in "${SERVER_LIST[@]}"; do [ "$s" = ioplane ] && want_ioplane=1; done
if [ "$want_ioplane" = 1 ]; then
    if [ ! -x "$DAEMON" ]; then
        IOPLANE_NOTE="no ioplane-storage-daemon at $DAEMON"
    elif ! start_server ioplane null 1 "$OUT/logs/probe.ioplane.log"; then
        IOPLANE_NOTE=$START_ERROR
    else
        vublk_args randread 1 1
        if ! "$VUBLK" "${VUBLK_ARGS[@]}" --runtime 0.3 --ramp 0 >/dev/null 2>"$OUT/logs/probe.ioplane.vublk.log"; then
            IOPLANE_NOTE="a first run against its export failed: $(last_error "$OUT/logs/probe.ioplane.vublk.log")"
            kill -0 "$SPID" 2>/dev/null || IOPLANE_NOTE="$IOPLANE_NOTE; the daemon died: $(last_error "$OUT/logs/probe.ioplane.log")"
        fi
        stop_server
    fi
    if [ -n "$IOPLANE_NOTE" ]; then
        echo "ioplane's vhost-user-blk export is not available ($IOPLANE_NOTE): running without it"
        drop_server ioplane
    fi
fi
drop_ref_if_missing
[ ${#SERVER_LIST[@]} -gt 0 ] || { echo "no server to run" >&2; exit 1; }

# ---------------------------------------------------------------- runs

# attempt BACKEND SERVER RW QD NQ REP TAG: one run against a fresh server;
# ATTEMPT_LINE is its runs.jsonl line, ATTEMPT_OTHER the CPUs other
# processes used meanwhile.
ATTEMPT_LINE='' ATTEMPT_OTHER=0
attempt() {
    local backend=$1 server=$2 rw=$3 qd=$4 nq=$5 rep=$6 tag=$7 rc=0 json='null' m0 m1 s0 s1 c0 c1 t0 t1 err=''
    local log=$OUT/logs/$tag.server.log
    ATTEMPT_OTHER=0
    if ! start_server "$server" "$backend" "$nq" "$log"; then
        err=$START_ERROR
        rc=98
    else
        vublk_args "$rw" "$qd" "$nq"
        children_ticks; c0=$CT
        m0=$(machine_busy); s0=$(proc_ticks "$SPID" || echo 0); t0=$(date +%s.%N)
        "$VUBLK" "${VUBLK_ARGS[@]}" >"$OUT/logs/$tag.json" 2>"$OUT/logs/$tag.err" || rc=$?
        m1=$(machine_busy); s1=$(proc_ticks "$SPID" || echo 0); t1=$(date +%s.%N)
        children_ticks; c1=$CT
        kill -0 "$SPID" 2>/dev/null || { rc=99; err="the server died: $(last_error "$log")"; }
        stop_server
        [ "$rc" = 0 ] || [ -n "$err" ] || err=$(last_error "$OUT/logs/$tag.err")
        [ "$rc" != 0 ] || json=$(head -1 "$OUT/logs/$tag.json")
        # Other processes: what the machine did beyond the server and the tool.
        ATTEMPT_OTHER=$(awk -v m=$((m1 - m0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v hz="$HZ" -v a="$t0" -v b="$t1" \
            'BEGIN { o = (m - s - c) / hz / (b - a); if (o < 0) o = 0; printf "%.2f", o }')
    fi
    ATTEMPT_LINE=$("$PY" -c 'import json, sys
backend, server, rw, qd, nq, rep, rc, other, err, res = sys.argv[1:]
print(json.dumps({"backend": backend, "server": server, "rw": rw, "iodepth": int(qd), "queues": int(nq),
                  "rep": int(rep), "rc": int(rc), "other_cpus": float(other), "error": err,
                  "result": json.loads(res)}))' \
        "$backend" "$server" "$rw" "$qd" "$nq" "$rep" "$rc" "$ATTEMPT_OTHER" "$err" "$json")
    if [ "$rc" = 0 ]; then
        "$PY" -c 'import json, sys
r = json.loads(sys.argv[1])["result"]
cpu = r["server_cpu_us_per_io"]
print("  %s: %.0f IOPS, p50 %.0f us, p99 %.0f us, server CPU %s us/IO, tool CPU %.1f us/IO, %.3f kicks/IO, other processes %s CPUs" % (
    sys.argv[2], r["iops"], r["lat_p50_us"], r["lat_p99_us"], "?" if cpu is None else "%.2f" % cpu,
    r["tool_cpu_us_per_io"], r["kicks_per_io"], sys.argv[3]))' "$ATTEMPT_LINE" "$tag" "$ATTEMPT_OTHER"
    else
        echo "  $tag: FAILED (exit status $rc): $err"
    fi
}

RUN_NO=0
run_one() {
    local backend=$1 server=$2 rw=$3 qd=$4 nq=$5 rep=$6
    RUN_NO=$((RUN_NO + 1))
    echo "[$RUN_NO/$NRUNS, $((SECONDS / 60))m$((SECONDS % 60))s] $server $backend $rw iodepth $qd queues $nq rep $rep"
    keep_least_disturbed "$backend.$server.$rw.qd$qd.q$nq.$rep" "$OUT/runs.jsonl" "$OUT/runs-discarded.jsonl" \
        attempt "$backend" "$server" "$rw" "$qd" "$nq" "$rep"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: bench/vublk_bench.sh $ORIG_ARGS"
    echo "runtime: $RUNTIME s, ramp: $RAMP s, reps: $REPS, bs: $BS, wait: $WAIT"
    echo "disturbed: other processes above $DISTURBED CPUs; retries $RETRIES, budget ${RETRY_BUDGET}s"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "qsd: $(qemu-storage-daemon --version | head -1) ($(dpkg-query -W -f '${Version}' qemu-system-common 2>/dev/null))"
    echo "servers: --object iothread,id=io0 --blockdev ... --export type=vhost-user-blk,...,num-queues=QUEUES,iothread=io0$([ "$IOTHREAD_PER_QUEUE" = 0 ] || echo '; ioplane with 2 queues: a second iothread, iothread.0=io0,iothread.1=io1')"
    if [ -x "$DAEMON" ]; then
        echo "ioplane: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)'), binary sha256 $(sha256sum "$DAEMON" | cut -c1-16)"
    fi
    echo "ioplane-vublk: binary sha256 $(sha256sum "$VUBLK" | cut -c1-16)"
    if [[ " ${SERVER_LIST[*]} " == *" ref "* ]]; then
        echo "ref: vublk_reference_backend (null back end only), binary sha256 $(sha256sum "$REF" | cut -c1-16)"
    fi
    [ -z "$IOPLANE_NOTE" ] || echo "ioplane vhost-user-blk export not available: $IOPLANE_NOTE"
} >"$OUT/machine.txt"

# included BACKEND SERVER: whether the pair is run (the reference has no file back end).
included() { [ "$2" != ref ] || [ "$1" = null ]; }
NRUNS=0
for b in "${BACKEND_LIST[@]}"; do
    for s in "${SERVER_LIST[@]}"; do
        if included "$b" "$s"; then NRUNS=$((NRUNS + ${#RW_LIST[@]} * ${#QD_LIST[@]} * ${#NQ_LIST[@]} * REPS)); fi
    done
done
echo "vhost-user-blk benchmark: ${SERVER_LIST[*]}; $NRUNS runs of ${RUNTIME}s + ${RAMP}s ramp (~$((NRUNS * (${RUNTIME%.*} + ${RAMP%.*} + 2) / 60 + 1)) min); results in $OUT"
: >"$OUT/runs.jsonl"
: >"$OUT/runs-discarded.jsonl"
for rep in $(seq "$REPS"); do
    for b in "${BACKEND_LIST[@]}"; do
        for rw in "${RW_LIST[@]}"; do
            for qd in "${QD_LIST[@]}"; do
                for nq in "${NQ_LIST[@]}"; do
                    # Rotate the server order each repetition so no server always runs first.
                    n=${#SERVER_LIST[@]}
                    for i in $(seq 0 $((n - 1))); do
                        s=${SERVER_LIST[$(((i + rep - 1) % n))]}
                        included "$b" "$s" || continue
                        run_one "$b" "$s" "$rw" "$qd" "$nq" "$rep"
                    done
                done
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
    k = (r["backend"], r["rw"], r["iodepth"], r["queues"])
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
    per_cpu = [x["ios"] / x["server_cpu_s"] for x in res if x["server_cpu_s"]]
    return {
        "runs": len(rs),
        "iops": median([x["iops"] for x in res]),
        "server_cpu_us_per_io": median([x["server_cpu_us_per_io"] for x in res if x["server_cpu_us_per_io"] is not None]),
        "ios_per_server_cpu_s": median(per_cpu),
        "lat_p50_us": median([x["lat_p50_us"] for x in res]),
        "lat_p99_us": median([x["lat_p99_us"] for x in res]),
        "tool_cpu_us_per_io": median([x["tool_cpu_us_per_io"] for x in res]),
        "kicks_per_io": median([x["kicks_per_io"] for x in res]),
        "max_other_cpus": max(r["other_cpus"] for r in rs),
    }

servers = [s for s in ("qsd", "ioplane", "ref") if any(g[0] == s for g in groups)]
def f(v, fmt):
    return "–" if v is None else fmt % v

print("# vhost-user-blk benchmark: ioplane vs qemu-storage-daemon%s\n" %
      (" (ref: the machine's floor)" if "ref" in servers else ""))
print("```\n" + machine.rstrip() + "\n```\n")
if ioplane_note:
    print("**ioplane's vhost-user-blk export was not available (%s): run without it.**\n" % ioplane_note)
head = ["back end", "rw", "QD", "queues"]
for s in servers:
    head += [s + " IOPS", s + " CPU µs/IO", s + " p50 µs", s + " p99 µs"]
# The ratio columns: SERVER's I/Os per server CPU-second over qsd's.
ratios = [s for s in ("ioplane", "ref") if s in servers and "qsd" in servers]
for s in ratios:
    head.append("ioplane/qsd IOs per CPU-s" if s == "ioplane" else
                "ref/qsd IOs per CPU-s (the best any server could reach)")
head += ["tool CPU µs/IO", "other CPUs (max)"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
def per_cpu_ratio(st, server):
    a, b = st.get(server), st.get("qsd")
    if a and b and a["ios_per_server_cpu_s"] and b["ios_per_server_cpu_s"]:
        return a["ios_per_server_cpu_s"] / b["ios_per_server_cpu_s"]
    return None

summary = []
for k in keys:
    row = [k[0], k[1], str(k[2]), str(k[3])]
    st = {s: stats(s, k) for s in servers}
    other, tool = 0.0, []
    for s in servers:
        x = st[s]
        if x is None:
            # The reference has no file back end: not run, not failed.
            row += ["–" if s == "ref" and k[0] != "null" else "failed", "", "", ""]
            continue
        row += [f(x["iops"], "%.0f"), f(x["server_cpu_us_per_io"], "%.2f"), f(x["lat_p50_us"], "%.0f"),
                f(x["lat_p99_us"], "%.0f")]
        other = max(other, x["max_other_cpus"])
        tool.append("%.2f" % x["tool_cpu_us_per_io"])
    ratio = per_cpu_ratio(st, "ioplane")
    floor = per_cpu_ratio(st, "ref")
    for s in ratios:
        row.append(f(ratio if s == "ioplane" else floor, "%.2f"))
    row.append(" / ".join(tool) or "–")
    row.append("%.2f%s" % (other, " (disturbed)" if other > disturbed else ""))
    print("| " + " | ".join(row) + " |")
    summary.append({"backend": k[0], "rw": k[1], "iodepth": k[2], "queues": k[3], "servers": st,
                    "ioplane_over_qsd_ios_per_cpu_s": ratio, "ref_over_qsd_ios_per_cpu_s": floor})
print()
print("Medians over the repetitions. CPU µs/IO: the server's utime+stime (all threads) over the measured")
print("window divided by the I/Os completed in it. IOs per CPU-s = I/Os / server CPU seconds; the ratio is")
print("ioplane's over qsd's (above 1: ioplane spends less CPU per I/O). tool CPU: ioplane-vublk's own CPU per")
print("I/O (the front end shares the machine with the server: %s)." % ("per server, in the order of the columns" if len(servers) > 1 else "one server"))
print("other CPUs: what other processes used during the run, beyond server and tool (above %.2f: disturbed)." % disturbed)
if "ref" in servers:
    print("ref: bench/vublk_reference_backend, requests completed on the spot with no back end (a thread per")
    print("queue: one blocking read() of the kick eventfd, at most one call-eventfd write per batch): what the")
    print("kernel and the front end cost. ref/qsd is the ratio a server that did no work at all would reach")
    print("if it sleeps between kicks (a server that busy-polls the ring can do better where wake-ups")
    print("dominate, at low QD); it runs the null back end only.")
if failures:
    print("\n## Failed runs\n")
    for r in failures:
        print("- %s %s %s iodepth %d queues %d rep %d: exit status %d: %s" % (
            r["server"], r["backend"], r["rw"], r["iodepth"], r["queues"], r["rep"], r["rc"], r["error"]))
json.dump({"machine": machine, "ioplane_note": ioplane_note, "rows": summary, "failures": len(failures)},
          open(out + "/summary.json", "w"), indent=1)
PYEOF
echo "results: $OUT"
