#!/usr/bin/env bash
# Regenerates include/s1_mini.h with the pinned cbindgen and fails if the committed header differs
# (STYLE.md §16); then compiles the header as C11 and C++17 with -Wall -Wextra -Werror.
#   scripts/check-header.sh          check (CI)
#   scripts/check-header.sh --write  regenerate in place
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CBINDGEN_VERSION=0.29.4

if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version | awk '{print $2}')" != "$CBINDGEN_VERSION" ]; then
  echo "installing cbindgen $CBINDGEN_VERSION"
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cbindgen --quiet --config cbindgen.toml --crate s1-mini --output "$tmp/s1_mini.h"
if [ "${1:-}" = "--write" ]; then
  cp "$tmp/s1_mini.h" include/s1_mini.h
  echo "wrote include/s1_mini.h"
elif ! diff -u include/s1_mini.h "$tmp/s1_mini.h"; then
  echo "include/s1_mini.h is stale: run scripts/check-header.sh --write and commit it" >&2
  exit 1
fi

printf '#include "s1_mini.h"\nint main(void) { return s1_version() == 0; }\n' > "$tmp/c.c"
cc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only "$tmp/c.c"
cp "$tmp/c.c" "$tmp/cpp.cpp"
c++ -std=c++17 -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only "$tmp/cpp.cpp"
echo "header: up to date, compiles as C11 and C++17"
