#!/usr/bin/env bash
# Fetches the pinned ONNX Runtime shared library for the `onnx-cpu` backend.
#
# The library comes from the official `onnxruntime` wheel on PyPI (nothing else is downloaded):
# `pip download --no-deps` puts the wheel in .cache/ort/, and onnxruntime/capi/libonnxruntime.so.*
# is extracted to vendor/onnxruntime/lib/. Prints the library path on stdout, so that
#   export ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)
# works. Idempotent: a second run only prints the path.
set -euo pipefail
ORT_VERSION=1.31.1
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/ort"
dest="$root/vendor/onnxruntime/lib"
lib="$dest/libonnxruntime.so.$ORT_VERSION"

if [ -f "$lib" ]; then
  echo "$lib"
  exit 0
fi

mkdir -p "$cache" "$dest"
if ! ls "$cache"/onnxruntime-"$ORT_VERSION"-*.whl >/dev/null 2>&1; then
  pip=""
  for cand in "$root/.venv/bin/pip" pip3 pip; do
    if command -v "$cand" >/dev/null 2>&1; then pip=$cand; break; fi
  done
  if [ -z "$pip" ]; then
    echo "fetch-ort: pip not found (apt-get install python3-pip, or run scripts/setup-python.sh)" >&2
    exit 1
  fi
  echo "fetch-ort: downloading onnxruntime==$ORT_VERSION wheel from PyPI" >&2
  # The wheel's shared library does not depend on the Python version; ask for a fixed one so that
  # the result is the same whatever python runs pip.
  arch=$(uname -m)
  "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform "manylinux_2_27_$arch" --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    -d "$cache" "onnxruntime==$ORT_VERSION" >&2
fi
whl=$(ls "$cache"/onnxruntime-"$ORT_VERSION"-*.whl | head -n 1)
python3 - "$whl" "$dest" "$ORT_VERSION" <<'PY'
import sys, zipfile, os, shutil
whl, dest, ver = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit(f"fetch-ort: no libonnxruntime.so in {whl}")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".tmp", out)
want = os.path.join(dest, f"libonnxruntime.so.{ver}")
if not os.path.exists(want):
    # Keep the documented file name whatever the wheel called it.
    src = os.path.join(dest, os.path.basename(sorted(names)[-1]))
    shutil.copyfile(src, want)
PY
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
echo "$lib"
