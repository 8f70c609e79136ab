#!/usr/bin/env bash
# tests/cluster/slurm_up.sh — a real single-node Slurm on this machine, for the cluster tests.
#
# What it does (idempotent: run it again and it only checks that the node is up):
#   1. installs Debian's slurmctld, slurmd, slurm-client and munge if they are missing
#      (apt-get update only when the first install attempt fails);
#   2. writes slurm.conf and gres.conf into a state directory ($LABELWISE_SLURM_DIR,
#      default /tmp/labelwise-slurm) and points /etc/slurm/slurm.conf at it (see below);
#   3. makes fake GPU device nodes /dev/fakegpu0.. (character devices 1:3, i.e. /dev/null:
#      Slurm accepts them as gres files and sets CUDA_VISIBLE_DEVICES from them);
#   4. creates the munge key if absent and starts munged, slurmctld and slurmd directly
#      (no systemd), all as root;
#   5. waits (up to $LABELWISE_SLURM_WAIT seconds, default 60) until `sinfo` reports the node
#      idle, then prints the environment the tests need as `export` lines:
#          eval "$(tests/cluster/slurm_up.sh)"
#      Progress and errors go to stderr; only the export lines go to stdout.
#
# Needs root. Exits non-zero with a message on stderr when anything fails; the daemons' logs
# are in $LABELWISE_SLURM_DIR/log/. Stop everything with tests/cluster/slurm_down.sh.
#
# Environment (all optional):
#   LABELWISE_SLURM_DIR        state directory (conf, spool, logs, pids)   [/tmp/labelwise-slurm]
#   LABELWISE_SLURM_GPUS       number of fake GPUs on the node              [2]
#   LABELWISE_SLURM_PARTITION  partition name                               [debug]
#   LABELWISE_SLURM_WAIT       seconds to wait for the node to become idle  [60]
#   LABELWISE_SLURM_ETC_LINK   1: symlink /etc/slurm/slurm.conf to the state dir's slurm.conf
#                              when that path is free or already ours; 0: don't    [1]
#
# Why /etc/slurm/slurm.conf: the snakemake slurm *jobstep* executor strips every SLURM_* variable
# (SLURM_CONF included) before it runs `srun` inside the job, so a non-default SLURM_CONF is lost
# there and srun falls back to the compiled-in /etc/slurm/slurm.conf. The symlink keeps the
# configuration in the state directory while every client finds it.
#
# Settings that matter on a single VM (measured; without them the node drains or jobs serialise):
#   SlurmdParameters=config_overrides    trust slurm.conf's CPUs/memory/gres, not the hardware
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none   no cgroups needed
#   SelectType=select/cons_tres + CR_Core_Memory + DefMemPerCPU   jobs share the node by core/mem
#   GresTypes=gpu, Gres=gpu:N, gres.conf File=/dev/fakegpuK   (count-only gres drains the node,
#                                                             regular files are rejected)
#   MinJobAge=600                        finished jobs stay visible to `squeue` (no slurmdbd here)
set -euo pipefail

STATE=${LABELWISE_SLURM_DIR:-/tmp/labelwise-slurm}
NGPU=${LABELWISE_SLURM_GPUS:-2}
PARTITION=${LABELWISE_SLURM_PARTITION:-debug}
WAIT=${LABELWISE_SLURM_WAIT:-60}
ETC_LINK=${LABELWISE_SLURM_ETC_LINK:-1}
CONF=$STATE/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf

log() { echo "slurm_up: $*" >&2; }
die() {
    echo "slurm_up: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (installs packages, makes /dev/fakegpu*, runs the daemons as root)"
[[ $NGPU =~ ^[0-9]+$ ]] || die "LABELWISE_SLURM_GPUS must be a number, got '$NGPU'"

# --- 1. packages -------------------------------------------------------------------------------
PKGS=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get to install them"
    log "installing ${missing[*]} ..."
    T_INSTALL=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout -k 10 600 apt-get install -y --no-install-recommends "${missing[@]}" >"/tmp/labelwise-slurm-apt.log" 2>&1; then
        log "install failed; running apt-get update and retrying"
        timeout -k 10 300 apt-get update >>"/tmp/labelwise-slurm-apt.log" 2>&1 ||
            die "apt-get update failed (see /tmp/labelwise-slurm-apt.log)"
        timeout -k 10 600 apt-get install -y --no-install-recommends "${missing[@]}" >>"/tmp/labelwise-slurm-apt.log" 2>&1 ||
            die "apt-get install ${missing[*]} failed (see /tmp/labelwise-slurm-apt.log)"
    fi
    log "installed in $((SECONDS - T_INSTALL))s"
fi
T_DAEMONS=$SECONDS
for b in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$b" >/dev/null || die "'$b' not found after installing ${PKGS[*]}"
done

# --- 2. configuration --------------------------------------------------------------------------
NODE=$(hostname -s)
[ -n "$NODE" ] || die "hostname -s is empty"
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo) # leave 10% to the OS
DEF_MEM_PER_CPU=$((MEM_MB / CPUS / 2))                                   # half the share by default
mkdir -p "$STATE"/{log,spool/ctld,spool/d,run}

