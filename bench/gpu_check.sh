#!/usr/bin/env bash
# Device checks of the GPU backends (docs/cuda.md, docs/gpu-onnx.md): one prepared run on a GPU
# host, in stages, each step under its own timeout so that a stage fits one device call.
#
#   bench/gpu_check.sh STAGE...        STAGE = native | torch | ort | all
#
#   native  cuda_check selftest (every kernel vs an f64 host reference), parity on the tiny bundle
#           (logits vs ORT CPU with and without cuBLAS, the int8 prefill both ways, greedy frames,
#           device sampler, frame graph), bench of the frame graph at S1-mini shapes (random bf16
#           weights), the same in int8; all of it again with S1_CUDA_PDL=1; Nsight Compute's
#           per-kernel times of one replayed frame
#   torch   bench/torch_reference.py eager + compile on the same card
#   ort     onnx-cuda parity on the tiny bundle; an LLM-only random S1-mini bundle exported there
#           (bench/llm_only_bundle.sh, fp16); transformer frames/s of onnx-cuda and of the native
#           backend through the engine on it
#
# What it expects (built on a CPU host, carried into the ignored folder .device/):
#   .device/bin/cuda_check          cargo build --release --example cuda_check
#   .device/ort/libonnxruntime.so.1.31.1.xz, libonnxruntime_providers_shared.so
#                                   the onnxruntime-gpu 1.31.1 wheel's main libraries (its CPU EP
#                                   is the parity reference)
#   .device/prov/libonnxruntime_providers_cuda.so.xz   (stage ort only; 52 MB: sm_90 code only,
#                                   the other archs' cubins zeroed by bench/prune_fatbin.py;
#                                   all three made by bench/prepare_device.sh)
# NVRTC, cuBLAS, cuDNN and the CUDA runtime come from the image's Python wheels or toolkit.
# Everything goes to one log, $OUT/gpu_check.log (the device tool returns at most 8 files); the
# last lines printed are a table of every RESULT and FAIL.
set -uo pipefail
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
BIN=.device/bin/cuda_check
export XDG_CACHE_HOME=/tmp/s1-cache   # NVRTC PTX cache
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(all)
want() { for s in "${stages[@]}"; do [ "$s" = "$1" ] || [ "$s" = all ] && return 0; done; return 1; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown) stages ${stages[*]}"
} 2>&1 | tee -a "$LOG"

# Library folders: every folder of the image's nvidia-* wheels that holds a shared library,
# then the toolkit's.
libdirs=$(python3 - <<'PY'
import glob, os, site, sys
roots = [r for r in dict.fromkeys(site.getsitepackages() + [site.getusersitepackages()] + sys.path) if os.path.isdir(r)]
dirs = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True)):
        if glob.glob(os.path.join(d, "lib*.so*")) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libdirs="$libdirs:$d"; done
export LD_LIBRARY_PATH="${libdirs}:${LD_LIBRARY_PATH:-}"
nvrtc_dir=$(IFS=:; for d in $libdirs; do [ -e "$d/libnvrtc.so.13" ] && { echo "$d"; break; }; done)
[ -n "$nvrtc_dir" ] && export S1_NVRTC_PATH="$nvrtc_dir"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "S1_NVRTC_PATH=${S1_NVRTC_PATH:-<none>}"
  for l in libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcudnn.so.9 libcurand.so.10 libcufft.so.12; do
    f=$(IFS=:; for d in $LD_LIBRARY_PATH; do [ -e "$d/$l" ] && { echo "$d/$l"; break; }; done)
    echo "  $l: ${f:-MISSING}"
  done
} 2>&1 | tee -a "$LOG"

# ONNX Runtime (GPU package; its CPU EP serves onnx-cpu too).
ortdir=/tmp/s1-ort
mkdir -p "$ortdir"
for z in .device/ort/*.xz .device/prov/*.xz; do
  [ -f "$z" ] || continue
  f="$ortdir/$(basename "$z" .xz)"
  [ -f "$f" ] || python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$z" "$f"
done
cp -n .device/ort/*.so "$ortdir/" 2>/dev/null
export ORT_DYLIB_PATH="$ortdir/libonnxruntime.so.1.31.1"

status=0
run() {  # run NAME TIMEOUT_S CMD...
  local name=$1 t=$2; shift 2
  echo "=== $name (timeout ${t}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$t" "$@" 2>&1 | tee -a "$LOG" | tail -n 30
  local rc=${PIPESTATUS[0]}
  echo "=== $name rc=$rc wall=$((SECONDS - t0))s" | tee -a "$LOG"
  [ "$rc" -ne 0 ] && status=1
  return 0
}

if want native; then
  run selftest 60 "$BIN" selftest
  run parity 120 "$BIN" parity tests/fixtures/tiny
  run bench_bf16 90 "$BIN" bench 256 500
  run bench_int8 90 "$BIN" bench --int8 256 500
  # The same with programmatic dependent launch (S1_CUDA_PDL=1, off by default until this has
  # passed): every kernel's blocks may start while the previous kernel finishes.
  S1_CUDA_PDL=1 run selftest_pdl 60 "$BIN" selftest
  S1_CUDA_PDL=1 run parity_pdl 150 "$BIN" parity tests/fixtures/tiny
  S1_CUDA_PDL=1 run bench_bf16_pdl 90 "$BIN" bench 256 500
  S1_CUDA_PDL=1 run bench_int8_pdl 90 "$BIN" bench --int8 256 500
  # Per-kernel device time of one decode frame (kernel nodes of the replayed graph; the launch
  # window skips the prefill and first frames of the warm-up request).
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  if [ -n "$ncu" ]; then
    run ncu_frame 150 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --launch-skip 2500 --launch-count 442 --print-summary per-kernel "$BIN" bench 64 30
  fi
fi
if want torch; then
  REF_FRAMES=300 REF_PROMPT_LEN=256 run torch_reference 220 python3 bench/torch_reference.py eager compile
fi
if want ort; then
  run ort_parity 120 "$BIN" ort-parity tests/fixtures/tiny
  run export_s1mini 240 bench/llm_only_bundle.sh s1-mini fp16 /tmp/s1mini-llm-fp16
  if [ -f /tmp/s1mini-llm-fp16/manifest.json ]; then
    run t2s_onnx_cuda 150 "$BIN" t2s-bench /tmp/s1mini-llm-fp16 onnx-cuda 40 200
    run t2s_cuda 120 "$BIN" t2s-bench /tmp/s1mini-llm-fp16 cuda 40 200
  fi
fi

{
  echo "=== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null))"
  grep -h "^RESULT\|^FAIL\|^ok  \|rc=" "$LOG" | cut -c1-220
  grep -h "frames_per_s\|\"error\"" "$LOG" | grep "^{" | cut -c1-260
} | tee "$OUT/summary.txt"
exit $status
