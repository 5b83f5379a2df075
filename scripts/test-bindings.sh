#!/usr/bin/env bash
# Builds the C ABI library and every binding, then runs their tests and examples:
#   header drift + C11/C++17 compile, C ABI, C++ and C# tests (each plain and under valgrind
#   memcheck; C# with mono's interpreter there, see docs/guarantees.md), Node tests (node --test),
#   and the c/cpp/csharp/node examples (one WAV each, checked). Installs its own Debian packages
#   (mono, valgrind, compilers) when missing.
# Called by scripts/test.sh; runs alone too. The tiny bundle is tests/fixtures/tiny (or
# $S1_TEST_BUNDLE); without one, only the tests that need no bundle run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=never
step() { printf '\n--- bindings: %s\n' "$*"; }
failures=()
passed=0
run() {
  local name=$1
  shift
  step "$name"
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $name"; failures+=("$name"); fi
}

# --- dependencies (idempotent) ---
need=()
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
command -v valgrind >/dev/null || need+=(valgrind)
command -v mcs >/dev/null || need+=(mono-mcs)
command -v mono >/dev/null || need+=(mono-runtime)
command -v node >/dev/null || need+=(nodejs)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)
  export ORT_DYLIB_PATH
fi

bundle=${S1_TEST_BUNDLE:-$root/tests/fixtures/tiny}
if [ -f "$bundle/manifest.json" ]; then
  bundle_args=("$bundle")
  export S1_TEST_BUNDLE=$bundle
else
  echo "skipped: bundle tests and examples (no bundle at $bundle)"
  bundle_args=()
fi

target=${CARGO_TARGET_DIR:-$root/target}
out=$target/bindings
mkdir -p "$out"
lib=$target/debug
link=(-L"$lib" -ls1_mini -lpthread -Wl,-rpath,"$lib")

run "header is generated from src/ffi and compiles (C11, C++17)" scripts/check-header.sh
step "build libs1_mini (cdylib)"
cargo build --quiet --lib

# --- C ---
run "C ABI test: build" cc -std=c11 -Wall -Wextra -Werror -g -Iinclude tests/c/abi_test.c -o "$out/abi_test" "${link[@]}"
run "C ABI test" "$out/abi_test" "${bundle_args[@]}"
run "C ABI test under valgrind memcheck (0 errors, 0 definite/indirect leaks)" \
  valgrind --quiet --tool=memcheck --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  "$out/abi_test" "${bundle_args[@]}"

# --- C++ ---
run "C++ binding test: build" c++ -std=c++17 -Wall -Wextra -Werror -g -Iinclude -Ibindings/cpp \
  bindings/cpp/tests/s1_mini_test.cpp -o "$out/cpp_test" "${link[@]}"
run "C++ binding compiles without exceptions" sh -c \
  "printf '#include \"s1_mini.hpp\"\nint main() { return s1::Engine::create(s1::EngineConfig(\"x\")).ok(); }\n' > '$out/noexc.cpp' &&
   c++ -std=c++17 -fno-exceptions -Wall -Wextra -Werror -Iinclude -Ibindings/cpp -fsyntax-only '$out/noexc.cpp'"
run "C++ binding test" "$out/cpp_test" "${bundle_args[@]}"
run "C++ binding test under valgrind memcheck (0 errors, 0 definite/indirect leaks)" \
  valgrind --quiet --tool=memcheck --suppressions=tests/c/valgrind.supp --leak-check=full \
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  "$out/cpp_test" "${bundle_args[@]}"

# --- C# ---
run "C# binding test: build (mcs)" mcs -warnaserror -nologo -out:"$out/BindingTests.exe" \
  bindings/csharp/S1Mini/*.cs bindings/csharp/tests/BindingTests.cs
run "C# binding test (mono)" env LD_LIBRARY_PATH="$lib" mono --debug "$out/BindingTests.exe" "${bundle_args[@]}"
# mono's JIT cannot run under valgrind (it jumps to 0 in mono_jit_exec); its interpreter can.
# valgrind-mono.supp hides only reports whose top frame is in mono-sgen itself.
run "C# binding test under valgrind memcheck (mono --interpreter; 0 errors, 0 definite/indirect leaks)" \
  env LD_LIBRARY_PATH="$lib" valgrind --quiet --tool=memcheck --suppressions=tests/c/valgrind.supp \
  --suppressions=bindings/csharp/tests/valgrind-mono.supp --leak-check=full \
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  mono --interpreter --debug "$out/BindingTests.exe" "${bundle_args[@]}"

# --- Node ---
run "Node addon: build" scripts/build-node.sh
run "Node tests (node --test)" node --test bindings/node/__test__/

# --- examples: each writes a WAV ---
wav_ok() { python3 - "$1" <<'PY'
import sys, wave
with wave.open(sys.argv[1]) as w:
    n, rate = w.getnframes(), w.getframerate()
print(f"{sys.argv[1]}: {n} frames at {rate} Hz")
sys.exit(0 if n > 0 and rate == 44100 else 1)
PY
}
if [ ${#bundle_args[@]} -gt 0 ]; then
  text="Hello from s1-mini."
  run "example c: build" cc -std=c11 -Wall -Wextra -Werror -Iinclude examples/c/synth.c -o "$out/synth_c" "${link[@]}"
  run "example c" "$out/synth_c" "$bundle" "$out/c.wav" "$text"
  run "example c: wav" wav_ok "$out/c.wav"
  run "example cpp: build" c++ -std=c++17 -Wall -Wextra -Werror -Iinclude -Ibindings/cpp examples/cpp/synth.cpp \
    -o "$out/synth_cpp" "${link[@]}"
  run "example cpp" "$out/synth_cpp" "$bundle" "$out/cpp.wav" "$text"
  run "example cpp: wav" wav_ok "$out/cpp.wav"
  run "example csharp: build" mcs -warnaserror -nologo -out:"$out/Synth.exe" bindings/csharp/S1Mini/*.cs examples/csharp/Synth.cs
  run "example csharp" env LD_LIBRARY_PATH="$lib" mono "$out/Synth.exe" "$bundle" "$out/csharp.wav" "$text"
  run "example csharp: wav" wav_ok "$out/csharp.wav"
  run "example node" node examples/node/synth.js "$bundle" "$out/node.wav" "$text"
  run "example node: wav" wav_ok "$out/node.wav"
fi

step "summary"
echo "bindings: ${passed} passed, ${#failures[@]} failed"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
