"""The codec part of the bundle: fish-speech's modded DAC -> codec_decode.onnx / codec_encode.onnx /
codec_decode_step.onnx (the stateful streaming decoder, codec_step.py).

Public API (used by the CLI and the golden script):
- random_codec_checkpoint(kind, seed, path): a codec.pth of the real ("s1-mini") or test ("tiny")
  size, in the real checkpoint's key layout, with random but non-degenerate weights.
- load_reference_codec(codec_pth): fish-speech's own DAC with those weights (the oracle).
- reference_decode / reference_encode: DAC.decode / DAC.encode through that oracle.
- export_codec(codec_pth, out_dir, precision, parts): writes the graphs of docs/bundle-format.md and
  returns the manifest's "codec" section and the file names.

codec_decode.onnx has one input beyond the contract's `codes`: `start_frame` ([1] int64, default 0
through an overridable initializer, so a call feeding only `codes` is DAC.decode). It is the absolute
frame index of codes[:, 0] for post_module's RoPE. fish-speech's RoPE table is bf16-rounded, so the
same frames decoded at shifted positions differ by ~3e-4; a streaming chunk decoded with
`receptive_field_frames` of left context and start_frame = its first context frame equals the
one-shot decode to ~1e-6 (tested). start_frame + T must stay <= max_decode_frames (table length).
ONNX Runtime logs a warning per session about the overridable initializer; TensorRT may fold it to 0.

Precision: "fp32" graphs compute in f32. "fp16" graphs compute in f16 (weights stored f16) with the
contract's f32 `pcm` I/O: the decode graph casts its output to f32, the encode graph casts its
input to f16. RMSNorm and RoPE still compute in f32 inside the fp16 graphs, as fish-speech's modules
do under `.half()`. fp16 encode codes can differ from the f32 reference where two codebook entries
are near-ties; fp16 decode PCM differs by ~1e-3.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .codec_config import CONFIG_KEY, KINDS, CodecConfig, build_dac, config_from_state_dict, normalize_state_dict
from .codec_graph import DecodeGraph, EncodeGraph, export_patches, prepare_for_export, receptive_field_frames
from .codec_step import DecodeStepGraph
from .errors import ExportError

OPSET = 17
PARTS = ("codec-decode", "codec-encode", "codec-decode-step")
PRECISIONS = ("fp32", "fp16")
FILES = {
    "codec-decode": "codec_decode.onnx",
    "codec-encode": "codec_encode.onnx",
    "codec-decode-step": "codec_decode_step.onnx",
}
# The decoder weights of codec_decode.onnx and codec_decode_step.onnx, stored once for both.
SHARED_DECODER_DATA = "codec_decoder.onnx.data"
# Offsets of the shared tensors are multiples of the page size, so that each tensor starts on
# its own page of the file, which ONNX Runtime maps rather than copies (measured: two sessions of
# the S1-mini decoder, 2.23 GiB RSS with embedded weights, 1.57 GiB sharing this file).
DATA_ALIGN = 4096
# Tensors smaller than this stay inside the graph (onnx's own default threshold).
DATA_MIN_BYTES = 1024


# --------------------------------------------------------------------------------------------------
# Random checkpoints


@torch.no_grad()
def _randomize(dac: nn.Module, gen: torch.Generator) -> None:
    """Replaces fish-speech's training init, whose residual branches start near zero (ConvNeXt
    gamma 1e-6, LayerScale 1e-2, zero biases), by weights that make every branch matter while PCM
    stays finite and well inside tanh's range."""

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std + mean)

    for name, p in dac.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("parametrizations.weight.original0") or leaf == "weight_g":
            # Weight-norm magnitude per output channel: ~unit gain for unit-variance input.
            uniform(p, 0.45, 0.85)
        elif name.endswith("parametrizations.weight.original1") or leaf == "weight_v":
            normal(p, 1.0)
        elif leaf == "alpha":  # Snake
            uniform(p, 0.45, 0.85)
        elif leaf == "gamma":  # LayerScale / ConvNeXt layer scale
            uniform(p, 0.45, 0.85)
        elif "codebook" in name:
            normal(p, 1.0)
        elif leaf == "bias":
            normal(p, 0.02)
        elif p.ndim == 1:  # RMSNorm / LayerNorm weights
            normal(p, 0.1, 1.0)
        elif p.ndim == 2:  # Linear: variance-preserving
            normal(p, 1.0 / math.sqrt(p.shape[1]))
        elif p.ndim == 3:  # plain (non-weight-normed) convs: downsample / upsample
            fan_in = p.shape[1] * p.shape[2] if "downsample" in name or "dwconv" in name else p.shape[0]
            normal(p, 1.0 / math.sqrt(fan_in))
        else:
            raise AssertionError(f"unexpected codec parameter {name} {tuple(p.shape)}")


