#!/usr/bin/env bash
# Creates .venv with the pinned exporter environment (tools/export/requirements.txt) plus the
# fish-speech 0.1.0 reference code (installed --no-deps: its own pins drag in a GPU training stack).
# Idempotent: a second run only checks. Everything comes from PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/tools/export/requirements.txt"
stamp="$venv/.s1mini-requirements.sha256"
want=$(cat "$req" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# PyPI's Linux torch wheel brings CUDA libraries: the environment takes 5.6 GiB, and pip holds about
# 3 GiB of wheels while it installs. Say so up front, since pip's own ENOSPC error names no sizes.
free_mib=$(($(df -Pk "$root" | awk 'NR == 2 { print $4 }') / 1024))
if [ "$free_mib" -lt $((9 * 1024)) ]; then
  echo "setup-python: warning: $free_mib MiB free; the Python environment needs about 7.5 GiB while it installs (5.6 GiB after), the Rust builds about 2 GiB more" >&2
fi
echo "setup-python: creating $venv (torch and friends, about a minute)" >&2
python3 -m venv "$venv"
# No pip cache: it would keep a second copy of the 3 GB of wheels that nothing reads again.
pip=("$venv/bin/pip" install -q --no-cache-dir)
"${pip[@]}" --upgrade pip
"${pip[@]}" -r "$req"
"${pip[@]}" --no-deps fish-speech==0.1.0
# the codec oracle: dac + audiotools without their pins (audiotools wants protobuf<3.20; onnx needs newer)
"${pip[@]}" --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
echo "$want" > "$stamp"
