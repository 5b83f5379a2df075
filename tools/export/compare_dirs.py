#!/usr/bin/env python3
"""compare_dirs.py WANT GOT: exit 1 unless both trees hold the same files with the same bytes.

Used by check_golden.sh. Float .npy arrays that differ in bytes are reported with their max
relative difference, so a failure on another CPU (different SIMD kernels) says how far off it is.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def main(want: Path, got: Path) -> int:
    a, b = files(want), files(got)
    bad = [f"missing in regenerated: {f}" for f in sorted(a - b)] + [f"not committed: {f}" for f in sorted(b - a)]
    for name in sorted(a & b):
        x, y = (want / name).read_bytes(), (got / name).read_bytes()
        if x == y:
            continue
        note = ""
        if name.endswith(".npy"):
            u, v = np.load(io.BytesIO(x)), np.load(io.BytesIO(y))
            if u.shape == v.shape and u.dtype == v.dtype and u.dtype.kind == "f":
                rel = float(np.abs(u - v).max() / max(np.abs(u).max(), 1e-30))
                note = f" (float, max relative difference {rel:.3g})"
        bad.append(f"differs: {name}{note}")
    for line in bad:
        print(f"check_golden: {line}", file=sys.stderr)
    if bad:
        print("check_golden: FAILED; regenerate with .venv/bin/python tools/export/make_golden.py", file=sys.stderr)
        return 1
    print(f"check_golden: {len(a)} files identical", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
