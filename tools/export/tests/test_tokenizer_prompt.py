"""Token ids and prompts: the bundle's tokenizer files + our prompt builder vs fish-speech."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s1mini_export import oracle
from s1mini_export.corpus import TOKENIZER_CORPUS
from s1mini_export.prompt import build_prompt, encode, load_encoding


def test_special_token_ids_equal_fish_tokenizer(tiny_bundle, tiny_ckpt):
    fish = oracle.tokenizer(tiny_ckpt)
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["tokens"]["special"] == fish.all_special_tokens_with_ids
    assert m["tokens"]["semantic_begin"] == fish.semantic_begin_id
    assert m["tokens"]["semantic_end"] == fish.semantic_end_id
    assert m["tokenizer"]["num_ranks"] == fish.vocab_size


def test_corpus_ids_equal_fish_tokenizer(tiny_bundle, tiny_ckpt):
    fish = oracle.tokenizer(tiny_ckpt)
    enc, _ = load_encoding(tiny_bundle)
    for text in TOKENIZER_CORPUS:
        assert encode(enc, text) == fish.encode(text), text
    # multi-byte merges are exercised: some CJK piece is a single token
    assert len(fish.encode("天气")) < len("天气".encode())


REFS = [
    ("First reference sentence.", (10, 5)),
    ("第二个参考。", (10, 8)),
]


@pytest.mark.parametrize("n_refs", [0, 1, 2])
def test_prompt_equals_content_sequence(tiny_bundle, tiny_ckpt, n_refs):
    fish = oracle.tokenizer(tiny_ckpt)
    enc, ids = load_encoding(tiny_bundle)
    rng = np.random.default_rng(n_refs)
    refs = [(t, rng.integers(0, 1024, size=shape)) for t, shape in REFS[:n_refs]]
    text = "Hello (excited) 今日は、world!  Two spaces."
    want = oracle.prompt_ids(fish, 10, text, refs)
    got = build_prompt(enc, ids, 10, text, refs)
    np.testing.assert_array_equal(got, want)
