#!/usr/bin/env bash
# Every test of the project, on a fresh machine (the README's test command; .ci/run calls it).
# Installs what it needs itself: the Python exporter environment (PyPI), the ONNX Runtime library
# and NVRTC (PyPI wheels), Debian and npm packages for the bindings and packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=never
step() { printf '\n=== %s ===\n' "$*"; }
failures=()
run() { local name=$1; shift; step "$name"; if "$@"; then echo "--- $name: ok"; else echo "--- $name: FAILED"; failures+=("$name"); fi; }

step "setup: Python environment and ONNX Runtime library"
scripts/setup-python.sh
ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)
export ORT_DYLIB_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
# NVRTC (PyPI wheel) lets the CUDA backend's kernel-compile test run without a GPU.
S1_NVRTC_PATH=$(scripts/fetch-nvrtc.sh)
export S1_NVRTC_PATH
echo "S1_NVRTC_PATH=$S1_NVRTC_PATH"

# Verification stamps (src/verify_cache.rs) of the tests' engines go to the clone, not ~/.cache.
export XDG_CACHE_HOME="$root/.cache/xdg"

# The kernel emulator test compiles the CUDA kernels as C++ for the CPU (src/backend/cuda/emulator.rs).
if ! command -v c++ >/dev/null; then
  step "setup: installing g++"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

run "rust: cargo fmt --check" cargo fmt --all -- --check
run "rust: cargo clippy -D warnings" cargo clippy --workspace --all-targets --quiet -- -D warnings
run "rust: cargo test" cargo test --workspace --quiet
run "python: exporter tests (fish-speech oracle)" .venv/bin/python -m pytest -q tools/export/tests
run "golden fixture reproduces" tools/export/check_golden.sh
# Smoke run of every cargo-fuzz target (20 s each, niced); by hand: scripts/fuzz.sh (300 s each).
run "fuzz smoke (scripts/fuzz.sh 20)" env NICE=10 scripts/fuzz.sh 20
if [ -x scripts/test-bindings.sh ]; then
  run "C ABI header, C/C++/C#/Node bindings and examples" scripts/test-bindings.sh
fi
# After the bindings: packages the debug builds they made (scripts/package.sh) and installs each
# package as its users do (CMake/pkg-config, npm, NuGet, Unity), about a minute.
if [ -x scripts/test-packages.sh ]; then
  run "packages: C/C++ (CMake, pkg-config), npm, NuGet, Unity, installed and used" scripts/test-packages.sh
fi

step "summary"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "all test groups passed"
