#!/usr/bin/env bash
# tests/cluster/smoke.sh — Snakemake + the Slurm executor plugin on the single-node test cluster.
#
# Starts the cluster if needed (tests/cluster/slurm_up.sh), then runs a throwaway 4-stage workflow
# in a temp dir with the shipped production profile plus the test-cluster overrides:
#     snakemake --profile profiles/slurm --profile tests/cluster/profile
# and checks that
#   * every job went through sbatch (one "submitted with SLURM jobid" line per job, ids distinct),
#     with the account from $LABELWISE_SLURM_ACCOUNT (-A, seen in squeue);
#   * the two `train` jobs (gpu: 1 from profiles/slurm's set-resources) ran at the same time
#     (each waits for the other to start) and saw different CUDA_VISIBLE_DEVICES;
#   * a job killed with `scancel` while running is resubmitted (retries) and the run completes.
# Exits non-zero on the first failed check, printing the Snakemake output and Slurm logs.
# Takes about a minute (see docs/clusters.md for measured times). Needs root (slurm_up.sh).
#
#   tests/cluster/smoke.sh            # KEEP=1 keeps the temp dir; SMOKE_TIMEOUT (s) default 150
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SNAKEMAKE=${SNAKEMAKE:-$ROOT/.venv/bin/snakemake}
TIMEOUT=${SMOKE_TIMEOUT:-150}
T0=$SECONDS

fail() {
    echo "smoke: FAIL: $*" >&2
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        echo "--- snakemake output (tail) ---" >&2
        tail -n 60 "$WORK/snakemake.out" >&2 2>/dev/null || true
        for f in $(find "$WORK/logs/slurm" -name '*.log' 2>/dev/null | sort); do
            echo "--- $f (tail) ---" >&2
            tail -n 15 "$f" >&2
        done
        echo "smoke: work dir kept: $WORK" >&2
    fi
    exit 1
}

[ -x "$SNAKEMAKE" ] || fail "no snakemake at $SNAKEMAKE (set SNAKEMAKE=...)"

# --- cluster --------------------------------------------------------------------------------------
env_lines=$(timeout -k 10 240 bash "$ROOT/tests/cluster/slurm_up.sh") || fail "tests/cluster/slurm_up.sh failed"
eval "$env_lines"
T_UP=$((SECONDS - T0))
export LABELWISE_SLURM_ACCOUNT=labelwise-test # no slurmdbd: not validated, but passed as sbatch -A

# --- workflow -------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/labelwise-smoke.XXXXXX)
cat >"$WORK/Snakefile" <<'EOF'
# Throwaway workflow of tests/cluster/smoke.sh: prepare -> train x2 (GPU, concurrent) -> victim.
rule all:
    input:
        "victim.txt",

rule prepare:
    output:
        "prepared.txt",
    shell:
        "echo job=$SLURM_JOB_ID cvd=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

# `train` gets gpu=1 (sbatch --gpus=1) from profiles/slurm's set-resources, like the real rule.
# Each instance waits (60 s at most) until both have started: proof that they overlap.
rule train:
    input:
        "prepared.txt",
    output:
        "train_{i}.txt",
    shell:
        "touch started_{wildcards.i}; "
        "for n in $(seq 600); do [ -e started_0 ] && [ -e started_1 ] && break; sleep 0.1; done; "
        "[ -e started_0 ] && [ -e started_1 ] || {{ echo 'the train jobs did not overlap' >&2; exit 1; }}; "
        "echo job=$SLURM_JOB_ID cvd=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

# The first attempt hangs until smoke.sh scancels it; the retry (attempt 2) finishes at once.
rule victim:
    input:
        expand("train_{i}.txt", i=[0, 1]),
    output:
        "victim.txt",
    resources:
        attempt_no=lambda wildcards, attempt: attempt,
    shell:
        "if [ {resources.attempt_no} -eq 1 ]; then echo $SLURM_JOB_ID > victim.started; sleep 300; fi; "
        "echo job=$SLURM_JOB_ID attempt={resources.attempt_no} > {output}"
EOF

cd "$WORK"
T_SM=$SECONDS
timeout -k 10 "$TIMEOUT" "$SNAKEMAKE" \
    --profile "$ROOT/profiles/slurm" --profile "$ROOT/tests/cluster/profile" \
    >"$WORK/snakemake.out" 2>&1 &
SM_PID=$!

# Cancel the victim's first attempt once it runs.
victim=""
for _ in $(seq $((TIMEOUT * 2))); do
    if [ -s victim.started ]; then
        victim=$(cat victim.started)
        break
    fi
    kill -0 $SM_PID 2>/dev/null || break
    sleep 0.5
done
if [ -n "$victim" ]; then
    echo "smoke: scancel $victim (rule victim, attempt 1) after $((SECONDS - T_SM))s" >&2
    timeout -k 2 10 scancel "$victim" || fail "scancel $victim failed"
fi
rc=0
wait $SM_PID || rc=$?
T_RUN=$((SECONDS - T_SM))
[ $rc -eq 0 ] || fail "snakemake exited with $rc (124/137: timed out after ${TIMEOUT}s)"
[ -n "$victim" ] || fail "the victim job never started"

# --- checks ---------------------------------------------------------------------------------------
for f in prepared.txt train_0.txt train_1.txt victim.txt; do
    [ -s "$f" ] || fail "missing output $f"
done
n_sub=$(grep -c "has been submitted with SLURM jobid" snakemake.out || true)
[ "$n_sub" -eq 5 ] || fail "expected 5 sbatch submissions (prepare, 2 train, victim twice), saw $n_sub"
ids=$(grep -o "submitted with SLURM jobid [0-9]*" snakemake.out | awk '{print $NF}' | sort -u | wc -l)
[ "$ids" -eq 5 ] || fail "expected 5 distinct Slurm job ids, saw $ids"

cvd0=$(sed -n 's/.*cvd=\([^ ]*\).*/\1/p' train_0.txt)
cvd1=$(sed -n 's/.*cvd=\([^ ]*\).*/\1/p' train_1.txt)
[ "$cvd0" != none ] && [ "$cvd1" != none ] || fail "a train job saw no CUDA_VISIBLE_DEVICES ($cvd0, $cvd1)"
[ "$cvd0" != "$cvd1" ] || fail "both train jobs saw CUDA_VISIBLE_DEVICES=$cvd0"
grep -q "attempt=2" victim.txt || fail "victim.txt is not from attempt 2: $(cat victim.txt)"
grep -q "job=$victim " victim.txt && fail "victim.txt written by the cancelled job $victim"

sub_prepare=$(grep -o "submitted with SLURM jobid [0-9]*" snakemake.out | head -n1 | awk '{print $NF}')
acct=$(squeue -h -j "$sub_prepare" -t all -o %a 2>/dev/null || true)
[ "$acct" = "$LABELWISE_SLURM_ACCOUNT" ] || fail "job $sub_prepare ran under account '$acct', not '$LABELWISE_SLURM_ACCOUNT'"
vstate=$(squeue -h -j "$victim" -t all -o %T 2>/dev/null || true)
[ "$vstate" = CANCELLED ] || fail "victim job $victim is '$vstate', not CANCELLED"

echo "smoke: OK — 5 sbatch jobs, train GPUs $cvd0 and $cvd1 concurrently, cancelled job $victim resubmitted;" \
    "cluster up ${T_UP}s, snakemake ${T_RUN}s, total $((SECONDS - T0))s"
cd /
[ "${KEEP:-0}" = 1 ] && echo "smoke: work dir kept: $WORK" || rm -rf "$WORK"