def random_codec_checkpoint(kind: str, seed: int, path: Path) -> None:
    """Writes codec.pth for `kind` ("s1-mini": the real architecture and sizes; "tiny": the test
    codec) with seeded random weights, in the layout of the real file: DAC.state_dict() keys,
    weight-norm parametrizations, persistent buffers (RoPE tables, causal masks) included.

    The tiny checkpoint also carries CONFIG_KEY (attention windows); a real-layout one does not,
    like the real file, and loads with modded_dac_vq.yaml's values.
    """
    if kind not in KINDS:
        raise ExportError(f"unknown codec kind {kind!r} (expected one of {', '.join(KINDS)})")
    cfg = KINDS[kind]
    torch.manual_seed(seed)  # fish-speech's constructors draw from the global generator
    dac = build_dac(cfg)
    _randomize(dac, torch.Generator().manual_seed(seed))
    sd: dict[str, object] = dict(dac.state_dict())
    if kind != "s1-mini":
        sd[CONFIG_KEY] = cfg.stored_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)


# --------------------------------------------------------------------------------------------------
# The fish-speech oracle


def read_codec(codec_pth: Path) -> tuple[dict[str, torch.Tensor], CodecConfig]:
    """codec.pth -> (DAC state dict, its CodecConfig)."""
    if not codec_pth.is_file():
        raise ExportError(f"{codec_pth}: file not found")
    try:
        raw = torch.load(codec_pth, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ExportError(f"{codec_pth}: cannot load ({str(e).splitlines()[0]})") from None
    sd, extra = normalize_state_dict(raw, str(codec_pth))
    return sd, config_from_state_dict(sd, extra, str(codec_pth))


def load_reference_codec(codec_pth: Path) -> nn.Module:
    """fish-speech's DAC (f32, eval, CPU) holding codec.pth's weights, sizes read from the file.

    Loads like fish_speech/models/dac/inference.py load_model (strict=False, assign=True), but a
    weight the model expects and the file lacks is an error instead of a silent random weight.
    """
    return _load(codec_pth)[0]


def _load(codec_pth: Path) -> tuple[nn.Module, CodecConfig]:
    sd, cfg = read_codec(codec_pth)
    dac = build_dac(cfg)
    result = dac.load_state_dict(sd, strict=False, assign=True)
    if result.missing_keys:
        raise ExportError(
            f"{codec_pth}: missing codec weights {result.missing_keys[:3]} (of {len(result.missing_keys)})"
        )
    dac.float().eval()
    return dac, cfg


@torch.no_grad()
def reference_decode(codec_pth: Path, codes: np.ndarray, dac: nn.Module | None = None) -> np.ndarray:
    """codes: [N, T] int -> pcm: [T * frame_samples] f32, by fish-speech's DAC.decode."""
    dac = dac if dac is not None else load_reference_codec(codec_pth)
    c = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    audio, _ = dac.decode(c[None], torch.tensor([c.shape[-1]]))  # [1, 1, T * frame_samples]
    return audio[0, 0].float().numpy()


@torch.no_grad()
def reference_encode(codec_pth: Path, pcm: np.ndarray, dac: nn.Module | None = None) -> np.ndarray:
    """pcm: [S] f32 (44.1 kHz mono) -> codes: [N, ceil(S / frame_samples)] int64, by DAC.encode."""
    dac = dac if dac is not None else load_reference_codec(codec_pth)
    x = torch.from_numpy(np.asarray(pcm, dtype=np.float32)).reshape(1, 1, -1)
    codes, _ = dac.encode(x, torch.tensor([x.shape[-1]]))  # [1, N, T]
    return codes[0].numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Export


def codec_manifest(dac: nn.Module, cfg: CodecConfig) -> dict:
    """The manifest's "codec" section (docs/bundle-format.md)."""
    return {
        "sample_rate_hz": int(dac.sample_rate),
        "frame_samples": int(dac.frame_length),
        "num_codebooks": 1 + cfg.n_codebooks,
        "codebook_sizes": [cfg.semantic_codebook_size] + [cfg.codebook_size] * cfg.n_codebooks,
        "receptive_field_frames": receptive_field_frames(dac),
        # post_module's RoPE table: DAC.decode of more frames indexes past it.
        "max_decode_frames": int(dac.quantizer.post_module.freqs_cis.shape[0]),
        "max_encode_frames": max_encode_frames(dac),
    }


def max_encode_frames(dac: nn.Module) -> int:
    """Longest input DAC.encode handles, in frames: every RoPE table on the encode path (the
    encoder's window transformers at the encoder rate, pre_module at the frame rate) must cover
    the positions it is indexed with; more frames index past a table."""
    per_frame = int(dac.frame_length) // int(dac.hop_length)  # encoder positions per frame
    limits = [int(dac.quantizer.pre_module.freqs_cis.shape[0])]
    for m in dac.encoder.modules():
        table = getattr(m, "freqs_cis", None)
        if isinstance(table, torch.Tensor):
            limits.append(int(table.shape[0]) // per_frame)
    return min(limits)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str], dynamic_axes: dict[str, dict[int, str]]) -> None:
    with export_patches():
        _export_traced(module, args, path, inputs, outputs, dynamic_axes)


