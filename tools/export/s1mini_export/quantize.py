"""Weight-only int8 / int4 bundles for the CPU: an fp32 bundle's transformer graphs with their
weight matrices in ONNX Runtime's MatMulNBits (block-wise, symmetric), everything else fp32.

    PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.quantize --bundle FP32 --out INT4 --precision int4

or `python -m s1mini_export --checkpoint DIR --out B --precision int4` (exports fp32, then this).

What is quantised: every MatMul of slow.onnx and fast.onnx whose weight is a constant
initializer: per layer wqkv, wo, w1, w3, w2 and the two output heads. Embeddings (Gather), norms
and the attention's own MatMuls (activations x activations) stay fp32, and so does the codec
unless `--codec int8` (its decoder blocks' convolutions int8: lossy, codec_int8.py).
`int8`: every matrix 8 bits. `int4`: layer matrices 4 bits, the heads 8 bits (HEAD_BITS; measured
in tools/export/cpu_quant_quality.py: the heads are 1 % of the weights and carry the sampling).
Blocks of BLOCK_SIZE = 32 along the input dimension (`--block-size` 16..256, a power of two:
larger blocks are fewer scales to read and apply, so faster at M = 1, and a coarser grid),
symmetric (no zero points), one fp32 scale per block; ACCURACY_LEVEL = 4 lets ONNX Runtime's CPU
kernel quantise activations to int8 per block and use integer dot products (the fastest path on x86-64 and arm64).

The quantised bundle holds no llm.safetensors (the native CUDA backend's bf16 weights): it is a
CPU bundle; GPU backends refuse it with a reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import onnx
import onnx.numpy_helper

from .bundle_dir import check_out_dir, partial_dir, publish
from .errors import ExportError
from .kv_cache import cache_to_fp16
from .manifest import sha256_file, write_manifest

BLOCK_SIZE = 32
# The slow graph's KV cache: fp16 halves what a decode step reads at long contexts (kv_cache.py),
# which is what bounds it there on a CPU; "fp32" keeps the fp32 bundle's cache.
KV_CACHES = ("fp16", "fp32")
KV_CACHE = "fp16"
# The codec decoder's convolutions: fp32 (exact) unless asked for int8 (lossy, codec_int8.py).
CODECS = ("fp32", "int8")
CODEC = "fp32"
ACCURACY_LEVEL = 4
HEAD_BITS = 8
PRECISIONS = {"int8": 8, "int4": 4}
GRAPHS = ("slow", "fast")
# The output heads' MatMul node names in the exported graphs (llm.py: SlowGraph.head, FastGraph.fast_output).
HEAD_NODES = ("/head/MatMul", "/fast_output/MatMul")


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant initializer (the weights)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


BLOCK_SIZES = (16, 32, 64, 128, 256)  # what MatMulNBits takes


def quantize_graph(
    src: Path, dst: Path, bits: int, log=lambda m: None, block_size: int = BLOCK_SIZE, kv_cache: str = "fp32"
) -> dict:
    """src (fp32 graph, external data beside it allowed) -> dst with MatMulNBits weights;
    `kv_cache` "fp16": a slow graph's cache buffers become fp16 (kv_cache.py)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one line per node
    model = onnx.load(str(src), load_external_data=True)
    names = weight_matmuls(model)
    heads = [n for n in names if n in HEAD_NODES]
    layers = [n for n in names if n not in HEAD_NODES]
    head_bits = max(bits, HEAD_BITS)
    # The quantiser's nodes_to_include does not restrict the default algorithm (seen with
    # onnxruntime 1.31.1): the heads are excluded from the first pass instead.
    for group, nodes, b, exclude in (("layer", layers, bits, heads), ("head", heads, head_bits, [])):
        if not nodes:
            continue
        log(f"{src.name}: {len(nodes)} {group} matrices -> {b}-bit blocks of {block_size}")
        q = MatMulNBitsQuantizer(
            model,
            bits=b,
            block_size=block_size,
            is_symmetric=True,
            accuracy_level=ACCURACY_LEVEL,
            nodes_to_exclude=exclude,
        )
        q.process()
        model = q.model.model
    inits = {i.name: i for i in model.graph.initializer}
    matrix_bytes = 0  # what one run of the graph reads of its quantised matrices
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            matrix_bytes += sum(_nbytes(inits[x]) for x in n.input[1:4] if x in inits)
    if kv_cache == "fp16":
        log(f"{src.name}: {cache_to_fp16(model)} attention nodes -> fp16 KV cache")
    left = weight_matmuls(model)
    if left:
        raise ExportError(f"{src.name}: {len(left)} weight MatMuls were not quantised: {left[:3]}")
    big = sum(i.ByteSize() for i in model.graph.initializer) > 1_800_000_000
    files = [dst.name]
    if big:  # protobuf's 2 GB limit: weights beside the graph, as the fp32 export does
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data")
        files.append(dst.name + ".data")
    else:
        onnx.save(model, str(dst))
    return {
        "layer_matrices": len(layers),
        "layer_bits": bits,
        "head_matrices": len(heads),
        "head_bits": head_bits,
        "matrix_bytes": matrix_bytes,
        "files": files,
    }


