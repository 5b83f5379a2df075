#!/usr/bin/env bash
# Writes an LLM-only bundle of random weights at S1-mini's real shapes (or `tiny`) for the
# transformer benchmarks on a GPU host: no fish-speech needed (the codec is left out), so it runs
# with the Python that a GPU image already has (torch, onnx, safetensors, tiktoken, numpy).
#
#   bench/llm_only_bundle.sh KIND PRECISION OUT      KIND = s1-mini | tiny, PRECISION = fp32 | fp16
#
# The manifest gets codec metadata with the S1 codec's rates and the model's codebooks but no
# codec graphs, so the engine loads it and `cuda_check t2s-bench` times the transformer alone
# (synthesis needs a full bundle).
set -euo pipefail
kind=$1 precision=$2 out=$3
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
ck="$out.ckpt"
rm -rf "$ck" "$out"
PYTHONPATH="$root/tools/export" "$py" -c "
import sys
from pathlib import Path
from s1mini_export.random_checkpoint import write_random_checkpoint
write_random_checkpoint('$kind', 0, Path('$ck'), log=lambda m: print(m, file=sys.stderr), with_codec=False)
"
PYTHONPATH="$root/tools/export" "$py" -m s1mini_export --checkpoint "$ck" --out "$out" \
  --precision "$precision" --parts llm
rm -rf "$ck"
"$py" - "$out/manifest.json" <<'PY'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
k = m["model"]["num_codebooks"]
m["codec"] = {
    "sample_rate_hz": 44100, "frame_samples": 2048, "num_codebooks": k,
    # the semantic codebook, then the residual ones (what the fast head covers)
    "codebook_sizes": [m["model"]["codebook_size"]] + [m["fast"]["logit_rows"]] * (k - 1),
    "receptive_field_frames": 24, "max_decode_frames": 512,
}
json.dump(m, open(p, "w"), indent=1)
PY
echo "$out"
