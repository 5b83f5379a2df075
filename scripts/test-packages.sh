#!/usr/bin/env bash
# Builds the packages (scripts/package.sh, reusing the debug build the other tests made) and uses
# each one the way its users do, offline, with no ORT_DYLIB_PATH or LD_LIBRARY_PATH:
#   C/C++   examples/cpp + examples/c built by CMake through find_package(s1_mini CONFIG) against
#           the install tree, examples/c through pkg-config against a moved copy of it; SONAME,
#           version file, and an ONNX Runtime of the wrong version (a message, no crash)
#   npm     binding.js/binding.d.ts regenerated with @napi-rs/cli's generators and diffed;
#           the main and linux-x64-gnu tarballs installed into a scratch project (npm --offline),
#           examples/node/synth.js run with require('s1-mini'), a TypeScript consumer type-checked
#   NuGet   the .nupkg's layout and .nuspec, a C# consumer compiled against its netstandard2.0
#           assembly and run under mono beside runtimes/linux-x64/native/
#   Unity   the UPM folder and tarball validated (package.json, a .meta for every asset,
#           plugin platform settings), its C# compiled with mcs against a UnityEngine stub
#           (also as iOS: __Internal), the ring buffer tested, S1MiniSpeaker run under mono
# Called by scripts/test.sh; runs alone too. Bundle: tests/fixtures/tiny (or $S1_TEST_BUNDLE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=never
step() { printf '\n--- packages: %s\n' "$*"; }
failures=()
passed=0
run() {
  local name=$1
  shift
  step "$name"
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $name"; failures+=("$name"); fi
}

need=()
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v patchelf >/dev/null || need+=(patchelf)
command -v unzip >/dev/null || need+=(unzip)
command -v mcs >/dev/null || need+=(mono-mcs)
command -v mono >/dev/null || need+=(mono-runtime)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
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
bundle=$(cd "$bundle" 2>/dev/null && pwd || echo "$bundle")
if [ ! -f "$bundle/manifest.json" ]; then
  echo "skipped: the package tests need a bundle (none at $bundle)"
  exit 0
fi
target=${CARGO_TARGET_DIR:-$root/target}
pkgs=$target/packages
work=$target/package-tests
rm -rf "$work"
mkdir -p "$work"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
tree=$pkgs/s1_mini-$version-linux-x64
text="Hello from the packages."
# Every consumer below runs like this: the library must find ONNX Runtime beside itself.
bare() { env -u ORT_DYLIB_PATH -u LD_LIBRARY_PATH "$@"; }
wav_ok() { python3 - "$1" <<'PY'
import sys, wave
with wave.open(sys.argv[1]) as w:
    n, rate = w.getnframes(), w.getframerate()
print(f"{sys.argv[1]}: {n} frames at {rate} Hz")
sys.exit(0 if n > 0 and rate == 44100 else 1)
PY
}

run "scripts/package.sh (debug build)" scripts/package.sh
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi

