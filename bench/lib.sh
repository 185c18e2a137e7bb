# Helpers the benchmark scripts share (source it): the background processes
# they start, the CPU time a server uses, and whether the machine is quiet.
# The caller defines PIDS (array of the processes it started), SERVER_LIST, REF, SPID (the
# running server), WORK (a scratch directory), HZ (clock ticks per second), QUIET_WAIT (seconds),
# DISTURBED (CPUs), RETRIES and RETRY_BUDGET (seconds).

# drop_server NAME: run without that server (the caller's SERVER_LIST).
drop_server() {
    local keep=() s
    for s in "${SERVER_LIST[@]}"; do [ "$s" = "$1" ] || keep+=("$s"); done
    SERVER_LIST=("${keep[@]}")
}

# drop_ref_if_missing: run without the reference server ("ref" in
# SERVER_LIST) when its binary, $REF, is not there.
drop_ref_if_missing() {
    local s
    for s in "${SERVER_LIST[@]}"; do
        [ "$s" = ref ] && [ ! -x "$REF" ] || continue
        echo "no reference server binary at $REF: running without it"
        drop_server ref
        return
    done
}

# forget_pid PID: it has been waited for; cleanup need not kill it.
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# stop_server: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null || true
    local i
    for i in $(seq 100); do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    forget_pid "$SPID"
    SPID=
}

# children_ticks: sets CT, the CPU time of this shell's waited-for children
# in ticks. Not in a $(...): a subshell's `times` does not see them.
CT=0
children_ticks() {
    times >"$WORK/times"
    CT=$(awk -v hz="$HZ" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%d", s * hz }' "$WORK/times")
}

# proc_ticks PID: utime+stime of the whole process, in clock ticks; fails
# when the process is gone.
proc_ticks() {
    local s
    s=$(<"/proc/$1/stat") 2>/dev/null || return 1
    s=${s##*) }
    set -- $s
    echo $((${12} + ${13}))
}

# machine_ticks: "busy total" over all CPUs, from /proc/stat.
machine_ticks() {
    local user nice sys idle iow irq sirq steal rest
    read -r _ user nice sys idle iow irq sirq steal rest </proc/stat
    echo "$((user + nice + sys + irq + sirq + steal)) $((user + nice + sys + idle + iow + irq + sirq + steal))"
}

# machine_busy: the busy part of machine_ticks.
machine_busy() {
    local busy _
    read -r busy _ <<<"$(machine_ticks)"
    echo "$busy"
}

# wait_quiet: up to QUIET_WAIT s until the machine is idle (< 0.25 CPU busy) for 1 s.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) a b busy=0
    while [ $SECONDS -lt $deadline ]; do
        a=$(machine_busy); sleep 1; b=$(machine_busy)
        busy=$(((b - a) * 100 / HZ))  # percent of one CPU
        [ $busy -lt 25 ] && return 0
    done
    echo "  (machine still busy: ${busy}% of a CPU from other processes)"
}

# disturbed CPUS: whether other processes used more than DISTURBED CPUs.
disturbed() { awk -v o="$1" -v d="$DISTURBED" 'BEGIN {exit !(o > d)}'; }

# keep_least_disturbed TAG RUNS DISCARDED CMD...: one measurement, `CMD... TAG`,
# which sets ATTEMPT_LINE (the record) and ATTEMPT_OTHER (the CPUs other
# processes used meanwhile). An attempt that other processes disturbed is run
# again (TAG.retryN), up to RETRIES times and RETRY_BUDGET seconds in all,
# after waiting for the machine to go quiet; the least disturbed attempt is
# appended to RUNS (the choice looks only at the machine's other load, never
# at the result), the others to DISCARDED.
RETRY_SPENT=0
keep_least_disturbed() {
    local base=$1 runs=$2 discarded=$3 a tag best_line='' best_other='' retry_start=0
    shift 3
    for a in $(seq 0 "$RETRIES"); do
        tag=$base
        if [ "$a" != 0 ]; then
            [ "$RETRY_SPENT" -lt "$RETRY_BUDGET" ] || { echo "  (retry budget spent: keeping it)"; break; }
            retry_start=$SECONDS
            wait_quiet
            tag=$base.retry$a
        fi
        "$@" "$tag"
        if [ -z "$best_line" ] || awk -v n="$ATTEMPT_OTHER" -v b="$best_other" 'BEGIN {exit !(n < b)}'; then
            [ -z "$best_line" ] || echo "$best_line" >>"$discarded"
            best_line=$ATTEMPT_LINE best_other=$ATTEMPT_OTHER
        else
            echo "$ATTEMPT_LINE" >>"$discarded"
        fi
        [ "$a" = 0 ] || RETRY_SPENT=$((RETRY_SPENT + SECONDS - retry_start))
        disturbed "$ATTEMPT_OTHER" || break
    done
    echo "$best_line" >>"$runs"
}
