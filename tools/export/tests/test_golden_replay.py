"""The committed fixture replayed the way the engine will run it: ONNX Runtime graphs + the
contract's sampling rules, no fish-speech. Proves the golden files are reachable from the bundle
alone (tokenizer, prompt builder, slow/fast graphs, window rules, RNG)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import REPO

from s1mini_export.llm import SlowRunner
from s1mini_export.prompt import build_prompt, encode, load_encoding
from s1mini_export.sampling import sample, window_columns

FIXTURE = REPO / "tests" / "fixtures" / "tiny"
GOLDEN = FIXTURE / "golden"


def bf16(x: float) -> float:
    b = np.array([x], np.float32).view(np.uint32)[0]
    b = (int(b) + 0x7FFF + ((int(b) >> 16) & 1)) & 0xFFFF0000
    return float(np.array([b], np.uint32).view(np.float32)[0])


def run_frames(
    prompt: np.ndarray, temperature: float, top_p: float, rp: float, seed: int, max_frames: int, compat: bool
) -> np.ndarray:
    m = json.loads((FIXTURE / "manifest.json").read_text())
    c, tok = m["model"], m["tokens"]
    sem_rows = m["head"]["semantic_rows"]
    slow_session = ort.InferenceSession(str(FIXTURE / "slow.onnx"), providers=["CPUExecutionProvider"])
    slow = SlowRunner(slow_session, m, capacity=prompt.shape[1] + max_frames)
    fast = ort.InferenceSession(str(FIXTURE / "fast.onnx"), providers=["CPUExecutionProvider"])
    if compat:
        temperature, top_p, rp = bf16(temperature), bf16(top_p), bf16(rp)
    fkv = np.zeros((c["n_fast_layer"], 1, c["fast_n_local_heads"], 0, c["fast_head_dim"]), np.float32)

    def head_index(ids: np.ndarray) -> np.ndarray:
        in_sem = (ids >= tok["semantic_begin"]) & (ids <= tok["semantic_end"])
        return np.where(in_sem, ids - tok["semantic_begin"], np.where(ids == tok["im_end"], sem_rows, -1))

    history = np.zeros((1 + c["num_codebooks"], max_frames), np.int64)
    cur, frames, none = prompt, [], np.zeros(0, np.int64)
    for f in range(max_frames):
        logits, hidden = slow.run(cur)
        win = None if f == 0 else window_columns(history, f - 1)
        if win is None:
            main_win = none
        elif compat:
            main_win = head_index(win[:, 0])  # fish-speech's previous_tokens[:, 0]
        else:
            main_win = head_index(win[0])
        i = sample(logits[0], main_win, temperature, top_p, rp, seed, f, 0)
        codes = [i if i < sem_rows else 0]
        _, fk, fv = fast.run(
            None, {"hidden": hidden, "code": np.zeros(1, np.int64), "past_keys": fkv, "past_values": fkv}
        )
        for k in range(1, c["num_codebooks"]):
            lg, fk, fv = fast.run(
                None, {"hidden": hidden, "code": np.array([codes[-1]], np.int64), "past_keys": fk, "past_values": fv}
            )
            codes.append(sample(lg[0], none if win is None else win[k + 1], temperature, top_p, rp, seed, f, k))
        token = tok["semantic_begin"] + i if i < sem_rows else tok["im_end"]
        frame = np.array([token] + codes, np.int64)
        frames.append(frame)
        if f >= 1:
            history[:, f - 1] = frame
        if token == tok["im_end"]:
            break
        cur = frame[:, None]
    return np.stack(frames)


def load_prompt(name: str) -> np.ndarray:
    return np.array(json.loads((GOLDEN / name).read_text())["ids"], np.int64)


def test_golden_tokenizer_ids_from_bundle_files():
    enc, _ = load_encoding(FIXTURE)
    for case in json.loads((GOLDEN / "tokenizer.json").read_text())["cases"]:
        assert encode(enc, case["text"]) == case["ids"], case["text"]


@pytest.mark.parametrize("name", ["prompt_text.json", "prompt_ref1.json", "prompt_ref2.json"])
def test_golden_prompts_from_bundle_files(name):
    enc, ids = load_encoding(FIXTURE)
    g = json.loads((GOLDEN / name).read_text())
    refs = [(r["text"], np.array(r["codes"])) for r in g["references"]]
    np.testing.assert_array_equal(build_prompt(enc, ids, 10, g["text"], refs), np.array(g["ids"]))


def test_golden_prefill_logits_from_slow_graph():
    m = json.loads((FIXTURE / "manifest.json").read_text())
    slow = ort.InferenceSession(str(FIXTURE / "slow.onnx"), providers=["CPUExecutionProvider"])
    prompt = load_prompt("prompt_text.json")
    logits, hidden = SlowRunner(slow, m, capacity=prompt.shape[1]).run(prompt)
    want = np.load(GOLDEN / "prefill_logits.npy")
    assert np.abs(logits - want).max() <= 1e-4 * np.abs(want).max()
    want_h = np.load(GOLDEN / "prefill_hidden.npy")
    assert np.abs(hidden - want_h).max() <= 1e-4 * np.abs(want_h).max()


def test_golden_greedy_frames_replay_in_compat_mode():
    p = json.loads((GOLDEN / "params.json").read_text())
    want = np.load(GOLDEN / "greedy_frames.npy")
    g = p["greedy"]
    got = run_frames(load_prompt(g["prompt"]), 0.0, 1.0, g["repetition_penalty"], 0, p["max_new_tokens"], compat=True)
    np.testing.assert_array_equal(got, want)


def test_golden_sampled_frames_replay_in_default_mode():
    p = json.loads((GOLDEN / "params.json").read_text())
    want = np.load(GOLDEN / "sampled_frames.npy")
    s = p["sampled"]
    got = run_frames(
        load_prompt(s["prompt"]),
        s["temperature"],
        s["top_p"],
        s["repetition_penalty"],
        s["seed"],
        p["max_new_tokens"],
        compat=False,
    )
    np.testing.assert_array_equal(got, want)
