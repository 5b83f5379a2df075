"""Full-size parity check, run by hand (minutes, ~9 GB of RAM, ~6 GB of disk): the real-shape random
S1-mini checkpoint through the exporter and ONNX Runtime vs fish-speech (prefill + 1 decode step + the
10 fast positions, 1e-4 relative in fp32). Not part of CI: too large for a 2-core CI run.

    cd tools/export
    ../../.venv/bin/python -m s1mini_export --random s1-mini --seed 0 --out /tmp/s1m/ckpt
    ../../.venv/bin/python -m s1mini_export --checkpoint /tmp/s1m/ckpt --out /tmp/s1m/bundle
    ../../.venv/bin/python check_full_size.py /tmp/s1m
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from test_real_shapes import check_bundle_against_fish  # noqa: E402  (the CI test's own check)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: check_full_size.py DIR  (DIR/ckpt from --random s1-mini, DIR/bundle exported from it)")
    d = Path(sys.argv[1])
    check_bundle_against_fish(d / "ckpt", d / "bundle", decode_steps=1, fast_positions=10)
    print("full-size S1-mini bundle matches fish-speech (prefill, 1 decode step, 10 fast positions)")


if __name__ == "__main__":
    main()
