"""Bundle layout and manifest (docs/bundle-format.md), LLM part."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from s1mini_export.philox import check_known_answer, uniforms
from s1mini_export.sampling import sample


def test_manifest_lists_every_file_with_its_hash(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["format"] == "s1-mini-bundle" and m["format_version"] == 3
    on_disk = sorted(p.name for p in tiny_bundle.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    for name, info in m["files"].items():
        data = (tiny_bundle / name).read_bytes()
        assert info["bytes"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert m["graphs"] == {"slow": "slow.onnx", "fast": "fast.onnx"}
    assert m["head"]["im_end_index"] == m["head"]["semantic_rows"] == 1024
    assert m["fast"]["logit_rows"] == 1024
    assert m["codec"] is None


def test_llm_safetensors_is_bf16_with_checkpoint_names(tiny_bundle, tiny_ckpt):
    import torch
    from safetensors import safe_open

    sd = torch.load(tiny_ckpt / "model.pth", weights_only=True)
    with safe_open(str(tiny_bundle / "llm.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(sd)
        for k in sd:
            t = f.get_tensor(k)
            assert t.dtype == torch.bfloat16
            assert torch.equal(t, sd[k])


def test_philox_known_answer_and_uniform_range():
    check_known_answer()
    u = uniforms(1234, 100_000, 3, 7)
    assert u.dtype == np.float32 and u.min() > 0 and u.max() <= 1


def test_sampling_greedy_top_p_and_penalty():
    logits = np.array([0.5, 2.0, 1.0, -3.0], np.float32)
    assert sample(logits, np.array([], np.int64), 0.0, 1.0, 1.0, 0, 0, 0) == 1
    # penalty 4 turns 2.0 into 0.5: index 2 wins greedily
    assert sample(logits, np.array([1, 1]), 0.0, 1.0, 4.0, 0, 0, 0) == 2
    # top_p tiny keeps only the argmax whatever the RNG says
    for seed in range(20):
        assert sample(logits, np.array([], np.int64), 1.0, 1e-6, 1.0, seed, 0, 0) == 1


def test_fp16_bundle_runs_and_tracks_fp32(tiny_ckpt, tiny_bundle, tmp_path):
    import onnxruntime as ort

    from s1mini_export.export import export
    from s1mini_export.llm import SlowRunner

    out = tmp_path / "fp16"
    m = export(tiny_ckpt, out, "fp16", {"llm"}, log=lambda s: None)
    assert m["precision"] == "fp16"
    tokens = np.zeros((1, 11, 4), np.int64)
    tokens[0, 0] = [m["tokens"]["interleave"], 40, 41, 42]
    outs = []
    for bundle, dt in ((tiny_bundle, np.float32), (out, np.float16)):
        s = ort.InferenceSession(str(bundle / "slow.onnx"), providers=["CPUExecutionProvider"])
        r = SlowRunner(s, json.loads((bundle / "manifest.json").read_text()), capacity=6)
        logits, hidden = r.run(tokens)
        assert logits.dtype == dt and r.cache["past_key_0"].dtype == dt
        outs.append(logits.astype(np.float32))
    assert np.abs(outs[0] - outs[1]).max() < 2e-2 * np.abs(outs[0]).max()
