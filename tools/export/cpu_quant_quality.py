#!/usr/bin/env python3
"""Quality cost of the CPU bundles' weight-only int8 / int4 (s1mini_export.quantize), measured with
fish-speech's own generate() on the exact quantised weights.

    PYTHONPATH=tools/export .venv/bin/python tools/export/cpu_quant_quality.py --random tiny --precision int4
    PYTHONPATH=tools/export .venv/bin/python tools/export/cpu_quant_quality.py --checkpoint CKPT --bundle QBUNDLE

`--checkpoint` + `--bundle`: a real (or random) checkpoint and the int8/int4 bundle made from it
(`python -m s1mini_export --checkpoint CKPT --out QBUNDLE --precision int4`). `--random`: writes a
random checkpoint, exports it fp32, quantises it, all in a temporary directory.

How: every MatMulNBits matrix of the bundle's slow.onnx and fast.onnx is read back and dequantised
exactly as ONNX Runtime stores it ((q - zero point) * scale per block of `block_size` weights;
symmetric: zero point 2^(bits-1)), and put into fish-speech 0.1.0's DualARTransformer in place of
the checkpoint's matrix (the heads' restricted rows: semantic tokens + <|im_end|>, and the fast
head's first rows). Then int8_quality.py's measurement runs unchanged: fish-speech's greedy
generate() with the checkpoint's weights, teacher forcing of those frames through both weight
sets (per head: logit RMSE / RMS, top-1 agreement, median top-2 margin), and free-running greedy
frames with the quantised weights. What this does not see: ONNX Runtime's accuracy_level 4
quantises activations to int8 per block inside MatMulNBits; tests/quantized.rs and
tools/export/tests/test_quantize.py compare the runtime's own logits with the fp32 graphs'.

Random checkpoints give pessimistic greedy agreement (flat logits: see int8_quality.py); the
logit RMSE relative to RMS is the number that carries over. Prints a table, then one line
`CPU_QUANT_QUALITY {json}`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import int8_quality as iq  # noqa: E402


def dequantize(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """A MatMulNBits node's weight as the fp32 [N, K] matrix (torch Linear layout) it stands for."""
    a = {x.name: x.i for x in node.attribute}
    k, n, bits, block = a["K"], a["N"], a["bits"], a["block_size"]
    packed = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.uint8)  # [N, blocks, blob]
    scales = onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(n, -1)
    if len(node.input) > 3 and node.input[3]:
        raise ValueError(f"{node.name}: zero points (asymmetric) are not what s1mini_export.quantize writes")
    if bits == 8:
        q = packed.reshape(n, -1).astype(np.int32)
    elif bits == 4:
        lo, hi = packed & 0x0F, packed >> 4
        q = np.stack([lo, hi], axis=-1).reshape(n, -1).astype(np.int32)  # low nibble first
    else:
        raise ValueError(f"{node.name}: {bits} bits")
    zero = 1 << (bits - 1)
    blocks = scales.shape[1]
    w = (q[:, : blocks * block] - zero).reshape(n, blocks, block).astype(np.float32) * scales[:, :, None]
    return w.reshape(n, blocks * block)[:, :k]


LAYER_PARAMS = {
    "wqkv": "attention.wqkv.weight",
    "wo": "attention.wo.weight",
    "w1": "feed_forward.w1.weight",
    "w3": "feed_forward.w3.weight",
    "w2": "feed_forward.w2.weight",
}
HEADS = {"head": "head.weight", "fast_output": "fast_output.weight", "fast_project_in": "fast_project_in.weight"}


def kind_of(node_name: str) -> str:
    """The matrix a MatMul(NBits) node applies, from the exporter's node name:
    '/layers.3/attention/wqkv/MatMul_Q4' (format 1) and '/wqkv_3/MatMul_Q4' (format 2) -> 'wqkv'."""
    parts = node_name.strip("/").split("/")
    base = parts[-2] if len(parts) >= 2 else parts[-1]
    stem, _, suffix = base.rpartition("_")
    return stem if suffix.isdigit() and stem in LAYER_PARAMS else base


def checkpoint_names(graph: str, node_names: list[str]) -> list[str]:
    """Checkpoint parameter names of a graph's weight MatMuls, in graph order: each kind's n-th
    occurrence is layer n (the graphs run their layers in order), heads by name. `graph` is
    'slow' (layers.*) or 'fast' (fast_layers.*). The caller checks every guess against the
    checkpoint's values, so a wrong order fails loudly rather than measuring the wrong matrix."""
    prefix = "layers" if graph == "slow" else "fast_layers"
    seen: dict[str, int] = {}
    out = []
    for name in node_names:
        kind = kind_of(name)
        if kind in HEADS:
            out.append(HEADS[kind])
        elif kind in LAYER_PARAMS:
            i = seen.get(kind, 0)
            seen[kind] = i + 1
            out.append(f"{prefix}.{i}.{LAYER_PARAMS[kind]}")
        else:
            raise ValueError(f"{graph}: cannot tell which matrix node {name!r} applies")
    return out


