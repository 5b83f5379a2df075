"""Command line: `python -m s1mini_export --checkpoint DIR --out BUNDLE` or `--random KIND --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ExportError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other failure
        print(f"s1mini_export: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m s1mini_export", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="fish-speech S1 checkpoint dir (Hugging Face layout)")
    src.add_argument("--random", metavar="KIND", help="write a random checkpoint dir instead: tiny or s1-mini")
    p.add_argument("--out", type=Path, required=True, help="bundle dir to create (or checkpoint dir with --random)")
    p.add_argument("--precision", default="fp32", help="fp32 (CPU), fp16 (GPU), or int8 / int4 (CPU: weight-only quantised fp32 graphs, s1mini_export.quantize)")
    p.add_argument(
        "--parts",
        default="llm,codec-decode,codec-encode,codec-decode-step",
        help="comma list of llm, codec-decode, codec-encode, codec-decode-step",
    )
    p.add_argument(
        "--kv-cache",
        choices=("fp16", "fp32"),
        help="int8 / int4: the slow graph's KV cache type (default fp16: half the bytes a long-context decode step reads)",
    )
    p.add_argument(
        "--codec",
        choices=("fp32", "int8"),
        help="int8 / int4: the codec decoder's convolutions (default fp32, exact; int8: lossy, faster on CPUs)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --random")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .llm import progress

    try:
        if args.random is not None:
            from .random_checkpoint import write_random_checkpoint

            _random(args, write_random_checkpoint, progress)
        else:
            from .export import export, parse_parts

            export(
                args.checkpoint,
                args.out,
                args.precision,
                parse_parts(args.parts),
                force=args.force,
                kv_cache=args.kv_cache,
                codec=args.codec,
            )
    except ExportError as e:
        print(f"s1mini_export: error: {e}", file=sys.stderr)
        return 1
    return 0


def _random(args, write, log) -> None:
    import shutil
    import tempfile

    out: Path = args.out
    if out.exists() and not args.force:
        raise ExportError(f"{out}: already exists (remove it or pass --force)")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ExportError(f"{parent}: output's parent directory not found")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    try:
        write(args.random, args.seed, tmp, log)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        log(f"wrote {out}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
