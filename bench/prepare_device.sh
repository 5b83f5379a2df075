#!/usr/bin/env bash
# Fills the ignored folder .device/ with what bench/gpu_check.sh needs on a GPU host (built here,
# on the CPU host): the cuda_check binary, onnxruntime-gpu's main libraries, and (for the `ort`
# stage) its CUDA provider with only sm_90 code, xz-compressed (the GPU host unpacks with Python's lzma). Each subfolder fits one device
# call's 64 MiB: carry .device/bin and .device/ort in one call, .device/prov in the next.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --example cuda_check
"$root/scripts/fetch-ort-gpu.sh" >/dev/null
src=vendor/onnxruntime-gpu/lib
mkdir -p .device/bin .device/ort .device/prov
cp target/release/examples/cuda_check .device/bin/
cp "$src/libonnxruntime_providers_shared.so" .device/ort/
xz -T0 -9 -c "$src/libonnxruntime.so.1.31.1" > .device/ort/libonnxruntime.so.1.31.1.xz
if [ ! -f .device/prov/libonnxruntime_providers_cuda.so.xz ]; then
  python3 bench/prune_fatbin.py "$src/libonnxruntime_providers_cuda.so" /tmp/providers_cuda_sm90.so
  xz -T0 -9 -c /tmp/providers_cuda_sm90.so > .device/prov/libonnxruntime_providers_cuda.so.xz
  rm -f /tmp/providers_cuda_sm90.so
fi
du -sh .device/*
