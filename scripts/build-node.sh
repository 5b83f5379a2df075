#!/usr/bin/env bash
# Builds the Node addon with cargo alone and places it at bindings/node/s1_mini.node.
#   scripts/build-node.sh [--release]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=debug
args=()
if [ "${1:-}" = "--release" ]; then profile=release; args=(--release); fi
cargo build --quiet -p s1-mini-node "${args[@]}"
target=${CARGO_TARGET_DIR:-$root/target}
case "$(uname -s)" in
  Darwin) lib=libs1_mini_node.dylib ;;
  MINGW*|MSYS*|CYGWIN*) lib=s1_mini_node.dll ;;
  *) lib=libs1_mini_node.so ;;
esac
cp "$target/$profile/$lib" bindings/node/s1_mini.node
echo "bindings/node/s1_mini.node ($profile)"
