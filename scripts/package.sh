#!/usr/bin/env bash
# Builds the s1-mini packages for this machine's platform into $CARGO_TARGET_DIR/packages/
# (default target/packages/):
#   s1_mini-<version>-<platform>/   C/C++ install tree: lib/libs1_mini.so.<version> (SONAME
#                                   libs1_mini.so.0) + links, ONNX Runtime beside it, include/
#                                   (s1_mini.h, s1_mini.hpp), lib/pkgconfig/s1_mini.pc,
#                                   lib/cmake/s1_mini/ (config + version file); also as .tar.gz
#   npm/s1-mini-<version>.tgz       npm main package (loader, typings, JS wrapper)
#   npm/s1-mini-<platform>-<version>.tgz   npm platform package (addon + ONNX Runtime)
#   nuget/S1Mini.<version>.nupkg    S1Mini.dll (lib/netstandard2.0) + runtimes/<rid>/native/
#   unity/com.fishaudio.s1-mini/    UPM package folder (.meta files included); also as .tgz
#
#   scripts/package.sh [--release] [--napi] [--prefix DIR]
#     --release   package the release build (default: the debug build the tests already made)
#     --napi      build the Node addon with `napi build --platform` (@napi-rs/cli), which also
#                 regenerates bindings/node/binding.js and binding.d.ts (commit any change);
#                 default: the cargo-only build of scripts/build-node.sh, same code and flags
#     --prefix    also install the C/C++ tree into DIR (e.g. /usr/local)
# Built and tested on linux-x64 only; docs/packaging.md has the commands for the others.
# scripts/test-packages.sh installs and uses each package as its users do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=never
profile=debug
cargo_args=()
use_napi=0
prefix=
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; cargo_args=(--release) ;;
    --napi) use_napi=1 ;;
    --prefix) prefix=$2; shift ;;
    *) echo "usage: scripts/package.sh [--release] [--napi] [--prefix DIR]" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'package: %s\n' "$*"; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) platform=linux-x64 rid=linux-x64 napi_platform=linux-x64-gnu unity_slot=Linux/x86_64 ;;
  *) echo "package.sh: $(uname -s)-$(uname -m) is not yet packaged by this script (docs/packaging.md)" >&2; exit 1 ;;
esac
for tool in patchelf python3 node npm mcs; do
  command -v "$tool" >/dev/null || { echo "package.sh: needs $tool (apt-get install patchelf python3 nodejs npm mono-mcs)" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
major=${version%%.*}
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/packages
rm -rf "$out"
mkdir -p "$out"

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)
fi
ort_file=$(readlink -f "$ORT_DYLIB_PATH")
ort_name=$(basename "$ORT_DYLIB_PATH")
case "$ort_name" in libonnxruntime.so.*.*) ;; *) ort_name=$(basename "$ort_file") ;; esac
say "ONNX Runtime: $ort_file (as $ort_name)"

say "building libs1_mini ($profile)"
cargo build --quiet --lib "${cargo_args[@]}"
lib=$target/$profile/libs1_mini.so

# --- C/C++: install tree ---------------------------------------------------------------------
tree=$out/s1_mini-$version-$platform
mkdir -p "$tree/lib/pkgconfig" "$tree/lib/cmake/s1_mini" "$tree/include"
install -m 0755 "$lib" "$tree/lib/libs1_mini.so.$version"
# cargo gives a cdylib no SONAME; cargo-c would pass -Wl,-soname. Setting it on the copy keeps
# the build tree's library (which the tests link as -ls1_mini) unchanged.
patchelf --set-soname "libs1_mini.so.$major" "$tree/lib/libs1_mini.so.$version"
ln -s "libs1_mini.so.$version" "$tree/lib/libs1_mini.so.$major"
ln -s "libs1_mini.so.$major" "$tree/lib/libs1_mini.so"
install -m 0644 "$ort_file" "$tree/lib/$ort_name"
install -m 0644 include/s1_mini.h bindings/cpp/s1_mini.hpp "$tree/include/"
subst() { sed -e "s|@VERSION@|$version|g" -e "s|@SOVERSION@|$major|g" -e "s|@ORT_NAME@|$ort_name|g" "$1" > "$2"; }
subst packaging/pkgconfig/s1_mini.pc.in "$tree/lib/pkgconfig/s1_mini.pc"
subst packaging/cmake/s1_miniConfig.cmake.in "$tree/lib/cmake/s1_mini/s1_miniConfig.cmake"
subst packaging/cmake/s1_miniConfigVersion.cmake.in "$tree/lib/cmake/s1_mini/s1_miniConfigVersion.cmake"
tar -C "$out" -czf "$tree.tar.gz" "$(basename "$tree")"
say "C/C++ install tree: $tree (+ .tar.gz)"
if [ -n "$prefix" ]; then
  mkdir -p "$prefix"
  cp -a "$tree/." "$prefix/"
  say "installed into $prefix"
fi

# --- npm -------------------------------------------------------------------------------------
[ -x bindings/node/node_modules/.bin/napi ] || (cd bindings/node && npm ci --no-audit --no-fund --loglevel=error)
napi=bindings/node/node_modules/.bin/napi
addon=bindings/node/s1-mini.$napi_platform.node
if [ "$use_napi" = 1 ]; then
  say "building the Node addon with napi build --platform"
  napi_args=(--platform --js binding.js --dts binding.d.ts)
  [ "$profile" = release ] && napi_args+=(--release)
  (cd bindings/node && node_modules/.bin/napi build "${napi_args[@]}")