for ((i = 0; i < NGPU; i++)); do
    dev=/dev/fakegpu$i
    if [ -e "$dev" ] && [ ! -c "$dev" ]; then die "$dev exists and is not a character device"; fi
    [ -e "$dev" ] || mknod -m 666 "$dev" c 1 3 || die "mknod $dev failed"
done

GRES_NODE=""
GRES_TYPES=""
if [ "$NGPU" -gt 0 ]; then
    GRES_NODE="Gres=gpu:$NGPU"
    GRES_TYPES="GresTypes=gpu"
fi

new_conf=$(
    cat <<EOF
# Written by tests/cluster/slurm_up.sh — single-node test cluster, no slurmdbd. Do not edit.
ClusterName=labelwise
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
MinJobAge=600
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres=$(
    echo "# Written by tests/cluster/slurm_up.sh: fake GPUs (char devices 1:3)."
    for ((i = 0; i < NGPU; i++)); do echo "NodeName=$NODE Name=gpu File=/dev/fakegpu$i"; done
)

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi
if [ "$(cat "$STATE/gres.conf" 2>/dev/null)" != "$new_gres" ]; then
    printf '%s\n' "$new_gres" >"$STATE/gres.conf"
    changed=1
fi

if [ "$ETC_LINK" = 1 ]; then
    mkdir -p /etc/slurm
    if [ -L "$ETC_CONF" ] || [ ! -e "$ETC_CONF" ]; then
        ln -sfn "$CONF" "$ETC_CONF"
    elif ! cmp -s "$ETC_CONF" "$CONF"; then
        log "WARNING: $ETC_CONF is a real file, not ours; leaving it. srun inside snakemake" \
            "slurm jobs will read it instead of $CONF"
    fi
fi
export SLURM_CONF=$CONF

# --- 3. munge ----------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge

if ! timeout -k 2 5 sh -c 'munge -n | unmunge' >/dev/null 2>&1; then
    log "starting munged"
    timeout -k 5 20 runuser -u munge -- munged ||
        die "munged failed to start (see /var/log/munge/munged.log)"
    mkdir -p "$STATE/run" && touch "$STATE/run/munged.ours" # slurm_down.sh stops it again
    for _ in $(seq 50); do
        timeout -k 2 5 sh -c 'munge -n | unmunge' >/dev/null 2>&1 && break
        sleep 0.1
    done
    timeout -k 2 5 sh -c 'munge -n | unmunge' >/dev/null 2>&1 || die "munge does not work after starting munged"
fi

# --- 4. slurm daemons --------------------------------------------------------------------------
if [ "$changed" = 1 ] && { pid_alive "$STATE/run/slurmctld.pid" || pid_alive "$STATE/run/slurmd.pid"; }; then
    log "configuration changed: restarting the daemons"
    LABELWISE_SLURM_DIR=$STATE bash "$(dirname "$0")/slurm_down.sh" --keep-munge >&2
fi

if ! pid_alive "$STATE/run/slurmctld.pid"; then
    log "starting slurmctld"
    # -i: ignore state files that do not match this configuration (test cluster: nothing to keep)
    timeout -k 5 30 slurmctld -f "$CONF" -i ||
        die "slurmctld failed to start; last log lines:
$(tail -n 20 "$STATE/log/slurmctld.log" 2>/dev/null)"
fi
if ! pid_alive "$STATE/run/slurmd.pid"; then
    log "starting slurmd"
    timeout -k 5 30 slurmd -f "$CONF" -N "$NODE" ||
        die "slurmd failed to start; last log lines:
$(tail -n 20 "$STATE/log/slurmd.log" 2>/dev/null)"
fi

# --- 5. wait for the node ----------------------------------------------------------------------
state=""
deadline=$((SECONDS + WAIT))
resumed=0
while [ $SECONDS -lt $deadline ]; do
    state=$(timeout -k 2 5 sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 || true)
    case "$state" in
    idle | mix | alloc) break ;;
    drain* | drng | down* | inval*)
        # A drained/down node left over from an earlier run: resume it once.
        if [ $resumed = 0 ]; then
            log "node $NODE is '$state'; resuming it"
            timeout -k 2 10 scontrol update NodeName="$NODE" State=RESUME >&2 || true
            resumed=1
        fi
        ;;
    esac
    sleep 0.5
done
case "$state" in
idle | mix | alloc) ;;
*)
    reason=$(timeout -k 2 5 sinfo -h -R -n "$NODE" 2>/dev/null || true)
    die "node $NODE not idle after ${WAIT}s (state '${state:-none}'${reason:+, reason: $reason}).
--- slurmctld.log:
$(tail -n 15 "$STATE/log/slurmctld.log" 2>/dev/null)
--- slurmd.log:
$(tail -n 15 "$STATE/log/slurmd.log" 2>/dev/null)"
    ;;
esac

log "node $NODE is $state (partition $PARTITION, $CPUS CPUs, ${MEM_MB} MB, $NGPU fake GPUs)" \
    "${SECONDS}s after start ($((SECONDS - T_DAEMONS))s for configuration and daemons)"
echo "export SLURM_CONF=$CONF"
echo "export LABELWISE_SLURM_DIR=$STATE"
echo "export LABELWISE_SLURM_PARTITION=$PARTITION"
