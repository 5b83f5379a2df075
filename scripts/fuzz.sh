#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 300), one after the other, and
# prints a table: target, seconds, executions, corpus size, result. A crash stops that target,
# leaves the input in fuzz/artifacts/<target>/ and makes the script exit 1.
#
#   scripts/fuzz.sh                      # by hand: 300 s per target
#   scripts/fuzz.sh 20                   # CI smoke: 20 s per target
#   FUZZ_TARGETS="tokenizer" scripts/fuzz.sh 60
#   NICE=19 scripts/fuzz.sh 60           # on a shared machine
#   fuzz/target/x86_64-unknown-linux-gnu/release/c_abi fuzz/artifacts/c_abi/crash-…   # replay
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, installed when missing) and, because only stable
# Rust is installed, RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes (sanitizer-coverage
# instrumentation). `-s none`: no AddressSanitizer (a clean ASan build needs nightly's build-std
# and rust-src; the Rust code is memory-safe outside ffi/, and the C ABI runs under valgrind in
# scripts/test-bindings.sh). Debug assertions and overflow checks are on.
# Seeds: fuzz/seeds/<target>/ (committed) are copied into the working corpus fuzz/corpus/<target>/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
secs=${1:-300}
all=$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | tail -n +2)
targets=${FUZZ_TARGETS:-$all}
export RUSTC_BOOTSTRAP=1
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$("$root/scripts/fetch-ort.sh")
  export ORT_DYLIB_PATH
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
nice_cmd=(nice -n "${NICE:-0}")

# Build every target once, then run the binaries (cargo fuzz run would rebuild on each call).
if [ "$targets" = "$(echo $all)" ] || [ "$targets" = "$all" ]; then
  "${nice_cmd[@]}" cargo fuzz build -s none -O --debug-assertions
else
  for t in $targets; do "${nice_cmd[@]}" cargo fuzz build -s none -O --debug-assertions "$t"; done
fi
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
status=0
rows=()
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
  max_len=4096
  [ "$t" = manifest ] && max_len=65536
  log=$(mktemp)
  result=ok
  # -rss_limit_mb: runaway memory is a failure; -timeout: so is one input running 30 s.
  if ! "${nice_cmd[@]}" "$bin/$t" "corpus/$t" -max_total_time="$secs" -timeout=30 \
      -rss_limit_mb=4096 -max_len="$max_len" -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    result="CRASH (input in fuzz/artifacts/$t/)"
    status=1
    tail -40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "corpus/$t" -type f | wc -l)
  rows+=("$(printf '%-10s %5ss %10s execs  cov %5s  corpus %5s  %s' "$t" "$secs" "${execs:-?}" "${cov:-?}" "$corpus" "$result")")
  rm -f "$log"
done
printf '\n--- fuzz summary\n'
printf '%s\n' "${rows[@]}"
exit $status
