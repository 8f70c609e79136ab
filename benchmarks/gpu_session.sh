#!/usr/bin/env bash
# One command for a lent GPU machine (docs/benchmarks.md, "A GPU session in one command"): the training
# engine's GPU check (benchmarks/gpu_check.py), the engine benchmark (benchmarks/run.py engine, case h)
# and a short CUDA pipeline run (the `labelwise` stages on a copy of cifar10-mini), each step under
# `timeout`, the whole within TOTAL seconds (default 540: below the device tool's 600 s per command).
#
#   bash benchmarks/gpu_session.sh --prepare     # here, once, in the repo root: wheels and data to carry
#   bash benchmarks/gpu_session.sh [TOTAL]       # there: run(command="bash benchmarks/gpu_session.sh",
#                                                #   carry=[".whl", ".gpu-data"], timeout_s=600)
#   bash benchmarks/gpu_session.sh --cpu-smoke   # here: every step, tiny, on the CPU (~2 min)
#   bash benchmarks/gpu_session.sh --plan [TOTAL]  # print the steps and their time limits, run nothing
#
# The GPU machine has Python 3.12 with torch (CUDA), numpy, scipy, h5py, pillow, matplotlib and pyyaml;
# what else the pipeline imports (jsonschema, torch-fidelity, ...) travels as wheels in .whl/ (made by
# --prepare with ../shared/tools/py312-wheels.sh), installed into /tmp/site.  ../shared does not travel:
# --prepare copies ../shared/data/cifar10-mini into .gpu-data/.  Both folders are git-ignored and
# together with the tree stay below the tool's 64 MiB.
#
# Written under $OUT (the tool brings back at most 8 files): session.log (everything printed),
# summary.md (each step's status and seconds, the training jobs' device and rate lines, the check's
# verdicts), gpu_check.jsonl and gpu_check.md, engine.json and engine.md (case h's rows and table),
# pipeline_metrics.json (the pipeline's metrics).  Without $OUT: ./gpu-session-out.
set -u -o pipefail

mode=gpu
case "${1:-}" in
  --prepare) mode=prepare; shift ;;
  --cpu-smoke) mode=smoke; shift ;;
  --plan) mode=plan; shift ;;
esac
total=${1:-540}
# TOTAL less the set-up (10 s: installing the wheels) and the grace `timeout` gives each step after its
# TERM signal (kill_after), shared: the check 45%, the engine case 33%, the pipeline 22%.
kill_after=10
available=$((total - 10 - 3 * kill_after))
t_check=$((available * 45 / 100))
t_engine=$((available * 33 / 100))
t_pipeline=$((available * 22 / 100))
b_check=$((t_check - 20))    # gpu_check.py's own budget: its sections end before the timeout
b_engine=$((t_engine - 45))  # case h's row budget: ceilings, FLOP counting and start-up come on top
stage_limit=60               # each `labelwise` stage of the pipeline step

if [ "$mode" = plan ]; then
  echo "step gpu_check timeout ${t_check}s (budget ${b_check}s)"
  echo "step engine timeout ${t_engine}s (row budget ${b_engine}s)"
  echo "step pipeline timeout ${t_pipeline}s (each stage at most ${stage_limit}s)"
  echo "kill-after ${kill_after}s per step"
  echo "total ${total}s"
  exit 0
fi

if [ "$mode" = prepare ]; then
  set -e
  [ -f benchmarks/gpu_session.sh ] || { echo "run this in the repository root"; exit 2; }
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    bash ../shared/tools/py312-wheels.sh .whl
  fi
  if [ ! -d .gpu-data/cifar10-mini/cifar-10-batches-py ]; then
    mkdir -p .gpu-data
    cp -r ../shared/data/cifar10-mini .gpu-data/
    chmod -R u+w .gpu-data
  fi
  git check-ignore -q .whl .gpu-data || { echo ".whl/ or .gpu-data/ is not git-ignored: they must travel by carry"; exit 2; }
  tree_mib=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{print int($1 / 1048576)}')
  carried_mib=$(du -sm .whl .gpu-data | awk '{s += $1} END {print s}')
  echo "to carry: .whl and .gpu-data (${carried_mib} MiB) + the tree (${tree_mib} MiB); the tool takes 64 MiB"
  echo 'then: run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpu-data"], timeout_s=600)'
  exit 0
fi

root=$(pwd)
OUT=${OUT:-$root/gpu-session-out}
work=$(mktemp -d /tmp/lw-session.XXXXXX)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
summary="$OUT/summary.md"
echo "# GPU session ($mode), $(date -Iseconds), total ${total} s" >"$summary"

if [ "$mode" = smoke ]; then
  py=${PYTHON:-$root/.venv/bin/python}
  export PYTHONPATH=$root
  check_args=(--cpu-smoke)
  engine_args=(--device cpu --quick)
  device=cpu iterations=3 samples=20
  data=${LABELWISE_SHARED_DATA:-$root/../shared/data}/cifar10-mini/cifar-10-batches-py
