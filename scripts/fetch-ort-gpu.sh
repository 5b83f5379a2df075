#!/usr/bin/env bash
# Fetches the GPU build of ONNX Runtime (PyPI `onnxruntime-gpu`, CUDA 13) for the `onnx-cuda` and
# `tensorrt` backends: libonnxruntime.so.* plus libonnxruntime_providers_{shared,cuda,tensorrt}.so
# are extracted to vendor/onnxruntime-gpu/lib/ (about 330 MB; the CUDA provider alone is 284 MB).
# Prints the libonnxruntime path, so that
#   export ORT_DYLIB_PATH=$(scripts/fetch-ort-gpu.sh)
# works. Idempotent.
#
# The providers also need, on the library path: CUDA 13 runtime libraries (libcudart.so.13,
# libcublas(Lt).so.13, libcurand.so.10, libcufft.so.12), cuDNN 9 (libcudnn.so.9), an NVIDIA driver
# for CUDA 13 (libcuda.so.1, driver >= 580) and, for `tensorrt`, TensorRT 10 (libnvinfer.so.10,
# libnvonnxparser.so.10). Without them this library still loads and `onnx-cpu` works; the GPU
# backends report the first missing library (docs/gpu-onnx.md). On a CPU-only machine that is
# what tests/gpu_ort_without_cuda.rs checks:
#   S1_TEST_ORT_GPU_DYLIB=$(scripts/fetch-ort-gpu.sh) cargo test --test gpu_ort_without_cuda
set -euo pipefail
ORT_VERSION=1.31.1
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/ort-gpu"
dest="$root/vendor/onnxruntime-gpu/lib"
lib="$dest/libonnxruntime.so.$ORT_VERSION"

if [ -f "$lib" ] && [ -f "$dest/libonnxruntime_providers_cuda.so" ]; then
  echo "$lib"
  exit 0
fi
mkdir -p "$cache" "$dest"
if ! ls "$cache"/onnxruntime_gpu-"$ORT_VERSION"-*.whl >/dev/null 2>&1; then
  pip=""
  for cand in "$root/.venv/bin/pip" pip3 pip; do
    if command -v "$cand" >/dev/null 2>&1; then pip=$cand; break; fi
  done
  [ -n "$pip" ] || { echo "fetch-ort-gpu: pip not found" >&2; exit 1; }
  echo "fetch-ort-gpu: downloading onnxruntime-gpu==$ORT_VERSION wheel from PyPI (~250 MB)" >&2
  arch=$(uname -m)
  "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform "manylinux_2_27_$arch" --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    -d "$cache" "onnxruntime-gpu==$ORT_VERSION" >&2
fi
whl=$(ls "$cache"/onnxruntime_gpu-"$ORT_VERSION"-*.whl | head -n 1)
python3 - "$whl" "$dest" <<'PY'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
    if not any("providers_cuda" in n for n in names):
        sys.exit(f"fetch-ort-gpu: no CUDA provider library in {whl}")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".tmp", out)
PY
[ -f "$lib" ] || { echo "fetch-ort-gpu: $lib missing after extraction" >&2; exit 1; }
echo "$lib"
