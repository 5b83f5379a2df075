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
"$root/scripts/fetch-wheel-libs.sh" "onnxruntime-gpu==$ORT_VERSION" "onnxruntime_gpu-$ORT_VERSION-*.whl" \
  "$cache" "$dest" '^onnxruntime/capi/libonnxruntime' "libonnxruntime_providers_cuda.so"
[ -f "$lib" ] || { echo "fetch-ort-gpu: $lib missing after extraction" >&2; exit 1; }
echo "$lib"
