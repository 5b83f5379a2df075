"""manifest.json of a bundle (docs/bundle-format.md), written deterministically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import FISH_SPEECH_VERSION, FORMAT_NAME, FORMAT_VERSION, __version__
from .checkpoint import LlmConfig
from .tokenizer_files import FISH_TIKTOKEN_PATTERN, TIKTOKEN_MAX_ENCODE_CHARS, TokenIds


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_manifest(
    *,
    cfg: LlmConfig,
    tokens: TokenIds,
    precision: str,
    fast_logit_rows: int,
    codec: dict | None,
    graphs: dict[str, str],
    weights: dict[str, str],
    bundle_dir: Path,
    files: list[str],
) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "exporter": {"name": "s1mini_export", "version": __version__, "fish_speech": FISH_SPEECH_VERSION},
        "precision": precision,
        "model": cfg.manifest_dict(),
        "tokens": {
            "im_end": tokens.im_end,
            "interleave": tokens.interleave,
            "semantic_begin": tokens.semantic_begin,
            "semantic_end": tokens.semantic_end,
            "special": dict(tokens.special),
        },
        "tokenizer": {
            "file": "tokenizer.tiktoken",
            "special_tokens_file": "special_tokens.json",
            "pattern": FISH_TIKTOKEN_PATTERN,
            "num_ranks": tokens.num_ranks,
            "max_encode_chars": TIKTOKEN_MAX_ENCODE_CHARS,
        },
        "head": {"semantic_rows": tokens.semantic_rows, "im_end_index": tokens.semantic_rows},
        "fast": {"logit_rows": fast_logit_rows},
        "codec": codec,
        "graphs": graphs,
        "weights": weights,
        "files": {
            name: {"sha256": sha256_file(bundle_dir / name), "bytes": (bundle_dir / name).stat().st_size}
            for name in sorted(files)
        },
    }


def write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
