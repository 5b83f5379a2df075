#!/usr/bin/env python3
"""Unity package (UPM) helper for scripts/package.sh and scripts/test-packages.sh.

  upm.py meta PACKAGE_DIR       writes a .meta beside every asset and folder that lacks one
  upm.py validate PACKAGE_DIR   checks package.json, .meta coverage and native plugin settings

GUIDs are the md5 of "<package name>/<path>", so a rebuilt package keeps its GUIDs (Unity keys
references by GUID). Folders whose name ends in "~" (Samples~) are hidden from Unity's importer
and get no .meta themselves; the files inside them do, for when a sample is imported.
Native plugins live under Plugins/<OS>/<arch>/ and are enabled for that platform only.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

# Plugins/<OS>/<arch> -> (editor OS, editor CPU, [(platform key, platform name, CPU)])
PLUGIN_PLATFORMS = {
    ("Linux", "x86_64"): ("Linux", "x86_64", [("Standalone", "Linux64", "x86_64")]),
    ("Windows", "x86_64"): ("Windows", "x86_64", [("Standalone", "Win64", "x86_64")]),
    ("macOS", "arm64"): ("OSX", "ARM64", [("Standalone", "OSXUniversal", "ARM64")]),
    ("iOS", "arm64"): (None, None, [("iPhone", "iOS", "ARM64")]),
    ("Android", "arm64-v8a"): (None, None, [("Android", "Android", "ARM64")]),
}
ALL_TARGETS = [("Standalone", "Linux64"), ("Standalone", "Win64"), ("Standalone", "OSXUniversal"),
               ("iPhone", "iOS"), ("Android", "Android")]
NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".a", ".bundle")

TAIL = "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"


def guid(package: str, rel: str) -> str:
    return hashlib.md5(f"{package}/{rel}".encode()).hexdigest()


def plugin_slot(rel: Path):
    parts = rel.parts
    if len(parts) == 4 and parts[0] == "Plugins" and parts[3].endswith(NATIVE_SUFFIXES):
        return (parts[1], parts[2])
    return None


def plugin_meta(g: str, slot) -> str:
    editor_os, editor_cpu, targets = PLUGIN_PLATFORMS[slot]
    enabled = {(k, n): cpu for k, n, cpu in targets}
    out = [
        "fileFormatVersion: 2", f"guid: {g}", "PluginImporter:", "  externalObjects: {}",
        "  serializedVersion: 2", "  iconMap: {}", "  executionOrder: {}", "  defineConstraints: []",
        "  isPreloaded: 0", "  isOverridable: 0", "  isExplicitlyReferenced: 0", "  validateReferences: 1",
        "  platformData:",
        "  - first:", "      Any: ", "    second:", "      enabled: 0", "      settings: {}",
        "  - first:", "      Editor: Editor", "    second:", f"      enabled: {1 if editor_os else 0}",
        "      settings:", f"        CPU: {editor_cpu or 'AnyCPU'}", "        DefaultValueInitialized: true",
        f"        OS: {editor_os or 'AnyOS'}",
    ]
    for key, name in ALL_TARGETS:
        cpu = enabled.get((key, name))
        out += ["  - first:", f"      {key}: {name}", "    second:", f"      enabled: {1 if cpu else 0}",
                "      settings:", f"        CPU: {cpu or 'None'}"]
        if key == "iPhone":
            out.append("        AddToEmbeddedBinaries: false")
    return "\n".join(out) + "\n" + TAIL


def meta_text(pkg_dir: Path, package: str, path: Path) -> str:
    rel = path.relative_to(pkg_dir)
    g = guid(package, rel.as_posix())
    head = f"fileFormatVersion: 2\nguid: {g}\n"
    if path.is_dir():
        return head + "folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n" + TAIL
    slot = plugin_slot(rel)
    if slot is not None:
        return plugin_meta(g, slot)
    if path.suffix == ".cs":
        return (head + "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n"
                "  defaultReferences: []\n  executionOrder: 0\n  icon: {instanceID: 0}\n" + TAIL)
    if path.suffix == ".asmdef":
        return head + "AssemblyDefinitionImporter:\n  externalObjects: {}\n" + TAIL
    if rel.as_posix() == "package.json":
        return head + "PackageManifestImporter:\n  externalObjects: {}\n" + TAIL
    if path.suffix in (".md", ".json", ".txt"):
        return head + "TextScriptImporter:\n  externalObjects: {}\n" + TAIL
    return head + "DefaultImporter:\n  externalObjects: {}\n" + TAIL


def assets(pkg_dir: Path):
    """Every file and folder Unity imports (or imports from a sample), except .meta files."""
    for p in sorted(pkg_dir.rglob("*")):
        rel = p.relative_to(pkg_dir)
        if p.suffix == ".meta" or any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_dir() and p.name.endswith("~"):
            continue  # hidden folder: no .meta of its own
        yield p


def cmd_meta(pkg_dir: Path) -> int:
    package = json.loads((pkg_dir / "package.json").read_text())["name"]
    written = 0
    for p in assets(pkg_dir):
        meta = p.with_name(p.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(pkg_dir, package, p))
            written += 1
    print(f"upm.py: {written} .meta files written in {pkg_dir}")
    return 0


def cmd_validate(pkg_dir: Path) -> int:
    errors = []
    manifest = json.loads((pkg_dir / "package.json").read_text())
    name = manifest.get("name", "")
    if not re.fullmatch(r"com(\.[a-z0-9][a-z0-9-]*){2,}", name) or len(name) > 214:
        errors.append(f"package.json name {name!r} is not a lowercase reverse-domain name")
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", manifest.get("version", "")):
        errors.append(f"package.json version {manifest.get('version')!r} is not semver")
    if not re.fullmatch(r"\d{4}\.\d+", manifest.get("unity", "")):
        errors.append("package.json unity must be like \"2021.3\"")
    for field in ("displayName", "description"):
        if not manifest.get(field):
            errors.append(f"package.json lacks {field}")
    for sample in manifest.get("samples", []):
        path = sample.get("path", "")
        if not path.startswith("Samples~/") or not (pkg_dir / path).is_dir():
            errors.append(f"sample path {path!r} is not a folder under Samples~/")
        if not sample.get("displayName"):
            errors.append(f"sample {path!r} lacks displayName")

    guids = {}
    for p in assets(pkg_dir):
        rel = p.relative_to(pkg_dir).as_posix()
        meta = p.with_name(p.name + ".meta")
        if not meta.is_file():
            errors.append(f"{rel} has no .meta")
            continue
        text = meta.read_text()
        m = re.search(r"^guid: ([0-9a-f]{32})$", text, re.M)
        if not m:
            errors.append(f"{rel}.meta has no 32-hex-digit guid")
            continue
        if m.group(1) in guids:
            errors.append(f"{rel}.meta repeats the guid of {guids[m.group(1)]}")
        guids[m.group(1)] = rel
        slot = plugin_slot(p.relative_to(pkg_dir))
        if p.is_file() and p.suffix in NATIVE_SUFFIXES:
            if slot not in PLUGIN_PLATFORMS:
                errors.append(f"{rel}: native plugins go under Plugins/<OS>/<arch>/ (one of {sorted(PLUGIN_PLATFORMS)})")
            elif "PluginImporter:" not in text:
                errors.append(f"{rel}.meta is not a PluginImporter")
            else:
                errors += check_plugin(rel, text, slot)
        if p.suffix == ".asmdef":
            asm = json.loads(p.read_text())
            if not asm.get("name"):
                errors.append(f"{rel} has no assembly name")
    for meta in pkg_dir.rglob("*.meta"):
        target = meta.with_name(meta.name[: -len(".meta")])
        if not target.exists():
            errors.append(f"{meta.relative_to(pkg_dir)} has no asset")
    for e in errors:
        print(f"upm.py: {e}")
    print(f"upm.py: {pkg_dir}: {len(guids)} assets with .meta, {len(errors)} problems")
    return 1 if errors else 0


def check_plugin(rel: str, text: str, slot) -> list:
    """The plugin is enabled for its folder's platform and CPU, and for no other."""
    editor_os, editor_cpu, targets = PLUGIN_PLATFORMS[slot]
    blocks = re.findall(r"  - first:\n      (\S+): (\S*)\n    second:\n      enabled: (\d)\n      settings:(.*?)(?=\n  - first:|\n  userData:)",
                        text, re.S)
    found = {(k, n): (e == "1", body) for k, n, e, body in blocks}
    errors = []
    want = {(k, n): cpu for k, n, cpu in targets}
    if editor_os:
        want[("Editor", "Editor")] = editor_cpu
    for (k, n), (enabled, body) in found.items():
        cpu = want.get((k, n))
        if enabled != (cpu is not None):
            errors.append(f"{rel}: platform {k}: {n} is {'enabled' if enabled else 'disabled'}")
        if cpu is not None and f"CPU: {cpu}" not in body:
            errors.append(f"{rel}: platform {k}: {n} should have CPU {cpu}")
    for key in want:
        if key not in found:
            errors.append(f"{rel}: no settings for platform {key[0]}: {key[1]}")
    return errors


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("meta", "validate"):
        sys.exit(__doc__)
    sys.exit((cmd_meta if sys.argv[1] == "meta" else cmd_validate)(Path(sys.argv[2])))