def _nbytes(t: onnx.TensorProto) -> int:
    return int(onnx.numpy_helper.to_array(t).nbytes)


def quantize_bundle(
    src: Path,
    out: Path,
    precision: str,
    force: bool = False,
    log=lambda m: None,
    block_size: int = BLOCK_SIZE,
    kv_cache: str = KV_CACHE,
    codec: str = CODEC,
) -> dict:
    """Writes the `precision` (int8 | int4) bundle of the fp32 bundle `src` to `out` atomically,
    with blocks of `block_size` weights, a `kv_cache` (fp16 | fp32) slow cache and `codec`
    (fp32 | int8) decoder convolutions; returns its manifest."""
    if precision not in PRECISIONS:
        raise ExportError(f"--precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if block_size not in BLOCK_SIZES:
        raise ExportError(f"--block-size: {block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}")
    if kv_cache not in KV_CACHES:
        raise ExportError(f"--kv-cache: {kv_cache!r} is not one of {', '.join(KV_CACHES)}")
    if codec not in CODECS:
        raise ExportError(f"--codec: {codec!r} is not one of {', '.join(CODECS)}")
    try:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{src}: not a bundle ({e})") from e
    if manifest.get("precision") != "fp32":
        raise ExportError(f"{src}: quantise an fp32 bundle (this one is {manifest.get('precision')!r})")
    graphs = manifest.get("graphs", {})
    if not all(g in graphs for g in GRAPHS):
        raise ExportError(f"{src}: the bundle has no transformer graphs (export with --parts llm)")
    if codec == "int8" and not all(g in graphs for g in ("codec_decode", "codec_decode_step")):
        raise ExportError(f"{src}: --codec int8 needs both codec decode graphs (--parts codec-decode,codec-decode-step)")
    parent = check_out_dir(out, force)
    bits = PRECISIONS[precision]
    tmp = partial_dir(out, parent)
    try:
        report = {}
        replaced = set()
        for g in GRAPHS:
            name = graphs[g]
            replaced |= {name, name + ".data"}
            cache = kv_cache if g == "slow" else "fp32"
            report[g] = quantize_graph(src / name, tmp / name, bits, log, block_size, cache)
        files = []
        codec_record = None
        if codec == "int8":
            from .codec import SHARED_DECODER_DATA
            from .codec_int8 import DECODE, STEP, quantize_codec

            codec_record = quantize_codec(src, tmp, manifest["codec"], log)
            replaced |= {DECODE, STEP, SHARED_DECODER_DATA}
            files += [DECODE, STEP, SHARED_DECODER_DATA]
        for name in manifest["files"]:
            if name in replaced or name == manifest.get("weights", {}).get("llm"):
                continue
            shutil.copyfile(src / name, tmp / name)
            files.append(name)
        for g in GRAPHS:
            files += report[g]["files"]
        manifest["precision"] = precision
        manifest["weights"] = {}
        manifest["quantization"] = {
            "op": "com.microsoft.MatMulNBits",
            "layer_bits": bits,
            "head_bits": max(bits, HEAD_BITS),
            "block_size": block_size,
            "symmetric": True,
            "accuracy_level": ACCURACY_LEVEL,
            "matrix_bytes": {g: report[g]["matrix_bytes"] for g in GRAPHS},
            "from": "fp32",
            "kv_cache": kv_cache,
        }
        if codec_record is not None:
            manifest["quantization"]["codec"] = codec_record
        manifest["files"] = {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in sorted(files)}
        write_manifest(tmp / "manifest.json", manifest)
        publish(tmp, out)
        log(f"wrote {out}")
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="fp32 bundle directory")
    ap.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    ap.add_argument("--precision", required=True, choices=sorted(PRECISIONS))
    ap.add_argument("--block-size", type=int, default=BLOCK_SIZE, help=f"weights per scale (default {BLOCK_SIZE})")
    ap.add_argument(
        "--kv-cache", default=KV_CACHE, choices=KV_CACHES, help=f"slow graph's KV cache type (default {KV_CACHE})"
    )
    ap.add_argument(
        "--codec", default=CODEC, choices=CODECS,
        help="codec decoder convolutions: fp32 (exact, default) or int8 (lossy, faster on CPUs; codec_int8.py)",
    )
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    log = lambda m: print(f"s1mini_export.quantize: {m}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        quantize_bundle(
            args.bundle, args.out, args.precision, args.force, log, args.block_size, args.kv_cache, args.codec
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