else
  py=${PYTHON:-python3}
  export PYTHONPATH=$root
  if ls .whl/*.whl >/dev/null 2>&1; then  # what the machine lacks, from the wheels carried along
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
      export PYTHONPATH=/tmp/site:$root PATH=/tmp/site/bin:$PATH
  fi
  check_args=()
  engine_args=()
  device=cuda iterations=200 samples=200
  data=$root/.gpu-data/cifar10-mini/cifar-10-batches-py
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"

step() {  # step NAME LIMIT COMMAND...: run under timeout, note status and seconds in the summary
  local name=$1 limit=$2
  shift 2
  echo "=== $name (at most ${limit} s): $*"
  local t0=$SECONDS rc=0
  timeout --kill-after="$kill_after" "$limit" "$@" || rc=$?
  local what="exit $rc"
  [ "$rc" = 124 ] && what="stopped by its ${limit} s limit"
  echo "- $name: $what, $((SECONDS - t0)) s" >>"$summary"
  echo "=== $name: $what after $((SECONDS - t0)) s"
  return 0
}

# 1. The GPU check: correctness of the CUDA paths, then the kernel, graph and precision questions.
step gpu_check "$t_check" "$py" benchmarks/gpu_check.py --out "$OUT" --budget-s "$b_check" "${check_args[@]}"

# 2. Case h: the table of label-iterations/s against the fp32 and bf16 matmul ceilings.
step engine "$t_engine" env LABELWISE_BENCH_PARTIAL="$work/engine-partial.json" \
  LABELWISE_BENCH_ENGINE_BUDGET_S="$b_engine" "$py" benchmarks/run.py engine --out "$work/engine" "${engine_args[@]}"
engine_json=$(ls "$work"/engine/latest*.json 2>/dev/null | head -1)
cp "${engine_json:-$work/engine-partial.json}" "$OUT/engine.json" 2>/dev/null || true
[ -f "$OUT/engine.json" ] && "$py" - "$OUT/engine.json" >"$OUT/engine.md" <<'EOF'
import json, sys
sys.path.insert(0, "benchmarks")
from cases.engine import markdown_table
result = json.load(open(sys.argv[1]))
print(markdown_table(result["rows"]))
print("\nnot run:", len(result.get("skipped", [])), "rows;", "; ".join(sorted({s["reason"] for s in result.get("skipped", [])})))
EOF

# 3. A short CUDA pipeline run: prepare, classifier, train (W-CGAN 2 labels as one job: bmm + CUDA
#    graph; DC-CGAN one label per job with DiffAugment + EMA; the conditional model), sample, evaluate.
pipeline() {
  local cfg=$work/pipeline.yaml results=$work/results
  "$py" - "$data" "$cfg" "$device" "$iterations" "$samples" <<'EOF' || return 1
import sys, yaml
data, cfg, device, iterations, samples = sys.argv[1:]
config = yaml.safe_load(open("config.yaml"))  # the repository's models (DC-CGAN's DiffAugment + EMA)
config["models"].setdefault("cgan", {})  # the conditional model with its defaults
config["data"] = {"source": "cifar10", "root": data, "labels": [0, 1], "name": "gpu-session"}
config["budget"] = {"iterations": int(iterations), "gflop": None, "minutes": 3, "checkpoint_every": 100}
config["evaluation"] = {"samples_per_label": int(samples), "inception": "off", "classifier_epochs": 1}
config["runtime"] = {**config.get("runtime", {}), "device": device, "progress_seconds": 5}
yaml.safe_dump(config, open(cfg, "w"))
EOF
  local lw=("$py" -m labelwise.cli)
  local c=(--config "$cfg" --results "$results")
  timeout "$stage_limit" "${lw[@]}" prepare "${c[@]}" || return 1
  timeout "$stage_limit" "${lw[@]}" classifier "${c[@]}" || return 1
  timeout "$stage_limit" "${lw[@]}" train "${c[@]}" --model wcgan --label 0 1 || return 1
  for label in 0 1; do
    timeout "$stage_limit" "${lw[@]}" train "${c[@]}" --model dccgan --label "$label" || return 1
  done
  timeout "$stage_limit" "${lw[@]}" train "${c[@]}" --model cgan || return 1
  for model in wcgan dccgan; do
    for label in 0 1; do
      timeout "$stage_limit" "${lw[@]}" sample "${c[@]}" --model "$model" --label "$label" || return 1
    done
    timeout "$stage_limit" "${lw[@]}" evaluate "${c[@]}" --model "$model" || return 1
  done
  "$py" - "$results" >"$OUT/pipeline_metrics.json" <<'EOF'
import json, pathlib, sys
print(json.dumps({str(p.relative_to(sys.argv[1])): json.loads(p.read_text())
                  for p in sorted(pathlib.Path(sys.argv[1]).rglob("metrics.json"))}, indent=1))
EOF
}
if [ -d "$data" ]; then
  export -f pipeline
  export py work data device iterations samples stage_limit OUT
  step pipeline "$t_pipeline" bash -c pipeline
else
  echo "- pipeline: not run: no $data (run --prepare first)" >>"$summary"
fi

{
  echo
  echo "## Training jobs (device line, end line)"
  grep -E "\] device |done: " "$OUT/session.log" | sed -e 's/^/    /' | tail -20
  echo
  echo "## GPU check"
  sed -n '/^## Summary/,$p' "$OUT/gpu_check.md" 2>/dev/null | tail -n +2
} >>"$summary"
cat "$summary"
rm -rf "$work"
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null || true  # session.log complete before the tool collects $OUT
