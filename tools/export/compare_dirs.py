#!/usr/bin/env python3
"""compare_dirs.py WANT GOT: exit 1 unless both trees hold the same files with the same content.

Used by check_golden.sh. Every file must be byte-identical except float `.npy` arrays: those come
out of float kernels (matmul, convolutions) whose last bits differ between CPUs (AMD vs Intel
AVX-512, different SIMD paths in torch), so they are compared with a tolerance instead:

    max |want - got| <= FLOAT_RTOL * max |want|      (shape and dtype must match exactly)

FLOAT_RTOL = 1e-5. Seen across CPUs: 7.1e-7 (codec_pcm.npy) and 1.4e-7 (prefill_logits.npy), an
Intel Xeon against the committed AMD EPYC files. A real change to the exporter or the model code
moves these arrays far more: tools/export/tests/test_compare_dirs.py shows a one-ulp-of-bf16 change
(relative 4e-3) of one weight is caught, and docs in tools/export/README.md list measured examples.
Integer arrays (token ids, codes), JSON, ONNX graphs and weights stay byte-exact.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

FLOAT_RTOL = 1e-5


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def float_rel_diff(x: bytes, y: bytes) -> float | None:
    """Max |a - b| / max |a| of two float .npy files of equal shape and dtype; None otherwise."""
    u, v = np.load(io.BytesIO(x)), np.load(io.BytesIO(y))
    if u.shape != v.shape or u.dtype != v.dtype or u.dtype.kind != "f":
        return None
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        return 0.0 if np.array_equal(u, v, equal_nan=True) else float("inf")
    a, b = u.astype(np.float64), v.astype(np.float64)
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(a).max(initial=0.0), 1e-30))


def compare(want: Path, got: Path, rtol: float = FLOAT_RTOL) -> tuple[list[str], list[str]]:
    """(problems, notes): problems fail the check, notes are float files within tolerance."""
    a, b = files(want), files(got)
    bad = [f"missing in regenerated: {f}" for f in sorted(a - b)]
    bad += [f"not committed: {f}" for f in sorted(b - a)]
    notes = []
    for name in sorted(a & b):
        x, y = (want / name).read_bytes(), (got / name).read_bytes()
        if x == y:
            continue
        rel = float_rel_diff(x, y) if name.endswith(".npy") else None
        if rel is None:
            bad.append(f"differs: {name}")
        elif rel <= rtol:
            notes.append(f"within tolerance: {name} (float, max relative difference {rel:.3g} <= {rtol:g})")
        else:
            bad.append(f"differs: {name} (float, max relative difference {rel:.3g} > {rtol:g})")
    return bad, notes


def main(want: Path, got: Path) -> int:
    bad, notes = compare(want, got)
    for line in notes + bad:
        print(f"check_golden: {line}", file=sys.stderr)
    if bad:
        print("check_golden: FAILED; regenerate with .venv/bin/python tools/export/make_golden.py", file=sys.stderr)
        return 1
    n = len(files(want))
    print(f"check_golden: {n} files reproduce ({len(notes)} float arrays within {FLOAT_RTOL:g})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
