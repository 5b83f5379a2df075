#!/usr/bin/env bash
# Shared by fetch-ort.sh, fetch-ort-gpu.sh and fetch-nvrtc.sh: downloads one pinned wheel from PyPI
# (nothing else is downloaded) into CACHE, unless it is there already, and extracts the shared
# libraries whose path inside the wheel matches REGEX into DEST (flat, by basename; each file is
# written to a temporary name and renamed, so an interrupted run never leaves half a library).
#
#   scripts/fetch-wheel-libs.sh REQUIREMENT WHEEL_GLOB CACHE DEST REGEX REQUIRED_BASENAME
#
# e.g. onnxruntime==1.31.1 'onnxruntime-1.31.1-*.whl' .cache/ort vendor/onnxruntime/lib
#      '^onnxruntime/capi/libonnxruntime\.so' libonnxruntime.so.1.31.1
# Fails (non-zero) when no member named REQUIRED_BASENAME was extracted. Messages go to stderr.
set -euo pipefail
if [ $# -ne 6 ]; then
  echo "usage: $0 REQUIREMENT WHEEL_GLOB CACHE DEST REGEX REQUIRED_BASENAME" >&2
  exit 2
fi
req=$1 glob=$2 cache=$3 dest=$4 regex=$5 required=$6
root=$(cd "$(dirname "$0")/.." && pwd)
name=$(basename "$0")

mkdir -p "$cache" "$dest"
# shellcheck disable=SC2086 # the glob is meant to expand
if ! ls "$cache"/$glob >/dev/null 2>&1; then
  pip=""
  for cand in "$root/.venv/bin/pip" pip3 pip; do
    if command -v "$cand" >/dev/null 2>&1; then pip=$cand; break; fi
  done
  if [ -z "$pip" ]; then
    echo "$name: pip not found (apt-get install python3-pip, or run scripts/setup-python.sh)" >&2
    exit 1
  fi
  echo "$name: downloading $req wheel from PyPI" >&2
  # The libraries do not depend on the Python version; ask for a fixed one so that the result is
  # the same whatever python runs pip.
  arch=$(uname -m)
  "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform "manylinux_2_27_$arch" --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    -d "$cache" "$req" >&2
fi
# shellcheck disable=SC2086
whl=$(ls "$cache"/$glob | head -n 1)
python3 - "$whl" "$dest" "$regex" "$required" "$name" <<'PY'
import os, re, shutil, sys, zipfile
whl, dest, regex, required, name = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if re.search(regex, n)]
    if not any(os.path.basename(n) == required for n in names):
        sys.exit(f"{name}: no {required} in {whl} (members matching {regex!r}: {names})")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".tmp", out)
PY