# --- C/C++ -----------------------------------------------------------------------------------
c_tree_layout() {
  local so=$tree/lib/libs1_mini.so.$version
  [ "$(readlink "$tree/lib/libs1_mini.so")" = libs1_mini.so.0 ] &&
    [ "$(readlink "$tree/lib/libs1_mini.so.0")" = "libs1_mini.so.$version" ] &&
    readelf -d "$so" | grep -q 'Library soname: \[libs1_mini.so.0\]' &&
    ls "$tree"/lib/libonnxruntime.so.* >/dev/null &&
    [ -f "$tree/include/s1_mini.h" ] && [ -f "$tree/include/s1_mini.hpp" ] &&
    cmp -s include/s1_mini.h "$tree/include/s1_mini.h"
}
run "C/C++: install tree (SONAME libs1_mini.so.0, links, header, ONNX Runtime beside)" c_tree_layout
cmake_build() {
  cmake -S tests/packages/cmake -B "$work/cmake" -DCMAKE_PREFIX_PATH="$tree" -DCMAKE_BUILD_TYPE=Release \
    -DS1_EXAMPLES="$root/examples" >"$work/cmake.log" 2>&1 &&
    cmake --build "$work/cmake" -j2 >>"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; return 1; }
  grep 'ONNX Runtime:' "$work/cmake.log"
  readelf -d "$work/cmake/synth_cpp" | grep -q 'Shared library: \[libs1_mini.so.0\]'
}
run "C/C++: examples/cpp and examples/c built by CMake (find_package(s1_mini 0.1 CONFIG), s1_mini::s1_mini)" cmake_build
run "C/C++: CMake example cpp runs" bare "$work/cmake/synth_cpp" "$bundle" "$work/cmake-cpp.wav" "$text"
run "C/C++: CMake example cpp: wav" wav_ok "$work/cmake-cpp.wav"
run "C/C++: CMake example c runs" bare "$work/cmake/synth_c" "$bundle" "$work/cmake-c.wav" "$text"
run "C/C++: CMake example c: wav" wav_ok "$work/cmake-c.wav"
cmake_refuses_major() {
  ! cmake -S tests/packages/cmake -B "$work/cmake-v1" -DCMAKE_PREFIX_PATH="$tree" -DS1_WANT_VERSION=1.0 \
    -DS1_EXAMPLES="$root/examples" >"$work/cmake-v1.log" 2>&1 &&
    grep -q 'version: 0.1.0' "$work/cmake-v1.log"
}
run "C/C++: find_package(s1_mini 1.0) refuses 0.1.0 (version file)" cmake_refuses_major
# pkg-config against a moved copy: the .pc is relocatable.
moved=$work/moved/s1_mini
mkdir -p "$work/moved"
cp -a "$tree" "$moved"
pc() { PKG_CONFIG_PATH=$moved/lib/pkgconfig pkg-config "$@"; }
pkgconfig_build() {
  [ "$(pc --modversion s1_mini)" = "$version" ] || return 1
  echo "pkg-config --cflags --libs s1_mini: $(pc --cflags --libs s1_mini)"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Wextra -Werror examples/c/synth.c -o "$work/synth_c_pc" $(pc --cflags --libs s1_mini) \
    -Wl,-rpath,"$(pc --variable=libdir s1_mini)"
}
run "C: examples/c built through pkg-config (moved install tree)" pkgconfig_build
run "C: pkg-config example runs" bare "$work/synth_c_pc" "$bundle" "$work/pc-c.wav" "$text"
run "C: pkg-config example: wav" wav_ok "$work/pc-c.wav"
wrong_ort() {
  local fake=$work/fake-ort/lib
  mkdir -p "$fake"
  cp -a "$moved/lib/libs1_mini.so"* "$fake/"
  cc -shared -fPIC -o "$fake/$(basename "$moved"/lib/libonnxruntime.so.*)" tests/packages/fake_onnxruntime.c
  cc -std=c11 examples/c/synth.c -o "$work/synth_c_fake" -Iinclude -L"$fake" -ls1_mini -Wl,-rpath,"$fake"
  local rc=0
  bare "$work/synth_c_fake" "$bundle" "$work/fake.wav" "$text" >"$work/fake.log" 2>&1 || rc=$?
  cat "$work/fake.log"
  [ "$rc" = 1 ] && grep -q 'S1_STATUS_BACKEND_UNAVAILABLE' "$work/fake.log" && grep -q "1.10.0" "$work/fake.log"
}
run "C: an ONNX Runtime of the wrong version beside the library gives a message, no crash" wrong_ort

