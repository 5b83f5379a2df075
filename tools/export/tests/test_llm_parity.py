"""slow.onnx / fast.onnx under ONNX Runtime CPU vs fish-speech forward_generate(_fast), fp32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from s1mini_export import oracle
from s1mini_export.llm import SlowRunner, slow_cache_names
from s1mini_export.prompt import build_prompt, load_encoding

RTOL = 1e-4  # relative to the largest reference magnitude


def close(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def prompt(tiny_bundle):
    enc, ids = load_encoding(tiny_bundle)
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 1024, size=(10, 6))
    return build_prompt(enc, ids, 10, "Hello (angry) 你好，世界。", [("A reference.", ref)])


def empty_kv(m: dict, fast: bool) -> np.ndarray:
    c = m["model"]
    if fast:
        return np.zeros((c["n_fast_layer"], 1, c["fast_n_local_heads"], 0, c["fast_head_dim"]), np.float32)
    return np.zeros((c["n_layer"], 1, c["n_local_heads"], 0, c["head_dim"]), np.float32)


def test_slow_prefill_and_5_decode_steps_match_forward_generate(tiny_bundle, fish_model, prompt):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    slow = SlowRunner(session(tiny_bundle / "slow.onnx"), m, capacity=prompt.shape[1] + 8)
    cur, pos = prompt, 0
    rng = np.random.default_rng(3)
    sem_begin = m["tokens"]["semantic_begin"]
    for step in range(6):
        want_logits, want_hidden = oracle.slow_step(fish_model, cur, pos)
        logits, hidden = slow.run(cur)
        assert logits.shape == (1, m["head"]["semantic_rows"] + 1)
        assert close(logits[0], want_logits) < RTOL, f"step {step} logits"
        assert close(hidden[0], want_hidden) < RTOL, f"step {step} hidden"
        pos += cur.shape[1]
        assert slow.pos == pos
        assert all(v.shape[2] == prompt.shape[1] + 8 for v in slow.cache.values()), "capacity is fixed"
        # next input: a semantic frame (exercises the codebook embedding + √11 path), last one text
        codes = rng.integers(0, 1024, size=10)
        cur = np.concatenate([[sem_begin + codes[0]], codes])[:, None].astype(np.int64)
        if step == 4:
            cur = np.zeros((11, 1), np.int64)
            cur[0, 0] = 300


def test_slow_chunked_prefill_equals_one_shot(tiny_bundle, prompt):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    s = session(tiny_bundle / "slow.onnx")
    t = prompt.shape[1]
    one = SlowRunner(s, m, capacity=t + 1)
    want = one.run(prompt)
    for chunk in (1, 5, t - 1):
        r = SlowRunner(s, m, capacity=t + 1)
        for a in range(0, t, chunk):
            got = r.run(prompt[:, a : a + chunk])
        for g, w in zip(got, want):
            assert close(g[0], w[0]) < 1e-5, f"chunk {chunk}"
        for name in r.names:
            np.testing.assert_allclose(r.cache[name][:, :, :t], one.cache[name][:, :, :t], atol=1e-5)


def test_slow_graph_writes_each_cache_in_place_without_concat(tiny_bundle):
    """Every present_* output comes straight out of a GroupQueryAttention node that also reads
    the matching past_* input, and no Concat touches a cache: with one buffer bound to both, ONNX
    Runtime writes the new positions into it (docs/bundle-format.md, format 2)."""
    import json

    import onnx

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    g = onnx.load(str(tiny_bundle / "slow.onnx")).graph
    ins, outs = slow_cache_names(m["model"]["n_layer"])
    assert [i.name for i in g.input] == ["tokens", "past_sequence_length", *ins]
    assert [o.name for o in g.output] == ["logits", "hidden", *outs]
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == m["model"]["n_layer"] and all(n.domain == "com.microsoft" for n in gqa)
    for i, n in enumerate(gqa):
        assert list(n.input[3:5]) == [f"past_key_{i}", f"past_value_{i}"]
        assert list(n.output[1:3]) == [f"present_key_{i}", f"present_value_{i}"]
    cache = set(ins) | set(outs)
    assert not [n for n in g.node if n.op_type == "Concat" and cache & (set(n.input) | set(n.output))]


def test_fast_step_matches_forward_generate_fast_for_every_position(tiny_bundle, fish_model, prompt):
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    rows = m["fast"]["logit_rows"]
    fast = session(tiny_bundle / "fast.onnx")
    _, hidden = oracle.slow_step(fish_model, prompt, 0)
    oracle.reset_fast(fish_model)
    kv = empty_kv(m, True)
    keys, values = kv, kv.copy()
    codes = [0, 17, 1023, 5, 600, 2, 999, 64, 128, 256]
    for k in range(m["model"]["num_codebooks"]):
        code = codes[k - 1] if k else 0
        want = oracle.fast_step(fish_model, hidden, code, k, rows)
        logits, keys, values = fast.run(
            None,
            {
                "hidden": hidden[None].astype(np.float32),
                "code": np.array([code], np.int64),
                "past_keys": keys,
                "past_values": values,
            },
        )
        assert logits.shape == (1, rows)
        assert keys.shape[3] == k + 1
        assert close(logits[0], want) < RTOL, f"position {k}"


def test_unbound_present_is_a_fresh_buffer_zeroed_past_the_filled_positions(tiny_bundle):
    """The control for the engine's in-place test (src/backend/onnx: slow_cache_is_written_in_place
    _while_decoding): without one buffer bound to past and present, GroupQueryAttention writes a
    new present and zeroes its unfilled positions, so a sentinel there does not survive; with the
    engine's binding it does."""
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    r = SlowRunner(session(tiny_bundle / "slow.onnx"), m, capacity=10)
    for name in r.names:
        r.cache[name][0, 0, -1, 0] = 12345.0
    tokens = np.zeros((11, 4), np.int64)
    tokens[0] = [5, 6, 7, 8]
    r.run(tokens)
    assert all(r.cache[name][0, 0, -1, 0] == 0.0 for name in r.names)


