#!/usr/bin/env bash
# Builds the Node addon with cargo alone and places it at bindings/node/s1-mini.<platform>.node,
# the name the generated loader (bindings/node/binding.js) looks for beside itself.
#   scripts/build-node.sh [--release]
# `napi build --platform` (scripts/package.sh --napi) builds the same addon with @napi-rs/cli and
# also regenerates binding.js and binding.d.ts; it compiles every dependency again for its
# explicit --target, so the tests use this cargo-only build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=debug
args=()
if [ "${1:-}" = "--release" ]; then profile=release; args=(--release); fi
cargo build --quiet -p s1-mini-node "${args[@]}"
target=${CARGO_TARGET_DIR:-$root/target}
# napi-rs platform names (its platformArchABI), as in bindings/node/package.json's napi.targets.
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) platform=linux-x64-gnu lib=libs1_mini_node.so ;;
  Linux-aarch64) platform=linux-arm64-gnu lib=libs1_mini_node.so ;;
  Darwin-arm64) platform=darwin-arm64 lib=libs1_mini_node.dylib ;;
  Darwin-x86_64) platform=darwin-x64 lib=libs1_mini_node.dylib ;;
  MINGW*-x86_64|MSYS*-x86_64|CYGWIN*-x86_64) platform=win32-x64-msvc lib=s1_mini_node.dll ;;
  *) echo "build-node.sh: no napi-rs platform name for $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac
if [ "$platform" = linux-x64-gnu ] && ldd --version 2>&1 | grep -qi musl; then platform=linux-x64-musl; fi
rm -f bindings/node/s1_mini.node
cp "$target/$profile/$lib" "bindings/node/s1-mini.$platform.node"
echo "bindings/node/s1-mini.$platform.node ($profile)"
