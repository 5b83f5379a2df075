#!/usr/bin/env bash
# The codec on the CPU (issue #15 item 4) at the real S1-mini shapes, one script on one machine.
# Bundles: random weights (`--random s1-mini`), one fp32 export of this commit quantised to int4
# twice, with the exact codec and with `--codec int8`; INT4_OLD is INT4 with the two decode
# graphs of the export before the Snake nodes (commit f8ad83d), sizes and hashes patched in its
# manifest (run with --no-verify):
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --random s1-mini --out CKPT
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export --checkpoint CKPT --out FP32 --precision fp32
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.quantize --bundle FP32 --out INT4 --precision int4
#   PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.quantize --bundle FP32 --out INT4_C8 --precision int4 --codec int8
# Usage: bench/results/cpu-2026-12-02d/run.sh INT4_OLD INT4 INT4_C8 CODES_431.npy CODES_1.npy OUT_DIR
set -euo pipefail
int4_old=$1 int4=$2 int4_c8=$3 codes=$4 codes1=$5 out=$6
bin=${S1_MINI:-target/release/s1-mini}
mkdir -p "$out"
{ date -u; git rev-parse --short HEAD; grep -m1 'model name' /proc/cpuinfo; nproc; uptime; } > "$out/summary.txt"
# 1. The codec alone: `s1-mini decode` of 431 frames (20.02 s of audio) minus that of 1 frame
#    (the load), process CPU and wall time, default threads (2) and one thread; twice.
for round in 1 2; do
  for b in int4_old int4 int4_c8; do
    for threads in 0 1; do
      for c in "$codes1" "$codes"; do
        /usr/bin/time -f "$b threads=$threads $(basename "$c") wall %e cpu %U %S" \
          "$bin" decode --bundle "${!b}" --codes "$c" --out "$out/$b.wav" --no-verify -q --threads "$threads" \
          2>> "$out/decode-times.txt"
      done
    done
  done
done
uptime >> "$out/summary.txt"
# 2. End to end: 108 frames (5.02 s of audio), 72-token prompt, one-shot and streamed; twice.
for round in 1 2; do
  for b in int4_old int4 int4_c8; do
    "$bin" bench --backend onnx-cpu --bundle "${!b}" --frames 108 --runs 1 --warmup 1 \
      --json "$out/$b-e2e$round.json" > "$out/$b-e2e$round.txt" 2> "$out/$b-e2e$round.log"
    uptime >> "$out/summary.txt"
  done
done
# 3. Context sweep with the codec: 40 frames at 72 / 1,000 / 4,000 prompt tokens, streamed too.
for b in int4 int4_c8; do
  "$bin" bench --backend onnx-cpu --bundle "${!b}" --frames 40 --runs 1 --warmup 0 \
    --prompt-tokens 72,1000,4000 --json "$out/$b-sweep.json" > "$out/$b-sweep.txt" 2> "$out/$b-sweep.log"
  uptime >> "$out/summary.txt"
done
# 4. Several streams (frame loop only): 1, 2, 4 requests at 72 tokens.
"$bin" bench --backend onnx-cpu --bundle "$int4_c8" --frames 64 --runs 1 --warmup 1 --no-stream \
  --streams 1,2,4 --json "$out/int4_c8-streams.json" > "$out/int4_c8-streams.txt" 2> "$out/int4_c8-streams.log"
uptime >> "$out/summary.txt"
# 5. The PyTorch eager peer (fish-speech's step and codec on random weights of the same shapes),
#    with the int8-codec bundle, in one call (run after the rest; writes $out/torch/):
S1_MINI_BIN="$bin" BENCH_OUT="$out/torch" bench/compare_torch.sh --bundle "$int4_c8" --frames 40 --runs 1 \
  --warmup 1 --no-stream > "$out/torch.log" 2>&1
