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

"$root/scripts/fetch-wheel-libs.sh" "nvidia-cuda-nvrtc==$NVRTC_VERSION" \
  "nvidia_cuda_nvrtc-$NVRTC_VERSION-*.whl" "$cache" "$dest" '/lib/libnvrtc[^/]*$' "libnvrtc.so.13"
touch "$dest/.version-$NVRTC_VERSION"
echo "$dest"
