#!/usr/bin/env bash
# Device check of the native CUDA backend (docs/cuda.md): one prepared run on a GPU host.
#
# Built here (CPU host):   cargo build --release --example cuda_check   (feature `cuda` is default)
# Carried to the device:   target/release/examples/cuda_check, vendor/onnxruntime/lib (ORT CPU for
#                          the reference side of the parity check); the tiny bundle, this script
#                          and bench/torch_reference.py are tracked files.
# Run there:               bench/gpu_check.sh [BIN]          (results under $OUT or out/gpu_check)
#
# Steps (each under its own timeout, so the whole run fits one 10-minute device call):
#   1. parity on tests/fixtures/tiny: prefill/fast logits max relative error vs ORT CPU, greedy
#      frames identical to ORT CPU, on-device sampler vs the CPU sampler (same seed), device greedy
#   2. benchmark, S1-mini shapes with random bf16 weights: frames/s of the captured frame graph
#   3. the same with weight-only int8
#   4. bench/torch_reference.py eager + compile on the same card, same run
# The last lines are a table of every RESULT.
set -uo pipefail
BIN=${1:-target/release/examples/cuda_check}
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
export XDG_CACHE_HOME="$OUT/cache"   # NVRTC PTX cache: the first load compiles, later loads read it

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee "$OUT/commit.txt" || true

# NVRTC (libnvrtc.so.13) and cuBLAS come from the image's Python wheels; libcuda from the driver.
libdirs=$(python3 - <<'PY'
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
dirs = []
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "nvidia", "cu*", "lib")):
        if (glob.glob(os.path.join(d, "libnvrtc.so*")) or glob.glob(os.path.join(d, "libcublas*.so*"))) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libdirs="$libdirs:$d"; done
export LD_LIBRARY_PATH="${libdirs}:${LD_LIBRARY_PATH:-}"
nvrtc_dir=$(IFS=:; for d in $libdirs; do [ -e "$d/libnvrtc.so.13" ] && { echo "$d"; break; }; done)
[ -n "$nvrtc_dir" ] && export S1_NVRTC_PATH="$nvrtc_dir"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$OUT/env.txt"
echo "S1_NVRTC_PATH=${S1_NVRTC_PATH:-<none>}" | tee -a "$OUT/env.txt"
ort=$(ls vendor/onnxruntime/lib/libonnxruntime.so.* 2>/dev/null | head -n 1)
[ -n "$ort" ] && export ORT_DYLIB_PATH="$PWD/$ort"

status=0
run() {  # run NAME TIMEOUT_S CMD...
  local name=$1 t=$2; shift 2
  echo "=== $name (timeout ${t}s)"
  local t0=$SECONDS
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "=== $name rc=$rc wall=$((SECONDS - t0))s"
  [ $rc -ne 0 ] && status=1
  return 0
}

run parity 150 "$BIN" parity tests/fixtures/tiny
run bench_bf16 120 "$BIN" bench 256 500
run bench_int8 120 env S1_CUDA_WEIGHTS=int8 "$BIN" bench --int8 256 500
REF_FRAMES=300 REF_PROMPT_LEN=256 run torch_reference 240 python3 bench/torch_reference.py eager compile

echo "=== summary ($(head -n 2 "$OUT/gpu.txt" | tail -n 1))"
grep -h "^RESULT\|^FAIL" "$OUT"/parity.log "$OUT"/bench_bf16.log "$OUT"/bench_int8.log 2>/dev/null
grep -h "frames_per_s" "$OUT"/torch_reference.log 2>/dev/null | cut -c1-200
exit $status
