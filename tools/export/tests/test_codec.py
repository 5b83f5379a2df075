"""Codec graphs against fish-speech's own DAC (the oracle), on the tiny random codec.

Run: .venv/bin/python -m pytest tools/export/tests/test_codec.py
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s1mini_export import codec  # noqa: E402
from s1mini_export.codec_config import REAL, TINY, build_dac, config_from_state_dict  # noqa: E402
from s1mini_export.errors import ExportError  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)  # dac's torch.nn.utils.weight_norm
warnings.filterwarnings("ignore", category=UserWarning)
ort.set_default_logger_severity(3)  # start_frame is an overridable initializer: ORT warns per session

PCM_ATOL_FP32 = 1e-4
SEED = 1234


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("codec")
    pth = d / "codec.pth"
    codec.random_codec_checkpoint("tiny", SEED, pth)
    info = codec.export_codec(pth, d / "bundle", "fp32", set(codec.PARTS))
    dac = codec.load_reference_codec(pth)
    return {"pth": pth, "dir": d / "bundle", "info": info, "dac": dac}


@functools.cache
def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _decode(tiny: dict, codes: np.ndarray, start_frame: int | None = None) -> np.ndarray:
    # codes: [10, T] -> pcm: [T * 2048]
    feeds = {"codes": codes[None].astype(np.int64)}
    if start_frame is not None:
        feeds["start_frame"] = np.array([start_frame], dtype=np.int64)
    return _session(str(tiny["dir"] / "codec_decode.onnx")).run(None, feeds)[0][0, 0]


def _random_codes(rng: np.random.Generator, sizes: list[int], t: int) -> np.ndarray:
    return np.stack([rng.integers(0, n, t) for n in sizes]).astype(np.int64)


def _signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100.0
    x = 0.4 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 1375.0 * t + 1.0)
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_codec_manifest_section_matches_tiny_config(tiny: dict) -> None:
    c = tiny["info"]["codec"]
    assert tiny["info"]["files"] == ["codec_decode.onnx", "codec_encode.onnx", "codec_decode_step.onnx",
                                     codec.SHARED_DECODER_DATA]
    assert c["sample_rate_hz"] == 44100 and c["frame_samples"] == 2048 and c["num_codebooks"] == 10
    assert c["codebook_sizes"] == [1024] * 10  # = the tiny LLM's codebook_size
    # 2 layers x (window 8 - 1) + 10 frames of conv context (see receptive_field_frames).
    assert c["receptive_field_frames"] == 2 * 7 + 10
    assert c["max_decode_frames"] == TINY.post.block_size
    # Encoder RoPE table 512 positions at 4 per frame (hop 512, frame 2048); pre_module 512 frames.
    assert c["max_encode_frames"] == min(TINY.encoder_block_size // 4, TINY.pre.block_size) == 128


def test_codec_tiny_graphs_are_small_opset17_batch1(tiny: dict) -> None:
    total = 0
    for name in tiny["info"]["files"]:
        path = tiny["dir"] / name
        total += path.stat().st_size
        if not name.endswith(".onnx"):
            continue
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
        # Built from shapes in-graph: no T x T mask constant in the file.
        assert all(i.data_type != onnx.TensorProto.BOOL for i in m.graph.initializer)
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert total <= 4.8e6, total


@pytest.mark.parametrize("t", [1, 7, 40])
def test_codec_decode_graph_matches_dac_decode(tiny: dict, t: int) -> None:
    codes = _random_codes(np.random.default_rng(t), tiny["info"]["codec"]["codebook_sizes"], t)
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])
    got = _decode(tiny, codes)
    assert got.shape == ref.shape == (t * 2048,)
    assert np.isfinite(ref).all() and ref.std() > 1e-2  # random weights still give real audio
    assert np.abs(got - ref).max() < PCM_ATOL_FP32


def test_codec_decode_clamps_out_of_range_codes_like_quantizer(tiny: dict) -> None:
    rng = np.random.default_rng(5)
    codes = _random_codes(rng, [1024] * 10, 6)
    codes[0, 1] = 5000  # semantic row clamps at semantic_codebook_size - 1
    codes[3, 2] = 1024  # residual rows clamp at codebook_size - 1
    codes[9, 4] = 99999
    clamped = codes.copy()
    clamped[0] = np.minimum(clamped[0], 1023)
    clamped[1:] = np.minimum(clamped[1:], 1023)
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])  # quantizer.decode clamps
    np.testing.assert_array_equal(ref, codec.reference_decode(tiny["pth"], clamped, tiny["dac"]))
    assert np.abs(_decode(tiny, codes) - ref).max() < PCM_ATOL_FP32


@pytest.mark.parametrize("n", [5000, 44100, 77777])
def test_codec_encode_graph_matches_dac_encode(tiny: dict, n: int) -> None:
    x = _signal(n, n)
    ref = codec.reference_encode(tiny["pth"], x, tiny["dac"])
    got = _session(str(tiny["dir"] / "codec_encode.onnx")).run(None, {"pcm": x[None, None]})[0][0]
    assert ref.shape == (10, -(-n // 2048))
    np.testing.assert_array_equal(got, ref)
    assert len(np.unique(ref[0])) > 1  # the codes are not all alike


@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_codec_chunked_decode_with_receptive_field_equals_one_shot(tiny: dict, chunk: int) -> None:
    t, frame = 64, 2048
    ctx = tiny["info"]["codec"]["receptive_field_frames"]
    codes = _random_codes(np.random.default_rng(chunk), [1024] * 10, t)
    full = _decode(tiny, codes)
    out = []
    for start in range(0, t, chunk):
        end = min(t, start + chunk)
        begin = max(0, start - ctx)  # left context, decoded and then dropped
        pcm = _decode(tiny, codes[:, begin:end], start_frame=begin)
        out.append(pcm[(start - begin) * frame :])
    assert np.abs(np.concatenate(out) - full).max() < PCM_ATOL_FP32


def test_codec_receptive_field_is_tight(tiny: dict) -> None:
    # Changing frame 0 changes output frame R = receptive_field_frames and nothing after it.
    r = tiny["info"]["codec"]["receptive_field_frames"]
    codes = _random_codes(np.random.default_rng(9), [1024] * 10, r + 8)
    a = codec.reference_decode(tiny["pth"], codes, tiny["dac"]).reshape(-1, 2048)
    codes[:, 0] = (codes[:, 0] + 1) % 1024
    b = codec.reference_decode(tiny["pth"], codes, tiny["dac"]).reshape(-1, 2048)
    changed = np.nonzero(np.abs(a - b).max(axis=1))[0]
    assert changed.max() == r


def test_codec_receptive_field_real_architecture() -> None:
    with torch.device("meta"):
        dac = build_dac(REAL)
    # post_module: 8 layers x (128 - 1) frames, plus 10 frames of causal conv context.
    assert codec.codec_manifest(dac, REAL)["receptive_field_frames"] == 8 * 127 + 10


def test_codec_real_shape_parameter_counts_match_facts() -> None:
    # S1MINI_FACTS §4.3: total 391.4 M, decode path ~184.5 M; state dict 1,870.85 MB.
    with torch.device("meta"):
        dac = build_dac(REAL)
    params = dict(dac.named_parameters())
    total = sum(p.numel() for p in params.values())
    decode_prefixes = ("quantizer.post_module", "quantizer.upsample", "decoder",
                       "quantizer.semantic_quantizer", "quantizer.quantizer")
    decode = sum(p.numel() for k, p in params.items()
                 if k.startswith(decode_prefixes) and "in_proj" not in k)
    assert abs(total / 1e6 - 391.4) < 0.1, total
    assert abs(decode / 1e6 - 184.5) < 0.1, decode
    sd = dac.state_dict()
    assert abs(sum(v.numel() * v.element_size() for v in sd.values()) / 1e6 - 1870.85) < 0.1
    # The sizes read back from a real-layout state dict are modded_dac_vq.yaml's.
    assert config_from_state_dict(sd, {}, "codec.pth") == REAL


def test_codec_build_matches_hydra_instantiate_of_yaml() -> None:
    # fish-speech's load_model builds the codec from configs/modded_dac_vq.yaml through hydra:
    # ours must have exactly its keys and shapes, or a real codec.pth would not load.
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    import fish_speech

    conf = Path(list(fish_speech.__path__)[0]) / "configs"  # a namespace package: no __file__
    hydra.core.global_hydra.GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(config_name="modded_dac_vq")
    with torch.device("meta"):
        theirs = instantiate(cfg)
        ours = build_dac(REAL)
    a = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert a == b


def test_codec_fp16_graphs_keep_f32_io_and_stay_close(tiny: dict, tmp_path: Path) -> None:
    info = codec.export_codec(tiny["pth"], tmp_path, "fp16", {"codec-decode"})
    assert info["files"] == ["codec_decode.onnx"]
    sess = ort.InferenceSession(str(tmp_path / "codec_decode.onnx"), providers=["CPUExecutionProvider"])
    codes = _random_codes(np.random.default_rng(3), [1024] * 10, 12)
    got = sess.run(None, {"codes": codes[None]})[0]
    assert got.dtype == np.float32
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])
    assert np.abs(got[0, 0] - ref).max() < 2e-2


def test_codec_export_rejects_unknown_part_and_precision(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown codec part"):
        codec.export_codec(tiny["pth"], tmp_path, "fp32", {"codec-vocoder"})
    with pytest.raises(ExportError, match="unknown precision"):
        codec.export_codec(tiny["pth"], tmp_path, "bf8", {"codec-decode"})
    with pytest.raises(ExportError, match="file not found"):
        codec.load_reference_codec(tmp_path / "missing.pth")


def test_codec_random_checkpoint_is_deterministic_and_loads_like_fish_speech(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    codec.random_codec_checkpoint("tiny", 7, a)
    codec.random_codec_checkpoint("tiny", 7, b)
    sa = torch.load(a, weights_only=True)
    sb = torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))
    # Real key layout: weight-norm parametrizations, persistent RoPE/mask buffers.
    assert "encoder.block.0.conv.parametrizations.weight.original0" in sa
    assert "quantizer.post_module.causal_mask" in sa and "quantizer.post_module.freqs_cis" in sa
    # The graphs are byte-identical too (the golden fixture is regenerated and diffed in CI).
    codec.export_codec(a, tmp_path / "ga", "fp32", {"codec-decode"})
    codec.export_codec(b, tmp_path / "gb", "fp32", {"codec-decode"})
    assert (tmp_path / "ga/codec_decode.onnx").read_bytes() == (tmp_path / "gb/codec_decode.onnx").read_bytes()
    # fish-speech's own loader semantics (strict=False, assign=True) accept it as is.
    dac = build_dac(TINY)
    result = dac.load_state_dict(sa, strict=False, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == ["codec_config"]


def test_codec_decode_graphs_store_their_shared_weights_once(tiny: dict) -> None:
    d = tiny["dir"]
    external: dict[str, list[tuple[str, int, int]]] = {}
    for name in ("codec_decode.onnx", "codec_decode_step.onnx"):
        m = onnx.load(str(d / name), load_external_data=False)
        ext = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ext, f"{name} has no external weights"
        entries = [{e.key: e.value for e in t.external_data} for t in ext]
        assert {e["location"] for e in entries} == {codec.SHARED_DECODER_DATA}
        assert all(int(e["offset"]) % codec.DATA_ALIGN == 0 for e in entries)
        external[name] = [(t.name, int(e["offset"]), int(e["length"])) for t, e in zip(ext, entries)]
    # Every decoder weight of the step graph is one of the one-shot graph's: no byte twice.
    one_shot = {(o, n) for _, o, n in external["codec_decode.onnx"]}
    assert {(o, n) for _, o, n in external["codec_decode_step.onnx"]} <= one_shot
    size = (d / codec.SHARED_DECODER_DATA).stat().st_size
    assert size < sum(n for _, n in one_shot) + codec.DATA_ALIGN * len(one_shot)
    assert size >= sum(n for _, n in one_shot)


# --------------------------------------------------------------------------------------------------
# codec_decode_step.onnx: streamed decode with carried state

STEP_RTOL = 1e-5  # streamed vs one-shot graph, relative to the one-shot's max |pcm|
CHUNKINGS = [(1, 1), (4, 16), (2, 7), (16, 64)]


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def stream_step(sess: ort.InferenceSession, spec: list[dict], codes: np.ndarray, first: int, rest: int,
                dtype=np.float32) -> np.ndarray:
    """codes [N, T] -> pcm [T * 2048] through the step graph: `first` frames, then `rest` each,
    state carried from all zeros at start_frame 0."""
    state = {s["input"]: np.zeros(s["shape"], dtype) for s in spec}
    out, s, t = [], 0, codes.shape[1]
    while s < t:
        e = min(t, s + (first if s == 0 else rest))
        res = sess.run(None, {"codes": codes[None, :, s:e], "start_frame": np.array([s], np.int64), **state})
        assert res[0].shape == (1, 1, (e - s) * 2048)
        out.append(res[0][0, 0])
        for x, v in zip(spec, res[1:], strict=True):
            assert list(v.shape) == x["shape"], (x["output"], v.shape)
        state = {x["input"]: v for x, v in zip(spec, res[1:], strict=True)}
        s = e
    return np.concatenate(out)


def test_codec_step_graph_io_and_manifest(tiny: dict) -> None:
    c = tiny["info"]["codec"]
    spec = c["step_state"]
    m = onnx.load(str(tiny["dir"] / "codec_decode_step.onnx"))
    onnx.checker.check_model(m)
    ins = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    outs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    assert list(ins)[:2] == ["codes", "start_frame"] and list(outs)[0] == "pcm"
    assert ins["codes"] == [1, 10, "T"] and ins["start_frame"] == [1]
    # Every state tensor has a fixed shape (work per chunk does not grow with the position), and
    # the output of one call is the next call's input.
    assert [s["input"] for s in spec] == list(ins)[2:] and [s["output"] for s in spec] == list(outs)[1:]
    for s in spec:  # (the outputs' static shapes are checked at run time by stream_step)
        assert ins[s["input"]] == s["shape"], s
    by_name = {s["name"]: s["shape"] for s in spec}
    # post_module: 2 layers x 4 heads x (window 8 - 1) positions x head_dim 16.
    assert by_name["keys"] == by_name["values"] == [2, 1, 4, 7, 16]
    # The residual units' dilated k7 convs keep 6 * dilation samples; the decoder's transposed
    # convs (k = 2 * stride) one input sample; upsample's (k = stride) none.
    assert by_name["decoder.model.1.block.4.block.1"] == [1, 16, 54]
    assert by_name["decoder.model.1.block.1"] == [1, 32, 1]
    assert not any(n.startswith("quantizer.upsample.0.0") for n in by_name)
    assert len(spec) == 2 + 2 + 1 + 4 * 4 + 1


@pytest.mark.parametrize("first,rest", CHUNKINGS)
def test_codec_step_stream_equals_one_shot_and_dac_decode(tiny: dict, first: int, rest: int) -> None:
    # 100 frames: past the window (8) and the receptive field (24) several times over.
    t = 100
    codes = _random_codes(np.random.default_rng(100 + first), [1024] * 10, t)
    one_shot = _decode(tiny, codes)
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])
    got = stream_step(_session(str(tiny["dir"] / "codec_decode_step.onnx")), tiny["info"]["codec"]["step_state"],
                      codes, first, rest)
    assert got.shape == one_shot.shape == (t * 2048,)
    assert _rel(got, one_shot) <= STEP_RTOL, _rel(got, one_shot)
    assert np.abs(got - ref).max() < PCM_ATOL_FP32 and np.abs(one_shot - ref).max() < PCM_ATOL_FP32


def test_codec_step_torch_module_equals_dac_decode(tiny: dict) -> None:
    # The PyTorch step module itself (before ONNX) against fish-speech's DAC.decode.
    from s1mini_export.codec_graph import prepare_for_export
    from s1mini_export.codec_step import DecodeStepGraph, stream_decode

    dac, _ = codec._load(tiny["pth"])
    step = DecodeStepGraph(prepare_for_export(dac)).eval()
    codes = _random_codes(np.random.default_rng(77), [1024] * 10, 40)
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])
    got = stream_decode(step, torch.from_numpy(codes)[None], [3, 5])[0, 0].numpy()
    assert _rel(got, ref) <= STEP_RTOL


def test_codec_step_fp16_graph_runs_and_stays_close(tiny: dict, tmp_path: Path) -> None:
    info = codec.export_codec(tiny["pth"], tmp_path, "fp16", {"codec-decode-step"})
    assert info["files"] == ["codec_decode_step.onnx"]
    sess = ort.InferenceSession(str(tmp_path / "codec_decode_step.onnx"), providers=["CPUExecutionProvider"])
    codes = _random_codes(np.random.default_rng(4), [1024] * 10, 24)
    got = stream_step(sess, info["codec"]["step_state"], codes, 4, 16, dtype=np.float16)
    assert got.dtype == np.float32
    ref = codec.reference_decode(tiny["pth"], codes, tiny["dac"])
    assert np.abs(got - ref).max() < 2e-2


def test_codec_fp32_graphs_hold_each_snake_as_one_function_node(tiny: dict) -> None:
    from dac.nn.layers import Snake1d

    from s1mini_export.snake import DOMAIN, OP

    dac = tiny["dac"]
    snakes = {
        "codec_decode.onnx": sum(isinstance(m, Snake1d) for m in dac.decoder.modules()),
        "codec_decode_step.onnx": sum(isinstance(m, Snake1d) for m in dac.decoder.modules()),
        "codec_encode.onnx": sum(isinstance(m, Snake1d) for m in dac.encoder.modules()),
    }
    for name, want in snakes.items():
        m = onnx.load(str(tiny["dir"] / name), load_external_data=False)
        ops = [(n.domain, n.op_type) for n in m.graph.node]
        assert want > 0 and ops.count((DOMAIN, OP)) == want, name
        assert ("", "Sin") not in ops, name
        assert [(f.domain, f.name) for f in m.functions] == [(DOMAIN, OP)]
        assert [o.version for o in m.opset_import if o.domain == DOMAIN] == [1]


def _snake_model(tmp: Path, also_output_sin: bool) -> onnx.ModelProto:
    from s1mini_export.codec_graph import snake

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.alpha = torch.nn.Parameter(torch.rand(1, 5, 1) * 3 + 0.1)
            self.conv = torch.nn.Conv1d(5, 5, 3, padding=1)

        def forward(self, x):
            y = self.conv(snake(self.conv(x), self.alpha))
            return (y, torch.sin(self.alpha * y)) if also_output_sin else y

    path = tmp / f"snake{int(also_output_sin)}.onnx"
    outs = ["y", "s"] if also_output_sin else ["y"]
    torch.onnx.export(Net().eval(), (torch.randn(1, 5, 9),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=outs, dynamic_axes={"x": {2: "T"}})
    return onnx.load(str(path))


def test_fuse_snakes_keeps_the_outputs_and_leaves_shared_values_alone(tmp_path: Path) -> None:
    from s1mini_export.snake import fuse_snakes

    x = np.random.default_rng(3).standard_normal((1, 5, 300)).astype(np.float32) * 4
    model = _snake_model(tmp_path, False)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert fuse_snakes(model) == 1 and fuse_snakes(model) == 0
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(after[0], before[0])
    # A Sin outside a Snake (here one whose value is a graph output) stays as it is.
    shared = _snake_model(tmp_path, True)
    assert fuse_snakes(shared) == 1
    assert [n.op_type for n in shared.graph.node].count("Sin") == 1