else
  scripts/build-node.sh "${cargo_args[@]}" >/dev/null
fi
mkdir -p "$out/npm/work"
# The platform packages' package.json files come from package.json's napi.targets
# (create-npm-dirs writes only inside its --cwd, hence the copy).
cp bindings/node/package.json "$out/npm/work/"
"$napi" create-npm-dirs --cwd "$out/npm/work" --npm-dir npm >/dev/null 2>&1
pdir=$out/npm/work/npm/$napi_platform
cp "$addon" "$pdir/"
cp "$ort_file" "$pdir/$ort_name"
# ONNX Runtime ships beside the addon, where s1-mini looks for it (src/backend/onnx/mod.rs).
node -e '
  const fs = require("fs"); const [file, ort] = process.argv.slice(1);
  const p = JSON.parse(fs.readFileSync(file, "utf8"));
  p.files = [...new Set([...(p.files || []), ort])];
  fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");' "$pdir/package.json" "$ort_name"
# The main package: bindings/node's files, with one optional dependency per platform package
# (what `napi pre-publish` adds at publish time), without the build-time fields.
main=$out/npm/main
mkdir -p "$main"
cp bindings/node/package.json bindings/node/index.js bindings/node/index.d.ts bindings/node/binding.js \
  bindings/node/binding.d.ts "$main/"
node -e '
  const fs = require("fs"), path = require("path"); const [file, dirs] = process.argv.slice(1);
  const p = JSON.parse(fs.readFileSync(file, "utf8"));
  p.optionalDependencies = {};
  for (const d of fs.readdirSync(dirs).sort()) {
    const platform = JSON.parse(fs.readFileSync(path.join(dirs, d, "package.json"), "utf8"));
    p.optionalDependencies[platform.name] = platform.version;
  }
  delete p.devDependencies; delete p.scripts;
  fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");' "$main/package.json" "$out/npm/work/npm"
npm pack --silent --pack-destination "$out/npm" "$main" >/dev/null
npm pack --silent --pack-destination "$out/npm" "$pdir" >/dev/null
say "npm: $(cd "$out/npm" && ls ./*.tgz | tr '\n' ' ')"

# --- NuGet -----------------------------------------------------------------------------------
stage=$out/nuget/stage
mkdir -p "$stage/lib/netstandard2.0" "$stage/runtimes/$rid/native"
# mcs compiles against mono's 4.5 profile; the sources use only APIs that netstandard2.0 has.
mcs -warnaserror -nologo -langversion:6 -target:library -optimize+ -out:"$stage/lib/netstandard2.0/S1Mini.dll" \
  -doc:"$stage/lib/netstandard2.0/S1Mini.xml" -nowarn:1591,1573 bindings/csharp/S1Mini/*.cs
cp "$lib" "$stage/runtimes/$rid/native/libs1_mini.so"
cp "$ort_file" "$stage/runtimes/$rid/native/$ort_name"
sed -e "s|@VERSION@|$version|g" -e "s|@RIDS@|$rid|g" packaging/nuget/S1Mini.nuspec.in > "$stage/S1Mini.nuspec"
python3 - "$stage" "$out/nuget/S1Mini.$version.nupkg" <<'PY'
# A .nupkg is an OPC zip: the .nuspec at the top, [Content_Types].xml and _rels/.rels.
import sys, zipfile
from pathlib import Path
stage, dest = Path(sys.argv[1]), sys.argv[2]
files = sorted(p for p in stage.rglob("*") if p.is_file())
exts = sorted({p.suffix.lstrip(".") for p in files if p.suffix} | {"rels", "psmdcp"})
types = "".join(f'<Default Extension="{e}" ContentType="application/octet" />' for e in exts if e != "rels")
content_types = ('<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" />'
                 + types + "</Types>")
rels = ('<?xml version="1.0" encoding="utf-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/S1Mini.nuspec" Id="R1" />'
        "</Relationships>")
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("[Content_Types].xml", content_types)
    z.writestr("_rels/.rels", rels)
    for p in files:
        z.write(p, p.relative_to(stage).as_posix())
PY
say "NuGet: $out/nuget/S1Mini.$version.nupkg ($rid)"

# --- Unity (UPM) -----------------------------------------------------------------------------
upm=$out/unity/com.fishaudio.s1-mini
mkdir -p "$out/unity"
cp -r packaging/unity/com.fishaudio.s1-mini "$upm"
sed -i "s|@VERSION@|$version|g" "$upm/package.json"
mkdir -p "$upm/Runtime/S1Mini" "$upm/Plugins/$unity_slot"
cp bindings/csharp/S1Mini/*.cs "$upm/Runtime/S1Mini/"
cp "$lib" "$upm/Plugins/$unity_slot/libs1_mini.so"
# Unity imports native plugins by extension: the versioned name (.so.1.31.1) would not be one.
cp "$ort_file" "$upm/Plugins/$unity_slot/libonnxruntime.so"
python3 packaging/unity/upm.py meta "$upm" >/dev/null
(cd "$out/unity" && npm pack --silent ./com.fishaudio.s1-mini >/dev/null)
say "Unity: $upm (+ $(cd "$out/unity" && ls ./*.tgz))"
say "done ($profile build of s1-mini $version for $platform) in $out"
