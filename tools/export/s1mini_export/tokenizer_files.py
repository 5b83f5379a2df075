"""Reading tokenizer.tiktoken + special_tokens.json and resolving special-token ids.

Ids follow fish-speech's FishTokenizer.from_pretrained exactly: the JSON is read as a dict and
its *keys* are enumerated, so token i of the file gets id len(ranks) + i; the JSON's own values
are only checked for agreement (a mismatch means the file is not what fish-speech would load).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError

# fish_speech/tokenizer.py FISH_TIKTOKEN_PATTERN, verbatim (the engine needs it in the manifest).
FISH_TIKTOKEN_PATTERN = "|".join(
    [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        r"\p{P}",
        r"[^\r\n\p{L}\p{N}]?\p{L}+",
        r"\p{N}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(\?!\S)",
        r"\s+",
    ]
)
TIKTOKEN_MAX_ENCODE_CHARS = 400_000

IM_END_TOKEN = "<|im_end|>"
INTERLEAVE_TOKEN = "<|interleave|>"
SEMANTIC_RE = re.compile(r"<\|semantic:(\d+)\|>")

# The 15 non-semantic special tokens of S1, in the order of the real special_tokens.json.
S1_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|phoneme_start|>",
    "<|phoneme_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|text|>",
    "<|voice|>",
    "<|interleave|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio|>",
]


@dataclass(frozen=True)
class TokenIds:
    """Resolved special-token ids of one checkpoint."""

    num_ranks: int
    special: dict[str, int]  # name -> id, in file order
    im_end: int
    interleave: int
    semantic_begin: int
    semantic_end: int

    @property
    def semantic_rows(self) -> int:
        return self.semantic_end - self.semantic_begin + 1


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """tokenizer.tiktoken -> {token bytes: rank}, parsed like FishTokenizer.load_tiktoken_bpe."""
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ExportError(f"{path}:{n}: expected '<base64 token> <rank>'")
        token, rank = fields
        if token == "=":  # fish-speech skips the empty token written as '='
            continue
        try:
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise ExportError(f"{path}:{n}: {e}") from None
    return ranks


def resolve_token_ids(special_tokens_json: Path, num_ranks: int) -> TokenIds:
    if not special_tokens_json.is_file():
        raise ExportError(f"{special_tokens_json}: file not found")
    try:
        data = json.loads(special_tokens_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{special_tokens_json}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{special_tokens_json}: expected an object of name -> id")
    special: dict[str, int] = {}
    for i, (name, given) in enumerate(data.items()):
        want = num_ranks + i
        if given != want:
            raise ExportError(
                f"{special_tokens_json}: {name!r} has id {given}, but fish-speech assigns "
                f"len(ranks) + position = {num_ranks} + {i} = {want}"
            )
        special[name] = want
    for name in (IM_END_TOKEN, INTERLEAVE_TOKEN):
        if name not in special:
            raise ExportError(f"{special_tokens_json}: missing {name}")
    semantic = {int(m.group(1)): tid for name, tid in special.items() if (m := SEMANTIC_RE.fullmatch(name))}
    if 0 not in semantic:
        raise ExportError(f"{special_tokens_json}: missing <|semantic:0|>")
    end_idx = max(semantic)
    begin, end = semantic[0], semantic[end_idx]
    # The engine maps semantic code c <-> id begin + c; that needs a contiguous run.
    if sorted(semantic) != list(range(end_idx + 1)) or end - begin != end_idx:
        raise ExportError(f"{special_tokens_json}: <|semantic:N|> tokens are not contiguous in id order")
    return TokenIds(
        num_ranks=num_ranks,
        special=special,
        im_end=special[IM_END_TOKEN],
        interleave=special[INTERLEAVE_TOKEN],
        semantic_begin=begin,
        semantic_end=end,
    )


def write_tiktoken(path: Path, ranked_tokens: list[bytes]) -> None:
    """Writes tokens in rank order, one '<base64> <rank>' line each (fish-speech save_pretrained)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rank, tok in enumerate(ranked_tokens):
            f.write(f"{base64.b64encode(tok).decode()} {rank}\n")


def write_special_tokens(path: Path, names: list[str], num_ranks: int) -> None:
    data = {name: num_ranks + i for i, name in enumerate(names)}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
