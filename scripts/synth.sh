#!/usr/bin/env bash
# The main job on a fresh machine: build the CLI, fetch the ONNX Runtime library from PyPI, and
# synthesise speech. Without --bundle it uses the committed tiny test bundle (random weights: the
# result is noise, not speech; see README "Export a real model").
#
#   scripts/synth.sh --text "Hello from s1-mini." --out hello.wav [--bundle DIR] [any `s1-mini synth` flag]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ort_lib=$(scripts/fetch-ort.sh)
export ORT_DYLIB_PATH="$ort_lib"
echo "synth.sh: building the CLI (release)..." >&2
cargo build --release --quiet --bin s1-mini
args=("$@")
have_bundle=0
for a in "${args[@]}"; do [ "$a" = "--bundle" ] && have_bundle=1; done
if [ "$have_bundle" = 0 ]; then
  args=(--bundle "$root/tests/fixtures/tiny" "${args[@]}")
fi
exec "$root/target/release/s1-mini" synth "${args[@]}"
