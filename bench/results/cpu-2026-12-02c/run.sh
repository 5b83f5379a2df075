#!/usr/bin/env bash
# The fp16 KV cache at the real S1-mini shapes on onnx-cpu (issue #14: decode rate at long
# contexts), one script on one machine. Bundles: random weights (`--random s1-mini`), the int4
# bundle quantised twice from one fp32 export of this commit, once per cache type:
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --random s1-mini --out CKPT
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --checkpoint CKPT --out FP32 --precision fp32
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.quantize --bundle FP32 --out INT4 --precision int4 --kv-cache fp16
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.quantize --bundle FP32 --out INT4_KV32 --precision int4 --kv-cache fp32
# Usage: bench/results/cpu-2026-12-02c/run.sh INT4 INT4_KV32 OUT_DIR
set -euo pipefail
int4=$1 int4_kv32=$2 out=$3
bin=${S1_MINI:-target/release/s1-mini}
mkdir -p "$out"
{ date -u; git rev-parse --short HEAD; grep -m1 'model name' /proc/cpuinfo; nproc; uptime; } > "$out/summary.txt"
# Context sweep, one-shot and streamed in full (streamed / one-shot, first chunk), both caches.
for b in int4 int4_kv32; do
  "$bin" bench --backend onnx-cpu --bundle "${!b}" --frames 40 --runs 1 --warmup 1 \
    --prompt-tokens 72,1000,4000 --json "$out/$b-sweep.json" > "$out/$b-sweep.txt" 2> "$out/$b-sweep.log"
  uptime >> "$out/summary.txt"
done
# Several streams: 72-token prompts (1, 2, 4 requests) and ~1,000-token prompts (1, 2).
"$bin" bench --backend onnx-cpu --bundle "$int4" --frames 64 --runs 1 --warmup 1 --no-stream \
  --streams 1,2,4 --json "$out/int4-streams.json" > "$out/int4-streams.txt" 2> "$out/int4-streams.log"
"$bin" bench --backend onnx-cpu --bundle "$int4" --frames 32 --runs 1 --warmup 1 --no-stream \
  --prompt-tokens 1000 --streams 1,2 --json "$out/int4-1000-streams.json" \
  > "$out/int4-1000-streams.txt" 2> "$out/int4-1000-streams.log"
uptime >> "$out/summary.txt"
# Decode rates without a codec thread beside the frame loop (--no-stream), the two caches
# alternated twice: the long-context rate of each cache, paired.
for round in 1 2; do
  for b in int4 int4_kv32; do
    "$bin" bench --backend onnx-cpu --bundle "${!b}" --frames 40 --runs 1 --warmup 0 --no-stream \
      --prompt-tokens 72,1000,4000 --json "$out/$b-ab$round.json" > "$out/$b-ab$round.txt" 2> "$out/$b-ab$round.log"
    uptime >> "$out/summary.txt"
  done
done
