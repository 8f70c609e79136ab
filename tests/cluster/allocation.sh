#!/usr/bin/env bash
# tests/cluster/allocation.sh — allocation mode (profiles/frontier) on the single-node test cluster.
#
# Submits the shipped profiles/frontier/submit.sbatch with `sbatch --wait` (overriding only what
# the 2-CPU, 2-fake-GPU test node cannot give: -A/-p/-t, --gpus-per-node=2, --exclusive, and the
# launcher's -c7 -> -c1 / train threads 7 -> 1) running a throwaway workflow of 4 `train` jobs
# plus a local `figures` rule, and checks that
#   * every train job ran as its own `srun` job step (the launcher from the profile's config),
#     at most 2 at once, and overlapping steps saw different CUDA_VISIBLE_DEVICES;
#   * a SIGTERM to the batch script (what `--signal=B:TERM@300` sends before the wall time; here
#     `scancel --batch --signal=TERM`) stops Snakemake and its running steps within seconds: no
#     cut-off output kept, no lock left; and submitting the same script again finishes the run.
# Exits non-zero on failure. About a minute. Needs root (slurm_up.sh). KEEP=1 keeps the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T0=$SECONDS
fail() {
    echo "allocation: FAIL: $*" >&2
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        for f in "$WORK"/logs/*.out; do
            [ -e "$f" ] || continue
            echo "--- $f (tail) ---" >&2
            tail -n 40 "$f" >&2
        done
        echo "allocation: work dir kept: $WORK" >&2
    fi
    exit 1
}

env_lines=$(timeout -k 10 240 bash "$ROOT/tests/cluster/slurm_up.sh") || fail "tests/cluster/slurm_up.sh failed"
eval "$env_lines"

WORK=$(mktemp -d /tmp/labelwise-alloc.XXXXXX)
mkdir -p "$WORK/logs"
cat >"$WORK/Snakefile" <<'EOF'
# Throwaway workflow of tests/cluster/allocation.sh: 4 train jobs (one srun step each) -> figures.
LAUNCHER = config.get("runtime", {}).get("launcher", "")
SLEEP = int(config.get("sleep", 3))

rule figures:
    input:
        expand("train_{label}.txt", label=range(4)),
    output:
        "figures.txt",
    shell:
        "cat {input} > {output}"

rule train:
    output:
        "train_{label}.txt",
    shell:
        "{LAUNCHER} bash -c 'echo label={wildcards.label} step=$SLURM_JOB_ID.$SLURM_STEP_ID"
        " cvd=${{CUDA_VISIBLE_DEVICES:-none}} start=$(date +%s.%N) >> {output}.tmp;"
        " sleep {SLEEP}; echo end=$(date +%s.%N) >> {output}.tmp' && mv {output}.tmp {output}"
EOF

# What the 2-CPU test node needs instead of Frontier's 7 cores per GPU; everything else (srun
# --exact, env -u SLURM_GPUS_PER_NODE, gpu resources, the TERM trap) is the shipped setup.
LAUNCHER="env -u SLURM_GPUS_PER_NODE srun --exact -N1 -n1 --gpus=1 -c1"
export LABELWISE_VENV=$ROOT/.venv LABELWISE_PROFILE=$ROOT/profiles/frontier LABELWISE_CPUS_PER_GPU=1
# `--config` on the command line replaces the profile's whole `config:` key: repeat the launcher.
submit() { # SLEEP sbatch-options...
    local sleep=$1
    shift
    (cd "$WORK" && timeout -k 5 120 sbatch --parsable -A labelwise-test -p "$LABELWISE_SLURM_PARTITION" \
        -t 10 -N1 --exclusive --gpus-per-node=2 "$@" "$ROOT/profiles/frontier/submit.sbatch" \
        --config "runtime={launcher: '$LAUNCHER'}" "sleep=$sleep" --set-threads train=1)
}
# `sbatch --wait` polls slowly (30 s and more); squeue every 0.5 s instead. Prints the end state.
wait_job() { # JOBID TIMEOUT_S
    local st=""
    for _ in $(seq $(($2 * 2))); do
        st=$(squeue -h -j "$1" -t all -o %T 2>/dev/null || true)
        case "$st" in COMPLETED | FAILED | CANCELLED | TIMEOUT | OUT_OF_MEMORY | NODE_FAIL) break ;; esac
        sleep 0.5
    done
    echo "$st"
}

# --- 1. a full run ------------------------------------------------------------------------------
T1=$SECONDS
job=$(submit 3) || fail "sbatch of submit.sbatch failed"
st=$(wait_job "$job" 90)
[ "$st" = COMPLETED ] || fail "first run: job $job is '$st'"
T_RUN1=$((SECONDS - T1))
[ -s "$WORK/figures.txt" ] || fail "no figures.txt after the first run"
python3 - "$WORK/figures.txt" <<'EOF' || fail "step checks failed"
import re, sys
rows = []
text = open(sys.argv[1]).read()
for m in re.finditer(r"label=(\d+) step=(\S+) cvd=(\S+) start=(\S+)\s+end=(\S+)", text):
    rows.append((int(m[1]), m[2], m[3], float(m[4]), float(m[5])))
assert len(rows) == 4, f"expected 4 train records, got {len(rows)}:\n{text}"
steps = {r[1] for r in rows}
assert len(steps) == 4 and all(re.fullmatch(r"\d+\.\d+", s) for s in steps), f"not 4 srun steps: {steps}"
assert all(r[2] in ("0", "1") for r in rows), f"each step must see exactly one GPU: {[r[2] for r in rows]}"
overlaps = 0
for i, a in enumerate(rows):
    for b in rows[i + 1:]:
        if a[3] < b[4] and b[3] < a[4]:
            overlaps += 1
            assert a[2] != b[2], f"overlapping steps share GPU {a[2]}: {a} {b}"
    live = [r for r in rows if r[3] <= a[3] < r[4]]
    assert len(live) <= 2, f"more than 2 steps at once at {a[3]}"
assert overlaps >= 2, f"steps did not run side by side ({overlaps} overlaps)"
print(f"allocation: 4 train jobs as srun steps {sorted(steps)}, GPUs {[r[2] for r in rows]}, {overlaps} overlaps")
EOF

# --- 2. SIGTERM before the wall time, then resubmit -----------------------------------------------
rm -f "$WORK"/train_*.txt "$WORK/figures.txt"
T2=$SECONDS
job=$(submit 60) || fail "sbatch failed"
# wait until two train steps run, then send what --signal=B:TERM@300 sends
for _ in $(seq 120); do
    n=$(squeue -h -s -j "$job" -o %i 2>/dev/null | grep -c "^$job\.[0-9]" || true)
    [ "$n" -ge 2 ] && break
    sleep 0.5
done
[ "${n:-0}" -ge 2 ] || fail "the train steps of job $job did not start"
timeout -k 2 10 scancel --batch --signal=TERM "$job" || fail "scancel --batch --signal=TERM $job failed"
st=$(wait_job "$job" 60)
T_TERM=$((SECONDS - T2))
case "$st" in COMPLETED | FAILED) ;; *) fail "job $job did not end after SIGTERM (state '$st')" ;; esac
out=$WORK/logs/labelwise-$job.out
grep -q "wall time near, stopping snakemake" "$out" || fail "the TERM trap did not run"
ls "$WORK"/train_*.txt >/dev/null 2>&1 && fail "train outputs exist although every step was cut off"
[ -z "$(ls -A "$WORK/.snakemake/locks" 2>/dev/null)" ] || fail "snakemake left its lock behind"
grep -q "Will exit after finishing currently running jobs" "$out" || fail "snakemake did not stop gracefully"
[ "$((SECONDS - T2))" -lt 50 ] || fail "stopping took $((SECONDS - T2))s: the steps were not cut off"

T3=$SECONDS
job=$(submit 3) || fail "resubmission failed"
st=$(wait_job "$job" 90)
[ "$st" = COMPLETED ] || fail "resubmission: job $job is '$st'"
T_RUN3=$((SECONDS - T3))
[ -s "$WORK/figures.txt" ] || fail "no figures.txt after the resubmission"

echo "allocation: OK — run ${T_RUN1}s; SIGTERM stop ${T_TERM}s (steps cut off, lock released);" \
    "resubmission ${T_RUN3}s; total $((SECONDS - T0))s"
[ "${KEEP:-0}" = 1 ] && echo "allocation: work dir kept: $WORK" || rm -rf "$WORK"
