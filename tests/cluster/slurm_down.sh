#!/usr/bin/env bash
# tests/cluster/slurm_down.sh — stop the test cluster started by tests/cluster/slurm_up.sh.
#
# Cancels any jobs still queued, then stops slurmd and slurmctld by the PIDs in the state
# directory's pid files, and munged too if slurm_up.sh was the one that started it (it leaves a
# marker file then). Never kills by process name. The state directory (configuration, logs) is
# kept; pass --purge to delete it as well. --keep-munge leaves munged running.
#
#   tests/cluster/slurm_down.sh [--keep-munge] [--purge]
#
# Environment: LABELWISE_SLURM_DIR (default /tmp/labelwise-slurm), as for slurm_up.sh.
set -uo pipefail

STATE=${LABELWISE_SLURM_DIR:-/tmp/labelwise-slurm}
KEEP_MUNGE=0
PURGE=0
for a in "$@"; do
    case "$a" in
    --keep-munge) KEEP_MUNGE=1 ;;
    --purge) PURGE=1 ;;
    *)
        echo "usage: $0 [--keep-munge] [--purge]" >&2
        exit 2
        ;;
    esac
done

log() { echo "slurm_down: $*" >&2; }

stop_pidfile() { # name pidfile
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop in 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

if [ -s "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$STATE/slurm.conf timeout -k 2 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop_pidfile slurmd "$STATE/run/slurmd.pid"
stop_pidfile slurmctld "$STATE/run/slurmctld.pid"

if [ "$KEEP_MUNGE" = 0 ] && [ -e "$STATE/run/munged.ours" ]; then
    stop_pidfile munged /run/munge/munged.pid
    rm -f "$STATE/run/munged.ours"
fi

if [ "$PURGE" = 1 ]; then
    if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/slurm.conf" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
    rm -rf "$STATE"
    log "removed $STATE"
fi
exit 0