# --- npm -------------------------------------------------------------------------------------
napi_generated() {
  # cargo rebuilds only the addon crate (napi-build reruns on these variables), and napi-derive
  # writes its type definitions into the folder.
  local typedef=$work/napi-typedef
  mkdir -p "$typedef"
  NAPI_TYPE_DEF_TMP_FOLDER=$typedef NAPI_FORCE_BUILD_S1_MINI_NODE=$(date +%s%N) \
    cargo build --quiet -p s1-mini-node &&
    node tests/packages/napi_generate.mjs bindings/node/node_modules/@napi-rs/cli/dist/index.js \
      bindings/node/package.json "$typedef" "$work/napi-gen" &&
    diff -u bindings/node/binding.d.ts "$work/napi-gen/binding.d.ts" &&
    diff -u bindings/node/binding.js "$work/napi-gen/binding.js"
}
run "npm: committed binding.js/binding.d.ts equal what @napi-rs/cli generates from the #[napi] items" napi_generated
app=$work/npm-app
npm_install() {
  mkdir -p "$app"
  (cd "$app" && printf '{ "name": "s1-mini-consumer", "version": "1.0.0", "private": true }\n' > package.json &&
    npm install --offline --no-audit --no-fund --loglevel=error \
      "$pkgs/npm/s1-mini-$version.tgz" "$pkgs/npm/s1-mini-linux-x64-gnu-$version.tgz")
  [ -f "$app/node_modules/s1-mini-linux-x64-gnu/s1-mini.linux-x64-gnu.node" ] &&
    ls "$app"/node_modules/s1-mini-linux-x64-gnu/libonnxruntime.so.* >/dev/null &&
    ! ls "$app"/node_modules/s1-mini/*.node 2>/dev/null
}
run "npm: main + linux-x64-gnu tarballs install offline into a scratch project" npm_install
npm_example() {
  sed "s|require('../../bindings/node')|require('s1-mini')|" examples/node/synth.js > "$app/synth.js"
  grep -q "require('s1-mini')" "$app/synth.js" &&
    (cd "$app" && bare node synth.js "$bundle" "$work/node.wav" "$text") &&
    (cd "$app" && node -e '
      require("s1-mini");
      const addon = Object.keys(require.cache).find((k) => k.endsWith(".node"));
      console.log("addon loaded from", addon);
      process.exit(addon.includes("node_modules/s1-mini-linux-x64-gnu/") ? 0 : 1)')
}
run "npm: examples/node/synth.js with require('s1-mini') (addon from the platform package)" npm_example
run "npm: example: wav" wav_ok "$work/node.wav"
typescript_consumer() {
  cat > "$app/use.ts" <<'TS'
import { Engine, Voice, version, SynthOptions, EngineOptions, AudioStream, S1Error } from 's1-mini'
export async function main (): Promise<void> {
  const options: EngineOptions = { bundleDir: 'bundle', verifyHashes: true }
  const engine: Engine = await Engine.load(options)
  const voice: Voice = Voice.load('voice.s1v')
  const params: SynthOptions = { maxFrames: 10, voices: [voice], seed: 1 }
  const pcm: Float32Array = await engine.synthesize('Hi.', params, new AbortController().signal)
  const stream: AudioStream = engine.stream('Hi.', params)
  for await (const chunk of stream) console.log(chunk.length, pcm.length, version(), engine.sampleRateHz)
  try { await engine.synthesize('x') } catch (e) { console.log((e as S1Error).code) }
}
TS
  printf '{ "compilerOptions": { "strict": true, "noEmit": true, "target": "es2020", "lib": ["es2020", "dom"], "types": [], "module": "commonjs", "moduleResolution": "node10", "ignoreDeprecations": "6.0" }, "files": ["use.ts"] }\n' > "$app/tsconfig.json"
  (cd "$app" && node "$root/bindings/node/node_modules/typescript/bin/tsc" -p .)
}
run "npm: a TypeScript consumer type-checks against the installed typings (tsc --strict)" typescript_consumer

# --- NuGet -----------------------------------------------------------------------------------
nupkg=$pkgs/nuget/S1Mini.$version.nupkg
nug=$work/nuget
nuget_layout() {
  mkdir -p "$nug/pkg"
  unzip -q "$nupkg" -d "$nug/pkg"
  python3 - "$nug/pkg" "$version" <<'PY'
import sys, xml.etree.ElementTree as ET
from pathlib import Path
pkg, version = Path(sys.argv[1]), sys.argv[2]
ns = {"n": "http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd"}
meta = ET.parse(pkg / "S1Mini.nuspec").getroot().find("n:metadata", ns)
checks = {
    "id is S1Mini": meta.findtext("n:id", namespaces=ns) == "S1Mini",
    "version matches Cargo.toml": meta.findtext("n:version", namespaces=ns) == version,
    "dependency group .NETStandard2.0": meta.find("n:dependencies/n:group[@targetFramework='.NETStandard2.0']", ns) is not None,
    "managed assembly in lib/netstandard2.0": (pkg / "lib/netstandard2.0/S1Mini.dll").is_file(),
    "native library in runtimes/linux-x64/native": (pkg / "runtimes/linux-x64/native/libs1_mini.so").is_file(),
    "ONNX Runtime beside it": any((pkg / "runtimes/linux-x64/native").glob("libonnxruntime.so*")),
    "OPC parts": (pkg / "[Content_Types].xml").is_file() and (pkg / "_rels/.rels").is_file(),
    "no native file outside runtimes/<rid>/native": all(
        p.parts[0] == "runtimes" for p in (f.relative_to(pkg) for f in pkg.rglob("*.so*"))),
}
for what, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + what)
sys.exit(0 if all(checks.values()) else 1)
PY
}
run "NuGet: .nupkg layout and .nuspec" nuget_layout
nuget_consumer() {
  # The layout `dotnet publish -r linux-x64` makes: the assembly and the RID's native assets
  # side by side in the app folder.
  mkdir -p "$nug/app"
  cp "$nug/pkg/lib/netstandard2.0/S1Mini.dll" "$nug/pkg/runtimes/linux-x64/native/"* "$nug/app/"
  mcs -warnaserror -nologo -r:"$nug/app/S1Mini.dll" -out:"$nug/app/NuGetConsumer.exe" tests/packages/csharp/NuGetConsumer.cs &&
    mcs -warnaserror -nologo -r:"$nug/app/S1Mini.dll" -out:"$nug/app/Synth.exe" examples/csharp/Synth.cs &&
    bare mono "$nug/app/NuGetConsumer.exe" "$bundle" &&
    bare mono "$nug/app/Synth.exe" "$bundle" "$work/csharp.wav" "$text" && wav_ok "$work/csharp.wav"
}
run "NuGet: a C# consumer and examples/csharp against the package's assembly (mono)" nuget_consumer

# --- Unity -----------------------------------------------------------------------------------
upm=$pkgs/unity/com.fishaudio.s1-mini
uw=$work/unity
run "Unity: UPM folder valid (package.json, a .meta for every asset, plugin platforms)" \
  python3 packaging/unity/upm.py validate "$upm"
unity_tarball() {
  mkdir -p "$uw/tgz"
  tar -xzf "$pkgs/unity/com.fishaudio.s1-mini-$version.tgz" -C "$uw/tgz"
  python3 packaging/unity/upm.py validate "$uw/tgz/package" &&
    diff -r "$upm" "$uw/tgz/package" >/dev/null
}
run "Unity: the .tgz (Add package from tarball) holds the same valid folder" unity_tarball
unity_compile() {
  mkdir -p "$uw/bin"
  local defs=-define:UNITY_5_3_OR_NEWER\;UNITY_2021_3_OR_NEWER runtime
  mapfile -t runtime < <(find "$upm/Runtime" -name '*.cs' | sort)
  mcs -warnaserror -nologo -target:library -out:"$uw/bin/UnityEngine.dll" tests/packages/unity/UnityEngineStub.cs &&
    mcs -warnaserror -nologo -langversion:6 -target:library "$defs" -r:"$uw/bin/UnityEngine.dll" \
      -out:"$uw/bin/S1Mini.Runtime.dll" "${runtime[@]}" &&
    mcs -warnaserror -nologo -langversion:6 -target:library "$defs;UNITY_IOS" -r:"$uw/bin/UnityEngine.dll" \
      -out:"$uw/bin/S1Mini.Runtime.iOS.dll" "${runtime[@]}" &&
    mcs -warnaserror -nologo -langversion:6 -target:library "$defs" -r:"$uw/bin/UnityEngine.dll" \
      -r:"$uw/bin/S1Mini.Runtime.dll" -out:"$uw/bin/SpeakerDemo.dll" "$upm"/Samples~/SpeakerDemo/*.cs &&
    grep -qa __Internal "$uw/bin/S1Mini.Runtime.iOS.dll" && ! grep -qa __Internal "$uw/bin/S1Mini.Runtime.dll"
}
run "Unity: Runtime and sample compile against the UnityEngine stub (and as iOS: __Internal)" unity_compile
ring_tests() {
  mcs -warnaserror -nologo -langversion:6 -out:"$uw/bin/RingBufferTests.exe" \
    "$upm/Runtime/AudioRingBuffer.cs" tests/packages/unity/RingBufferTests.cs &&
    mono "$uw/bin/RingBufferTests.exe"
}
run "Unity: ring buffer and resampler (mono)" ring_tests
speaker_tests() {
  # Native plugins beside the managed code, as in a Linux player's Plugins folder.
  local dir=$uw/player
  mkdir -p "$dir"
  cp "$uw/bin/UnityEngine.dll" "$uw/bin/S1Mini.Runtime.dll" "$upm/Plugins/Linux/x86_64/"*.so "$dir/"
  mcs -warnaserror -nologo -langversion:6 -r:"$dir/UnityEngine.dll" -r:"$dir/S1Mini.Runtime.dll" \
    -out:"$dir/SpeakerTests.exe" tests/packages/unity/SpeakerTests.cs &&
    (cd "$dir" && bare mono --debug SpeakerTests.exe "$bundle")
}
run "Unity: S1MiniSpeaker streams the tiny bundle through OnAudioFilterRead (mono + stub)" speaker_tests

step "summary"
echo "packages: ${passed} passed, ${#failures[@]} failed"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
