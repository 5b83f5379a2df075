"""TensorRT int8 calibration tables for a bundle and a file of sample sentences.

    python -m s1mini_export.calibrate --bundle BUNDLE --sentences FILE --cache-dir DIR [--frames N]

For each sentence (one per line, read exactly as the engine reads `tensorrt_int8_calibration_file`):
the S1 prompt from the bundle's tokenizer (prompt.py), a prefill of slow.onnx with an empty KV past,
then N greedy decode steps. Each step's frame is main token = semantic_begin + argmax of the
restricted head over the semantic rows, and codes from the fast graph's greedy steps, as the
engine's frame loop runs them (position 0 = the slow hidden state, then one step per codebook).
ONNX Runtime's MinMax calibrator (symmetric: the TensorRT provider reads one max |x| per tensor)
records every float tensor of slow.onnx over the prefills and decode steps, and of fast.onnx over
all fast steps, on the CPU. Tensors whose range is infinite (the attention mask's -inf fill) are
left out, so TensorRT keeps them out of int8.

The table's keys are tensor names, and an fp16 export numbers its Cast nodes differently from the
fp32 export of the same checkpoint (`/layers.0/attention/Cast_3_output_0` is another tensor), so
each bundle gets its own tables: an fp16 bundle is calibrated on a copy of its graphs with every
fp16 type turned into fp32 (same nodes, same names; ONNX Runtime's CPU provider lacks most fp16
kernels).

Writes into DIR (created if missing; its parent must exist, as for the engine), under the names the
engine looks up (src/backend/onnx/ep.rs, `calibration_table_name`):
    int8-calibration-<role>-<bundle id>-<sentences hash>.flatbuffers   (role: slow, fast)
bundle id: first 16 hex of sha256(manifest.json); sentences hash: first 16 hex of sha256 of the
sentences joined by "\\n". Each table has a .txt beside it (`tensor max|x|` per line, for reading).
slow and fast get separate tables because their graphs share tensor names (`/Add_output_0`, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cli import _Parser
from .errors import ExportError

ROLES = ("slow", "fast")
DEFAULT_FRAMES = 4
# Weights above this go to a .data file in the fp32 copy of an fp16 graph (protobuf's 2 GiB limit).
INLINE_LIMIT = 1_900_000_000

# Rust's `char::is_whitespace` (Unicode White_Space): what `str::trim` strips in
# read_calibration_sentences. Python's str.strip() would also strip U+001C..U+001F.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

Log = Callable[[str], None]
Feed = dict[str, np.ndarray]


def read_sentences(path: Path) -> list[str]:
    """The sentences of `path` as src/config/gpu.rs read_calibration_sentences reads them: strict
    UTF-8, lines split at \\n (a \\r before it is whitespace), trimmed, empty lines dropped."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ExportError(f"{path}: cannot read the sentences file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not UTF-8 (first invalid byte at offset {e.start})") from None
    lines = [line.strip(RUST_WHITESPACE) for line in text.split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise ExportError(f"{path}: no sentences (one per line)")
    return lines


def sentences_hash(sentences: list[str]) -> str:
    """First 16 hex digits of sha256 of the sentences joined by \\n (ep.rs hex16)."""
    return hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()[:16]


def bundle_id(bundle: Path) -> str:
    """First 16 hex digits of sha256(manifest.json) (ep.rs bundle_id): the manifest lists every
    file's sha256, so another export never reuses these tables."""
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:16]


def table_name(role: str, bundle: str, sentences: list[str]) -> str:
    """The file name the engine looks up in cache_dir for graph `role` of the bundle with id
    `bundle` (ep.rs calibration_table_name)."""
    return f"int8-calibration-{role}-{bundle}-{sentences_hash(sentences)}.flatbuffers"


@dataclass(frozen=True)
class BundleGraphs:
    """What calibration needs of a bundle: its manifest, id and the slow/fast graph paths."""

    dir: Path
    manifest: dict
    id: str
    graphs: dict[str, Path]  # role -> .onnx


