# Helpers the benchmark scripts share (source it): the background processes
# they start, the CPU time a server uses, and whether the machine is quiet.
# The caller defines PIDS (array of the processes it started), SPID (the
# running server), HZ (clock ticks per second), QUIET_WAIT (seconds) and
# DISTURBED (CPUs).

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
