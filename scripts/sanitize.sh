#!/usr/bin/env bash
# Runs the concurrency and fault tests under AddressSanitizer and ThreadSanitizer (nightly).
#   scripts/sanitize.sh                      both sanitizers; tests: the lib's ffi:: unit tests
#                                            (lib-ffi), stress, faults, hostile_callers, and the
#                                            C ABI test program (c-program)
#   SANITIZERS=address scripts/sanitize.sh   one of them
#   TESTS="hostile_callers" scripts/sanitize.sh
# Needs a nightly toolchain (rustup toolchain install nightly) and ORT_DYLIB_PATH for the tests
# that run graphs. Not part of scripts/test.sh: on 2 cores it builds for minutes per sanitizer.
#
# What it can and cannot see (docs/guarantees.md, "Sanitizers"):
# - No -Zbuild-std (that needs the rust-src component): std is not instrumented, so the flag
#   -Cunsafe-allow-abi-mismatch=sanitizer is needed to link. ASan still catches heap misuse in
#   s1-mini's own code (malloc/free are intercepted, our loads and stores instrumented).
# - TSan cannot see std's futex-based Mutex/Condvar/Once, so it reports races on data those
#   guard (false positives); its report is evidence to read, not a pass/fail verdict.
# - The C test program (tests/c/abi_test.c, "c-program" below) links the sanitized
#   libs1_mini.so; the Rust toolchain ships the sanitizer runtimes only as static archives for
#   executables, so the C program is built with the C compiler's own -fsanitize=address, whose
#   runtime (gcc 12's libasan, the same v8 interface) then serves the library too. gcc's libtsan
#   lacks the __tsan_memcpy/memset/memmove entry points that rustc's TSan instrumentation calls,
#   so under TSan the C program is skipped (CC=clang with a matching compiler-rt may work).
# - The default feature `cuda` is left out (--no-default-features): no GPU here.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
toolchain=${TOOLCHAIN:-nightly}
target=$(rustc +"$toolchain" -vV | awk '/^host:/ {print $2}')
sanitizers=${SANITIZERS:-"address thread"}
tests=${TESTS:-"lib-ffi stress faults hostile_callers c-program"}
base=${CARGO_TARGET_DIR:-$root/target}
log_dir=${SANITIZE_LOG_DIR:-$base/sanitize-logs}
mkdir -p "$log_dir"
status=0

for san in $sanitizers; do
  export CARGO_TARGET_DIR="$base/san-$san"
  # --target: the flags reach only target code, never build scripts or proc macros.
  export RUSTFLAGS="-Zsanitizer=$san -Cunsafe-allow-abi-mismatch=sanitizer -Cforce-frame-pointers=yes"
  export RUSTDOCFLAGS="$RUSTFLAGS"
  # ONNX Runtime keeps process-lifetime allocations: leaks are not what this run is for.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0:halt_on_error=1}
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:report_signal_unsafe=0:history_size=4}
  for t in $tests; do
    log="$log_dir/$san-$t.log"
    echo "== $san: $t (log $log)"
    start=$(date +%s)
    if [ "$t" = c-program ] && [ "$san" = thread ] && [ -z "${CC:-}" ]; then
      echo "   skipped: gcc's libtsan cannot serve a rustc-TSan library (set CC to try another)"
      continue
    fi
    if [ "$t" = c-program ]; then
      lib="$CARGO_TARGET_DIR/$target/debug"
      {
        nice cargo +"$toolchain" build --offline --no-default-features --target "$target" --lib &&
          "${CC:-cc}" -std=c11 -g -fsanitize="$san" -Iinclude tests/c/abi_test.c -o "$lib/abi_test_$san" \
            -L"$lib" -ls1_mini -lpthread -Wl,-rpath,"$lib" &&
          "$lib/abi_test_$san" tests/fixtures/tiny
      } >"$log" 2>&1
      rc=$?
      grep -E "^c_abi:" "$log" | sed 's/^/   /'
    else
      if [ "$t" = lib-ffi ]; then which=(--lib); filter=(ffi::); else which=(--test "$t"); filter=(); fi
      nice cargo +"$toolchain" test --offline --no-default-features --target "$target" \
        "${which[@]}" -- --test-threads=2 "${filter[@]}" >"$log" 2>&1
      rc=$?
    fi
    reports=$(grep -c "^==[0-9]*==ERROR: AddressSanitizer\|^WARNING: ThreadSanitizer" "$log")
    echo "   exit $rc, $reports sanitizer reports, $(( $(date +%s) - start )) s"
    grep -m3 "^SUMMARY: .*Sanitizer" "$log" | sed 's/^/   /'
    grep -E "^test result" "$log" | sed 's/^/   /'
    if [ "$rc" != 0 ]; then status=1; fi
  done
done
exit $status
