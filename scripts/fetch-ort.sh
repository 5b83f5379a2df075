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

"$root/scripts/fetch-wheel-libs.sh" "onnxruntime==$ORT_VERSION" "onnxruntime-$ORT_VERSION-*.whl" \
  "$cache" "$dest" '^onnxruntime/capi/libonnxruntime\.so' "libonnxruntime.so.$ORT_VERSION"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
echo "$lib"