def load_bundle(bundle: Path) -> BundleGraphs:
    """Checks that `bundle` is an fp32 or fp16 bundle with the LLM part; names what is wrong otherwise."""
    mpath = bundle / "manifest.json"
    if not mpath.is_file():
        raise ExportError(f"{mpath}: not found (is {bundle} a bundle?)")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{mpath}: cannot read ({_one_line(e)})") from None
    if not isinstance(m, dict):
        raise ExportError(f"{mpath}: not a manifest (a JSON object)")
    precision = m.get("precision")
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"{mpath}: precision {precision!r}: the calibrator takes fp32 or fp16 bundles")
    graphs = m.get("graphs", {})
    missing = [r for r in ROLES if r not in graphs]
    if missing:
        raise ExportError(f"{mpath}: graphs: no {', '.join(missing)} (export with --parts llm)")
    paths = {r: bundle / graphs[r] for r in ROLES}
    needed = [*paths.values(), bundle / "tokenizer.tiktoken", bundle / "special_tokens.json"]
    needed += [bundle / f for f in m.get("files", {}) if f in {graphs[r] + ".data" for r in ROLES}]
    for p in needed:
        if not p.is_file():
            raise ExportError(f"{p}: not found")
    return BundleGraphs(bundle, m, bundle_id(bundle), paths)


def _empty_kv(m: dict, role: str) -> np.ndarray:
    """The fast graph's empty past (the slow graph's caches are SlowRunner's)."""
    c = m["model"]
    if role != "fast":
        raise ValueError("slow.onnx takes per-layer cache buffers: use llm.SlowRunner")
    return np.zeros((c["n_fast_layer"], 1, c["fast_n_local_heads"], 0, c["fast_head_dim"]), np.float32)


def greedy_frame(fast, m: dict, logits: np.ndarray, hidden: np.ndarray, feeds: list[Feed]) -> np.ndarray:
    """One frame [1 + num_codebooks] from a slow step's outputs, greedily (src/generate.rs
    sample_frame at temperature 0, <|im_end|> excluded). Appends every fast feed to `feeds`."""
    head = int(np.argmax(logits[0, : m["head"]["semantic_rows"]]))
    codes = [head]
    kv = _empty_kv(m, "fast")
    past = (kv, kv)
    for k in range(m["model"]["num_codebooks"]):
        # position 0: the hidden state (code ignored); position k: the code sampled at k - 1
        code = np.array([codes[-1] if k else 0], np.int64)
        feed = {"hidden": hidden, "code": code, "past_keys": past[0], "past_values": past[1]}
        feeds.append(feed)
        out, *past = fast.run(None, feed)
        if k:
            codes.append(int(np.argmax(out[0, : m["fast"]["logit_rows"]])))
    return np.array([m["tokens"]["semantic_begin"] + head, *codes], np.int64)


def sentence_feeds(sessions: dict, m: dict, prompt: np.ndarray, frames: int) -> tuple[list[Feed], list[Feed]]:
    """The slow feeds (prefill, then `frames` decode steps) and the fast feeds of one sentence."""
    from .llm import SlowRunner

    slow_feeds: list[Feed] = []
    fast_feeds: list[Feed] = []
    slow = SlowRunner(sessions["slow"], m, capacity=prompt.shape[1] + frames + 1, dtype=np.float32)
    tokens = prompt[None]
    for _ in range(frames + 1):
        slow_feeds.append(slow.feed(tokens))
        logits, hidden = slow.run(tokens)
        frame = greedy_frame(sessions["fast"], m, logits, hidden, fast_feeds)
        tokens = frame[None, :, None]
    return slow_feeds, fast_feeds


