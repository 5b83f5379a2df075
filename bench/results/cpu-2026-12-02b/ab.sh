#!/usr/bin/env bash
# One request alone, before and after batching (format 2 at e33130d vs format 3 at this commit),
# alternated on one machine: int4, 72-token prompt, 64 frames.
# Usage: ab.sh OLD_BIN OLD_BUNDLE NEW_BIN NEW_BUNDLE OUT_DIR
set -euo pipefail
old_bin=$1 old=$2 new_bin=$3 new=$4 out=$5
mkdir -p "$out"
for round in 1 2 3; do
  for side in old new; do
    bin=${side}_bin; dir=${!side}
    "${!bin}" bench --backend onnx-cpu --bundle "$dir" --frames 64 --runs 2 --warmup 1 --no-stream \
      > "$out/ab-$side-$round.txt" 2>/dev/null
    printf '%s round %s: %s\n' "$side" "$round" "$(grep 'frames/s (decode)' "$out/ab-$side-$round.txt")" | tee -a "$out/ab-summary.txt"
  done
done
