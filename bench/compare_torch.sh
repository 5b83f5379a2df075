#!/usr/bin/env bash
# Runs `s1-mini bench` and the PyTorch reference (bench/torch_reference.py) on the same shapes, one
# after the other in this one call on this machine, and prints frames/s of each and the ratios.
#
#   bench/compare_torch.sh [--bundle DIR] [--frames N] [--runs N] [any other `s1-mini bench` flag]
#
# Default backend: --backend onnx-cpu (pass --backend/--all-backends to change it).
# Environment:
#   TORCH_MODES   reference modes, space-separated (default: "eager codec" on CPU; "eager compile
#                 compile-opt codec" where torch sees CUDA; codec = the codec decoder alone). torch.compile's reduce-overhead mode
#                 (CUDA graphs) is what fish-speech's --compile uses; on CPU it is skipped unless
#                 named here.
#   PYTHON        interpreter with torch (default .venv/bin/python, made by scripts/setup-python.sh)
#   S1_MINI_BIN   s1-mini executable (default: cargo build --release, then target/release/s1-mini)
#   BENCH_OUT     output directory (default target/bench/<UTC time>)
#   REF_THREADS   torch CPU threads (default: torch's default, one per core)
# The reference runs the prompt length and frame count that s1-mini bench used (read from its JSON).
# Writes s1-mini.json, s1-mini.txt, torch.jsonl and summary.txt into BENCH_OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

args=("$@")
has_backend=0
for a in "${args[@]}"; do
  case "$a" in --backend|--backend=*|--all-backends) has_backend=1 ;; esac
done
[ "$has_backend" = 1 ] || args=(--backend onnx-cpu "${args[@]}")

out=${BENCH_OUT:-target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)
  export ORT_DYLIB_PATH
fi
bin=${S1_MINI_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/s1-mini
fi
py=${PYTHON:-.venv/bin/python}
if [ ! -x "$py" ]; then
  scripts/setup-python.sh
fi
has_cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$has_cuda" = 1 ]; then
  modes=${TORCH_MODES:-eager compile compile-opt codec}
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "cuda")
else
  modes=${TORCH_MODES:-eager codec}
  card="none"
fi

{
  echo "date (UTC)   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git commit   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
  echo "cpu          $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc) logical"
  echo "gpu          $card"
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews both sides)"
  echo "s1-mini      $bin bench ${args[*]}"
  echo "torch        $("$py" -c 'import torch; print(torch.__version__)'), modes: $modes"
} | tee "$out/summary.txt"

echo "== s1-mini bench" >&2
"$bin" bench "${args[@]}" --json "$out/s1-mini.json" | tee "$out/s1-mini.txt"

read -r frames prompt < <("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["workload"]["frames"], r["workload"]["prompt_tokens"])' "$out/s1-mini.json")

echo "== torch reference: $modes, $frames frames, prompt $prompt tokens" >&2
: > "$out/torch.jsonl"
for m in $modes; do
  REF_FRAMES=$frames REF_PROMPT_LEN=$prompt REF_CODEC_FRAMES=$frames "$py" bench/torch_reference.py "$m" | tee -a "$out/torch.jsonl"
done

"$py" - "$out/s1-mini.json" "$out/torch.jsonl" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
s1 = json.load(open(sys.argv[1]))
ref = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
llm = [r for r in ref if r.get("kind") == "llm"]
w = s1["workload"]
print(f"\nframes/s after the prefill frame ({w['frames']} frames, prompt {w['prompt_tokens']} tokens)")
for r in llm:
    print(f"  torch {r['mode']:<12} {r['frames_per_s']:>9.2f}  ({r['device']}, {r['frames']} frames)")
for b in s1["results"]:
    f = b["frames_per_s"]
    print(f"  s1-mini {b['backend']:<10} {f['median']:>9.2f}  [{f['min']:.2f}-{f['max']:.2f}] median of {w['runs']}")
print("\nratio s1-mini / torch (frames/s, medians)")
for b in s1["results"]:
    for r in llm:
        if r["frames_per_s"] > 0:
            print(f"  {b['backend']} / torch {r['mode']}: {b['frames_per_s']['median'] / r['frames_per_s']:.2f}x")
for r in ref:
    if r.get("kind") == "error":
        print(f"  torch {r['what']}: error {r['error'][:200]}")
codec = [r for r in ref if r.get("kind") == "codec"]
if codec:
    print("\ncodec decode of the same frames (ms, medians; torch: bf16 autocast on CUDA, fp32 on CPU)")
for c in codec:
    print(f"  torch codec {c['mode']:<20} {c['decode_ms']:>9.1f}  ({c['frames']} frames)")
    for b in s1["results"]:
        m = b["codec_ms"]["median"]
        if m > 0:
            print(f"  s1-mini {b['backend']:<18} {m:>9.1f}  ratio torch / s1-mini {c['decode_ms'] / m:.2f}x")
EOF
echo "wrote $out" >&2