class _Feeds:
    """A CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[Feed]):
        self._it = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)


def _session(path: Path, origin: Path):
    """A CPU session of `path` (from prepare_graph); errors name the bundle's graph `origin`."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types (Fail, InvalidGraph, ...)
        raise ExportError(f"{origin}: ONNX Runtime cannot load it ({_one_line(e)})") from None


def upcast_fp16(model) -> None:
    """Turns every fp16 type of `model` into fp32 in place (initializers, Constant and
    ConstantOfShape values, Cast targets, graph inputs and outputs), keeping every node and name.
    Raises ExportError if an fp16 type is left that this does not know."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    def f32(t):
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)

    g = model.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT16:
            t.CopyFrom(f32(t))
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    for n in g.node:
        for a in n.attribute:
            if a.type == AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(f32(a.t))
            elif n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
            elif a.type == AttributeProto.INT and a.name in ("to", "dtype") and a.i == TensorProto.FLOAT16:
                raise ExportError(f"{n.name}: {n.op_type} attribute {a.name} is fp16; the fp32 copy cannot handle it")
            elif a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise ExportError(f"{n.name}: {n.op_type} has a subgraph; the fp32 copy cannot handle it")


def prepare_graph(graph: Path, precision: str, work: Path) -> Path:
    """The graph to run, in `work`: a link to an fp32 graph (with its .data), or the fp32 copy of an
    fp16 one. ORT's calibrator writes its shape-inferred and augmented models beside the model it
    is given, so never the bundle's own path."""
    data = graph.parent / (graph.name + ".data")
    out = work / graph.name
    if precision == "fp32":
        out.symlink_to(graph.resolve())
        if data.is_file():
            (work / data.name).symlink_to(data.resolve())
        return out
    import onnx

    try:
        model = onnx.load(str(graph))
    except Exception as e:
        raise ExportError(f"{graph}: cannot load it ({_one_line(e)})") from None
    upcast_fp16(model)
    big = sum(t.ByteSize() for t in model.graph.initializer) > INLINE_LIMIT
    onnx.save_model(model, str(out), save_as_external_data=big, location=out.name + ".data")
    return out


def _calibrator(graph: Path, origin: Path):
    """ORT's MinMax calibrator for `graph` (from prepare_graph), symmetric ranges; errors name the
    bundle's graph `origin`."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    try:
        return create_calibrator(
            graph,
            augmented_model_path=str(graph.with_suffix(".augmented.onnx")),
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=(graph.parent / (graph.name + ".data")).exists(),
            extra_options={"symmetric": True},
        )
    except Exception as e:
        raise ExportError(f"{origin}: the calibrator cannot load it ({_one_line(e)})") from None


def finite_ranges(calibrator) -> tuple[dict, int]:
    """The calibrated ranges with finite bounds, and how many were left out."""
    data = calibrator.compute_data().data
    keep = {k: v for k, v in data.items() if np.all(np.isfinite(np.asarray(v.range_value, np.float64)))}
    return keep, len(data) - len(keep)


def write_table(ranges: dict, work: Path, role: str, name: str) -> list[Path]:
    """ORT's write_calibration_table into work/role, renamed to `name` (+ its text twin as .txt)."""
    from onnxruntime.quantization.quant_utils import write_calibration_table

    out = work / role
    out.mkdir()
    write_calibration_table(ranges, dir=str(out))
    flat = out / name
    (out / "calibration.flatbuffers").rename(flat)
    text = out / (name.removesuffix(".flatbuffers") + ".txt")
    (out / "calibration.cache").rename(text)
    return [flat, text]


