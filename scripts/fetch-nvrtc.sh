#!/usr/bin/env bash
# Fetches the pinned NVRTC shared library (CUDA 13) so that the kernel-compile test can run on a
# host without a GPU or a CUDA toolkit.
#
# NVRTC comes from NVIDIA's PyPI wheel `nvidia-cuda-nvrtc` (nothing else is downloaded):
# `pip download --no-deps` puts the wheel in .cache/nvrtc/, and libnvrtc.so.13 plus
# libnvrtc-builtins.so.* are extracted to vendor/nvrtc/lib/. Prints that directory on stdout, so
#   export S1_NVRTC_PATH=$(scripts/fetch-nvrtc.sh)
# works. Idempotent: a second run only prints the directory.
set -euo pipefail
NVRTC_VERSION=13.0.88
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/nvrtc"
dest="$root/vendor/nvrtc/lib"

if [ -f "$dest/libnvrtc.so.13" ] && [ -f "$dest/.version-$NVRTC_VERSION" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache" "$dest"
if ! ls "$cache"/nvidia_cuda_nvrtc-"$NVRTC_VERSION"-*.whl >/dev/null 2>&1; then
  pip=""
  for cand in "$root/.venv/bin/pip" pip3 pip; do
    if command -v "$cand" >/dev/null 2>&1; then pip=$cand; break; fi
  done
  if [ -z "$pip" ]; then
    echo "fetch-nvrtc: pip not found (apt-get install python3-pip)" >&2
    exit 1
  fi
  echo "fetch-nvrtc: downloading nvidia-cuda-nvrtc==$NVRTC_VERSION wheel from PyPI" >&2
  arch=$(uname -m)
  "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform "manylinux_2_27_$arch" --platform "manylinux_2_28_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    -d "$cache" "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
fi
whl=$(ls "$cache"/nvidia_cuda_nvrtc-"$NVRTC_VERSION"-*.whl | head -n 1)
python3 - "$whl" "$dest" <<'PY'
import os, shutil, sys, zipfile
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if "/lib/" in n and os.path.basename(n).startswith("libnvrtc")]
    if not any(os.path.basename(n) == "libnvrtc.so.13" for n in names):
        sys.exit(f"fetch-nvrtc: no libnvrtc.so.13 in {whl}: {names}")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".tmp", out)
PY
touch "$dest/.version-$NVRTC_VERSION"
echo "$dest"
