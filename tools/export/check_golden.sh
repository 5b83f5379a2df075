#!/usr/bin/env bash
# Regenerates the tiny fixture into a temporary directory and fails if any file differs from
# tests/fixtures/tiny/: byte for byte, except float arrays (.npy), which must agree within a stated
# relative tolerance (compare_dirs.py: FLOAT_RTOL, 1e-5) because float kernels differ in the last bits
# between CPUs. Needs .venv (scripts/setup-python.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py="$root/.venv/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$root/tools/export/make_golden.py" --out "$tmp/tiny" 2> "$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
"$py" "$root/tools/export/compare_dirs.py" "$root/tests/fixtures/tiny" "$tmp/tiny"