class BundleWeights:
    """Swaps fish-speech's matrices between the checkpoint's values and the bundle's MatMulNBits
    ones (int8_quality.measure's weights interface)."""

    def __init__(self, model, bundle: Path) -> None:
        m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        if m.get("precision") not in ("int8", "int4"):
            raise ValueError(f"{bundle}: not an int8/int4 bundle (precision {m.get('precision')!r})")
        tok = m["tokens"]
        rows = list(range(tok["semantic_begin"], tok["semantic_end"] + 1)) + [tok["im_end"]]
        params = dict(model.named_parameters())
        self.swaps: list[tuple[torch.nn.Parameter, object, torch.Tensor, torch.Tensor]] = []
        num = den = 0.0
        elements = 0
        for graph in ("slow", "fast"):
            g = onnx.load(str(bundle / m["graphs"][graph]))
            inits = {i.name: i for i in g.graph.initializer}
            nodes = [n for n in g.graph.node if n.op_type == "MatMulNBits"]
            for node, name in zip(nodes, checkpoint_names(graph, [n.name for n in nodes]), strict=True):
                w = torch.from_numpy(dequantize(node, inits))
                if name == "head.weight":
                    name, index = "output.weight", torch.tensor(rows)
                elif name == "fast_output.weight":
                    index = torch.arange(w.shape[0])
                else:
                    index = None
                p = params[name]
                orig = p.detach()[index].clone() if index is not None else p.detach().clone()
                if orig.shape != w.shape:
                    raise ValueError(f"{node.name} -> {name}: shape {tuple(w.shape)} vs {tuple(orig.shape)}")
                err = float((w.double() - orig.double()).norm() / max(float(orig.double().norm()), 1e-30))
                if err > 0.5:  # 4-bit blocks of 32 are ~0.06-0.09; an unrelated random matrix ~1.4
                    raise ValueError(f"{node.name} -> {name}: relative error {err:.2f}, not this matrix")
                num += float((w.double() - orig.double()).pow(2).sum())
                den += float(orig.double().pow(2).sum())
                elements += w.numel()
                self.swaps.append((p, index, orig, w))
        if not self.swaps:
            raise ValueError(f"{bundle}: no MatMulNBits matrices")
        self.count = len(self.swaps)
        self.elements = elements
        self.weight_rel_rmse = math.sqrt(num / den) if den > 0 else 0.0

    @torch.no_grad()
    def use(self, kind: str) -> None:
        for p, index, orig, q in self.swaps:
            v = orig if kind == "bf16" else q
            if index is None:
                p.copy_(v)
            else:
                p[index] = v


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="fish-speech S1 checkpoint (with --bundle)")
    src.add_argument("--random", choices=["tiny", "s1-mini"], help="random checkpoint, exported and quantised here")
    ap.add_argument("--bundle", type=Path, help="the int8/int4 bundle made from --checkpoint")
    ap.add_argument("--precision", choices=["int8", "int4"], default="int4", help="with --random")
    ap.add_argument("--block-size", type=int, default=32, help="with --random: weights per scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--text", default=iq.DEFAULT_TEXT)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.checkpoint and not args.bundle:
        ap.error("--checkpoint needs --bundle (the quantised bundle made from it)")
    warnings.simplefilter("ignore")
    log = lambda m: print(f"cpu_quant_quality: {m}", file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    # No "int8"/"int4" in the checkpoint path: fish-speech's from_pretrained then loads its own
    # quantised model (int8_quality.measure refuses such paths).
    with tempfile.TemporaryDirectory(prefix="s1q-") as tmp:
        if args.random:
            from s1mini_export.export import export
            from s1mini_export.quantize import quantize_bundle
            from s1mini_export.random_checkpoint import write_random_checkpoint

            ckpt = Path(tmp) / args.random
            write_random_checkpoint(args.random, args.seed, ckpt, log, with_codec=False)
            export(ckpt, Path(tmp) / "fp32", "fp32", {"llm"}, log=log)
            bundle = Path(tmp) / "q"
            quantize_bundle(Path(tmp) / "fp32", bundle, args.precision, log=log, block_size=args.block_size)
            name, kind = f"--random {args.random}", args.random
        else:
            ckpt, bundle, name, kind = args.checkpoint, args.bundle, str(args.checkpoint), "checkpoint"
        precision = json.loads((bundle / "manifest.json").read_text())["precision"]
        result = {"checkpoint": name, "kind": kind, "seed": args.seed if args.random else None, "precision": precision}
        result["torch_threads"] = torch.get_num_threads()
        result.update(iq.measure(ckpt, args.frames, args.text, log, make_weights=lambda m: BundleWeights(m, bundle)))
    result["wall_s"] = time.perf_counter() - start
    print(iq.table(result).replace("int8", precision))
    line = json.dumps(result, ensure_ascii=False, sort_keys=True)
    print(f"CPU_QUANT_QUALITY {line}", flush=True)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
