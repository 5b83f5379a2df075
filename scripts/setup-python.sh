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
echo "setup-python: creating $venv (torch and friends, about a minute)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$req"
"$venv/bin/pip" install -q --no-deps fish-speech==0.1.0
# the codec oracle: dac + audiotools without their pins (audiotools wants protobuf<3.20; onnx needs newer)
"$venv/bin/pip" install -q --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
echo "$want" > "$stamp"
