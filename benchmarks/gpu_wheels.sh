#!/bin/sh
# Wheels for benchmarks/gpu_check.py on a GPU machine without network: what detzoo needs beyond a CUDA image with
# torch, torchvision, OpenCV, ONNX Runtime and pytest (pycocotools: COCO mAP and the demo; the serve extra:
# starlette, uvicorn, python-multipart), at the versions constraints.txt pins, for that machine's Python.
#
#   sh benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION]      # default .whl and 3.12 (x86-64 manylinux)
#
# Then, on the GPU machine, from a copy of this checkout with DIR in it:
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl
#   PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_check.py --out /tmp/gpu_check
set -eu
DIR=${1:-.whl}
PY=${2:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
pin() { grep -i "^$1==" "$ROOT/constraints.txt"; }
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DIR" "$(pin pycocotools)" "$(pin starlette)" "$(pin uvicorn)" "$(pin python-multipart)"
ls "$DIR"