def calibrate(bundle: Path, sentences_file: Path, cache_dir: Path, frames: int, log: Log) -> list[Path]:
    """Computes and writes both tables; returns the .flatbuffers paths. Inputs are checked before
    anything is written; on failure nothing is left in `cache_dir` (nor the directory, if new)."""
    from .prompt import build_prompt, load_encoding

    if frames < 1:
        raise ExportError(f"--frames {frames}: must be at least 1 (decode steps give the KV inputs their ranges)")
    sentences = read_sentences(sentences_file)
    b = load_bundle(bundle)
    m = b.manifest
    enc, ids = load_encoding(bundle)
    prompts = [build_prompt(enc, ids, m["model"]["num_codebooks"], s) for s in sentences]
    for i, p in enumerate(prompts, 1):
        if p.shape[1] + frames > m["model"]["max_seq_len"]:
            raise ExportError(
                f"{sentences_file}: sentence {i}: {p.shape[1]} prompt tokens + {frames} frames exceed the "
                f"model's context ({m['model']['max_seq_len']})"
            )
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ExportError(f"{cache_dir}: not a directory")
    if not cache_dir.parent.is_dir():
        raise ExportError(f"{cache_dir}: parent directory not found (the engine does not create it either)")
    created = not cache_dir.exists()
    try:
        cache_dir.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".int8-calibration-partial-", dir=cache_dir))
    except OSError as e:
        raise ExportError(f"{cache_dir}: cannot create or write ({e.strerror or e})") from None
    try:
        return _run(b, sentences, prompts, frames, cache_dir.resolve(), work, log)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(cache_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    b: BundleGraphs, sentences: list[str], prompts: list, frames: int, cache_dir: Path, work: Path, log: Log
) -> list[Path]:
    graphs = {r: prepare_graph(b.graphs[r], b.manifest["precision"], work) for r in ROLES}
    sessions = {r: _session(graphs[r], b.graphs[r]) for r in ROLES}
    calibrators = {r: _calibrator(graphs[r], b.graphs[r]) for r in ROLES}
    for i, prompt in enumerate(prompts, 1):
        slow_feeds, fast_feeds = sentence_feeds(sessions, b.manifest, prompt, frames)
        calibrators["slow"].collect_data(_Feeds(slow_feeds))
        calibrators["fast"].collect_data(_Feeds(fast_feeds))
        log(
            f"calibrate: sentence {i}/{len(prompts)}: {prompt.shape[1]} prompt tokens, "
            f"{len(slow_feeds)} slow steps, {len(fast_feeds)} fast steps"
        )
    staged = []
    for role in ROLES:
        ranges, dropped = finite_ranges(calibrators[role])
        staged.append((write_table(ranges, work, role, table_name(role, b.id, sentences)), len(ranges), dropped))
    _publish([f for files, _, _ in staged for f in files], cache_dir)
    for files, n, dropped in staged:
        log(f"wrote {cache_dir / files[0].name} ({n} tensor ranges; {dropped} infinite, left out)")
    _warn_stale_engines(cache_dir, log)
    return [cache_dir / files[0].name for files, _, _ in staged]


def _publish(files: list[Path], cache_dir: Path) -> None:
    """Moves `files` into `cache_dir`, all or none."""
    moved: list[Path] = []
    try:
        for f in files:
            os.replace(f, cache_dir / f.name)
            moved.append(cache_dir / f.name)
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        raise


def _warn_stale_engines(cache_dir: Path, log: Log) -> None:
    old = sorted(p.name for r in ROLES for p in cache_dir.glob(f"s1-{r}-int8-*.engine"))
    if old:
        log(
            f"note: {cache_dir} holds int8 engines built before this table ({', '.join(old)}); "
            "TensorRT reuses a cached engine whatever the table says: delete them to rebuild with it"
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _log(msg: str) -> None:
    print(f"s1mini_export: {msg}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m s1mini_export.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="the bundle the engine loads (fp32 or fp16)")
    p.add_argument("--sentences", type=Path, required=True, help="sample sentences, UTF-8, one per line")
    p.add_argument("--cache-dir", type=Path, required=True, help="the engine's cache_dir (created if missing)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="greedy decode steps per sentence (>= 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        paths = calibrate(args.bundle, args.sentences, args.cache_dir, args.frames, _log)
    except ExportError as e:
        print(f"s1mini_export: error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