def _export_traced(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
                   outputs: list[str], dynamic_axes: dict[str, dict[int, str]]) -> None:
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=False,  # the TorchScript exporter traces these plain modules reliably at opset 17
        opset_version=OPSET,
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )


def _fuse_snakes(path: Path) -> None:
    """Each Snake of the fp32 graph at `path` as one `ai.s1mini.Snake` node (snake.py)."""
    import onnx

    from .snake import fuse_snakes

    model = onnx.load(str(path))
    if fuse_snakes(model):
        onnx.save(model, str(path))


def _default_input(path: Path, name: str, value: np.ndarray) -> None:
    """Gives graph input `name` an initializer of the same name: ONNX Runtime then lets callers
    leave it out (default `value`) or feed it (an "overridable initializer")."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    assert any(i.name == name for i in model.graph.input), name
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    onnx.save(model, str(path))


@torch.no_grad()
def export_codec(codec_pth: Path, out_dir: Path, precision: str, parts: set[str]) -> dict:
    """Writes codec_decode.onnx / codec_encode.onnx / codec_decode_step.onnx (the requested
    `parts`) into out_dir.

    Returns {"codec": <manifest codec section>, "files": [written file names]}.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r} (expected fp32 or fp16)")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ExportError(f"unknown codec part {sorted(unknown)[0]!r} (expected {' or '.join(PARTS)})")
    dac, cfg = _load(codec_pth)
    section = codec_manifest(dac, cfg)
    prepare_for_export(dac)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if dtype != torch.float32:
        dac.to(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    frames = 3  # the example's length; every length axis is dynamic
    if "codec-decode" in parts:
        codes = torch.zeros(1, section["num_codebooks"], frames, dtype=torch.int64)
        start = torch.zeros(1, dtype=torch.int64)
        path = out_dir / FILES["codec-decode"]
        _export(DecodeGraph(dac, dtype).eval(), (codes, start), path, ["codes", "start_frame"], ["pcm"],
                {"codes": {2: "T"}, "pcm": {2: "samples"}})
        # start_frame defaults to 0 (one-shot decode): the contract's single-input call still works.
        _default_input(path, "start_frame", np.zeros(1, dtype=np.int64))
        files.append(FILES["codec-decode"])
    if "codec-encode" in parts:
        pcm = torch.zeros(1, 1, frames * section["frame_samples"] - 100, dtype=torch.float32)
        _export(EncodeGraph(dac, dtype).eval(), (pcm,), out_dir / FILES["codec-encode"], ["pcm"], ["codes"],
                {"pcm": {2: "S"}, "codes": {2: "T"}})
        files.append(FILES["codec-encode"])
    if "codec-decode-step" in parts:
        # After the other graphs: their bytes do not depend on whether this one is exported.
        section["step_state"] = export_decode_step(dac, dtype, section, out_dir / FILES["codec-decode-step"])
        files.append(FILES["codec-decode-step"])
    if dtype == torch.float32:
        for name in files:
            _fuse_snakes(out_dir / name)
    if "codec-decode" in parts and "codec-decode-step" in parts:
        share_weights(out_dir, [FILES["codec-decode"], FILES["codec-decode-step"]], SHARED_DECODER_DATA)
        files.append(SHARED_DECODER_DATA)
    return {"codec": section, "files": files}


def share_weights(out_dir: Path, graphs: list[str], data_name: str) -> None:
    """Moves the initializers of `graphs` (ONNX files in out_dir, weights inside) into one
    external-data file `data_name`, each distinct tensor once: the two decode graphs hold the
    same decoder weights (S1-mini: 739 MB each), so the bundle stores them once, and ONNX Runtime,
    which maps page-aligned external data from the file, keeps one copy of the file's pages for
    both sessions (docs/bundle-format.md, "Shared decoder weights"). Deterministic: tensors in
    graph order, the first occurrence wins."""
    import hashlib

    import onnx

    where: dict[tuple[int, str], tuple[int, int]] = {}
    with open(out_dir / data_name, "wb") as data:
        for name in graphs:
            model = onnx.load(str(out_dir / name))
            for t in model.graph.initializer:
                raw = t.raw_data
                if len(raw) < DATA_MIN_BYTES:
                    continue
                key = (t.data_type, hashlib.sha256(raw).hexdigest())
                if key not in where:
                    offset = -data.tell() % DATA_ALIGN + data.tell()
                    data.write(b"\0" * (offset - data.tell()))
                    data.write(raw)
                    where[key] = (offset, len(raw))
                offset, length = where[key]
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
            onnx.save(model, str(out_dir / name))


def export_decode_step(dac: nn.Module, dtype: torch.dtype, section: dict, path: Path) -> list[dict]:
    """Writes codec_decode_step.onnx (codec_step.DecodeStepGraph) and returns the manifest's
    `codec.step_state`: per state tensor its name, graph input / output and shape."""
    step = DecodeStepGraph(dac, dtype).eval()
    spec = step.state_spec()
    codes = torch.zeros(1, section["num_codebooks"], 3, dtype=torch.int64)
    start = torch.zeros(1, dtype=torch.int64)
    past = tuple(torch.zeros(shape, dtype=dtype) for _, shape in spec)
    ins = ["codes", "start_frame"] + [f"past.{n}" for n, _ in spec]
    outs = ["pcm"] + [f"present.{n}" for n, _ in spec]
    _export(step, (codes, start, *past), path, ins, outs, {"codes": {2: "T"}, "pcm": {2: "samples"}})
    return [{"name": n, "input": f"past.{n}", "output": f"present.{n}", "shape": list(shape)} for n, shape in spec]


# --------------------------------------------------------------------------------------------------
# Measurement (not a test): python -m s1mini_export.codec measure [--kind s1-mini] [--dir /tmp/x]


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure(kind: str, work: Path) -> None:
    import onnxruntime as ort

    work.mkdir(parents=True, exist_ok=True)
    pth = work / "codec.pth"
    t0 = time.perf_counter()
    random_codec_checkpoint(kind, 0, pth)
    t1 = time.perf_counter()
    print(f"checkpoint: {t1 - t0:.1f} s, {pth.stat().st_size} B, peak RSS {_peak_rss_bytes() / 2**30:.2f} GiB")
    for precision in ("fp32",):
        out = work / f"bundle-{precision}"
        t1 = time.perf_counter()
        info = export_codec(pth, out, precision, set(PARTS))
        t2 = time.perf_counter()
        sizes = {f: (out / f).stat().st_size for f in info["files"]}
        print(f"export {precision}: {t2 - t1:.1f} s, sizes {sizes}, peak RSS {_peak_rss_bytes() / 2**30:.2f} GiB")
        print(f"codec section: {info['codec']}")
        frames = 40
        rng = np.random.default_rng(0)
        codes = np.stack([rng.integers(0, n, frames) for n in info["codec"]["codebook_sizes"]])
        dac = load_reference_codec(pth)
        t3 = time.perf_counter()
        ref = reference_decode(pth, codes, dac)
        t4 = time.perf_counter()
        sess = ort.InferenceSession(str(out / FILES["codec-decode"]), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"codes": codes[None]})[0][0, 0]
        t5 = time.perf_counter()
        print(f"decode {frames} frames: torch {t4 - t3:.2f} s, ort {t5 - t4:.2f} s (incl. session), "
              f"max |diff| {np.abs(got - ref).max():.2e}, pcm std {ref.std():.3f}")
        pcm = (0.5 * np.sin(np.arange(40000) * 0.03) + 0.05 * rng.standard_normal(40000)).astype(np.float32)
        ref_c = reference_encode(pth, pcm, dac)
        sess = ort.InferenceSession(str(out / FILES["codec-encode"]), providers=["CPUExecutionProvider"])
        got_c = sess.run(None, {"pcm": pcm[None, None]})[0][0]
        print(f"encode {pcm.size} samples: codes equal {np.array_equal(ref_c, got_c)} "
              f"({int((ref_c != got_c).sum())} of {ref_c.size} differ)")
        print(f"peak RSS {_peak_rss_bytes() / 2**30:.2f} GiB")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["measure"])
    ap.add_argument("--kind", default="s1-mini", choices=list(KINDS))
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    d = a.dir or Path(tempfile.mkdtemp(prefix="codec-measure-"))
    _measure(a.kind, d)
    print(f"work dir {d} (delete it when done)")
    os.sys.stdout.flush()
