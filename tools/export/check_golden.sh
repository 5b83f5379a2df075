#!/usr/bin/env bash
# Regenerates the tiny fixture into a temporary directory and fails if any file differs from
# tests/fixtures/tiny/ (byte for byte). Needs .venv (scripts/setup-python.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py="$root/.venv/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$root/tools/export/make_golden.py" --out "$tmp/tiny" 2> "$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
"$py" "$root/tools/export/compare_dirs.py" "$root/tests/fixtures/tiny" "$tmp/tiny"
