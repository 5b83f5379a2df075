"""Writing a bundle directory atomically: checks before the work, a temporary sibling during it,
one rename at the end (the exporter and the quantiser share this)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import ExportError


def check_out_dir(out: Path, force: bool) -> Path:
    """Refuses an existing `out` without `force` and a missing parent; returns the parent."""
    if out.exists() and not force:
        raise ExportError(f"{out}: already exists (remove it or pass --force)")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ExportError(f"{parent}: output's parent directory not found")
    return parent


def partial_dir(out: Path, parent: Path) -> Path:
    """A new temporary directory beside `out`, to be published with `publish`."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))


def publish(tmp: Path, out: Path) -> None:
    """Makes `tmp` the bundle at `out` (an existing one, with --force, is swapped out, then
    removed)."""
    tmp.chmod(0o755)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        out.rename(old / "b")
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
