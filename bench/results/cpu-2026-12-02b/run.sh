#!/usr/bin/env bash
# Concurrent requests at the real S1-mini shapes on onnx-cpu (issue #17 item 3), one script on
# one machine. Bundles: random weights (`--random s1-mini`), exported with this commit's exporter:
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --random s1-mini --out CKPT
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --checkpoint CKPT --out B --precision fp32|int4
# Usage: bench/results/cpu-2026-12-02b/run.sh FP32_BUNDLE INT4_BUNDLE OUT_DIR
set -euo pipefail
fp32=$1 int4=$2 out=$3
bin=${S1_MINI:-target/release/s1-mini}
mkdir -p "$out"
{ date -u; git rev-parse --short HEAD; grep -m1 'model name' /proc/cpuinfo; nproc; uptime; } > "$out/summary.txt"
for b in fp32 int4; do
  dir=${!b}
  "$bin" bench --backend onnx-cpu --bundle "$dir" --frames 64 --runs 2 --warmup 1 --no-stream \
    --streams 1,2,4,8 --json "$out/$b-streams.json" > "$out/$b-streams.txt" 2> "$out/$b-streams.log"
  uptime >> "$out/summary.txt"
done
# A long prompt (a voice reference's length): ~1,000 tokens, one and four requests.
"$bin" bench --backend onnx-cpu --bundle "$int4" --frames 32 --runs 1 --warmup 1 --no-stream \
  --prompt-tokens 1000 --streams 1,4 --json "$out/int4-1000-streams.json" \
  > "$out/int4-1000-streams.txt" 2> "$out/int4-1000-streams.log"
uptime >> "$out/summary.txt"