def test_batched_rows_at_their_own_positions_equal_rows_run_alone(tiny_bundle):
    """Format 3: a batch of requests at different positions (slow) and one fast position gives
    each row exactly what it gives alone (ONNX Runtime CPU, single-threaded)."""
    import json

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    c = m["model"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    slow = ort.InferenceSession(str(tiny_bundle / "slow.onnx"), so, providers=["CPUExecutionProvider"])
    fast = ort.InferenceSession(str(tiny_bundle / "fast.onnx"), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    k1 = 1 + c["num_codebooks"]
    cap = 16
    runners = []
    for t in (5, 9):  # two prompts of different lengths, each prefilled alone
        r = SlowRunner(slow, m, capacity=cap)
        r.run(rng.integers(0, 100, size=(k1, t)))
        runners.append(r)
    batch = {n: np.concatenate([r.cache[n] for r in runners]) for n in runners[0].names}
    past = np.array([r.pos for r in runners], np.int64)
    for _ in range(3):
        step = rng.integers(0, 100, size=(2, k1, 1)).astype(np.int64)
        out = slow.run(None, {"tokens": step, "past_sequence_length": past, **batch})
        batch = dict(zip(runners[0].names, out[2:]))
        past = past + 1
        for b, r in enumerate(runners):
            logits, hidden = r.run(step[b])
            np.testing.assert_array_equal(out[0][b], logits[0])
            np.testing.assert_array_equal(out[1][b], hidden[0])

    lf, hf, df = c["n_fast_layer"], c["fast_n_local_heads"], c["fast_head_dim"]
    hid = rng.standard_normal((2, c["fast_dim"])).astype(np.float32)
    pk = pv = np.zeros((lf, 2, hf, 0, df), np.float32)
    alone = [[np.zeros((lf, 1, hf, 0, df), np.float32)] * 2 for _ in range(2)]
    for pos in range(4):
        code = np.array([3 * pos, 5 * pos + 1], np.int64)
        logits, pk, pv = fast.run(None, {"hidden": hid, "code": code, "past_keys": pk, "past_values": pv})
        for b in range(2):
            one, alone[b][0], alone[b][1] = fast.run(
                None,
                {"hidden": hid[b : b + 1], "code": code[b : b + 1], "past_keys": alone[b][0], "past_values": alone[b][1]},
            )
            np.testing.assert_array_equal(logits[b], one[0])
