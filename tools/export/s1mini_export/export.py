"""export(): checkpoint directory -> bundle directory, atomically (temp dir + rename)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import llm
from .checkpoint import load_llm_weights, open_checkpoint
from .bundle_dir import check_out_dir, partial_dir, publish
from .errors import ExportError
from .manifest import build_manifest, write_manifest

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
# Weight-only quantised CPU bundles: the fp32 export, then s1mini_export.quantize.
QUANTIZED = ("int8", "int4")
PARTS = ("llm", "codec-decode", "codec-encode", "codec-decode-step")
CODEC_PARTS = {"codec-decode", "codec-encode", "codec-decode-step"}


def parse_parts(spec: str) -> set[str]:
    parts = {p.strip() for p in spec.split(",") if p.strip()}
    unknown = sorted(parts - set(PARTS))
    if unknown or not parts:
        raise ExportError(
            f"--parts: unknown part {', '.join(unknown) or '(empty)'!s} (expected a comma list of {', '.join(PARTS)})"
        )
    return parts


def export(
    checkpoint: Path,
    out_dir: Path,
    precision: str = "fp32",
    parts: set[str] | None = None,
    force: bool = False,
    log=llm.progress,
    kv_cache: str | None = None,
    codec: str | None = None,
) -> dict:
    """Writes the bundle of docs/bundle-format.md to out_dir and returns its manifest.
    `kv_cache` (int8 / int4 only): the slow graph's cache type, fp16 by default; `codec` (int8 /
    int4 only): the codec decoder's convolutions, fp32 by default or int8 (quantize.py)."""
    if precision in QUANTIZED:
        return _export_quantized(checkpoint, out_dir, precision, parts, force, log, kv_cache, codec)
    if kv_cache is not None:
        raise ExportError(f"--kv-cache is for int8 / int4 bundles (this one is {precision})")
    if codec is not None:
        raise ExportError(f"--codec is for int8 / int4 bundles (this one is {precision})")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision: unknown precision {precision!r} (expected fp32, fp16, int8 or int4)")
    parts = set(PARTS) if parts is None else parts
    unknown = sorted(parts - set(PARTS))
    if unknown or not parts:
        raise ExportError(f"--parts: unknown part {', '.join(unknown) or '(empty)'} (expected {', '.join(PARTS)})")
    parent = check_out_dir(out_dir, force)
    ck = open_checkpoint(checkpoint, need_llm="llm" in parts, need_codec=bool(parts & CODEC_PARTS))
    dtype = PRECISIONS[precision]

    tmp = partial_dir(out_dir, parent)
    try:
        files: list[str] = []
        graphs: dict[str, str] = {}
        weights: dict[str, str] = {}
        for name in ("tokenizer.tiktoken", "special_tokens.json"):
            shutil.copyfile(checkpoint / name, tmp / name)
            files.append(name)
        if "llm" in parts:
            log(f"loading {ck.model_pth}")
            sd = load_llm_weights(ck.model_pth, ck.config)
            log("writing llm.safetensors (bf16)")
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(tmp / "llm.safetensors"))
            files.append("llm.safetensors")
            weights["llm"] = "llm.safetensors"
            log(f"exporting slow.onnx ({precision}, {ck.config.n_layer} layers)")
            slow = llm.build_slow(ck.config, ck.tokens, sd, dtype)
            files += llm.export_slow(slow, tmp / "slow.onnx", dtype)
            del slow
            log(f"exporting fast.onnx ({precision}, {ck.config.n_fast_layer} layers)")
            fast = llm.build_fast(ck.config, sd, dtype)
            files += llm.export_fast(fast, tmp / "fast.onnx", dtype)
            del fast, sd
            graphs["slow"], graphs["fast"] = "slow.onnx", "fast.onnx"
        codec_section = None
        if parts & CODEC_PARTS:
            from . import codec

            log(f"exporting codec ({', '.join(sorted(parts & CODEC_PARTS))}) from {ck.codec_pth}")
            res = codec.export_codec(ck.codec_pth, tmp, precision, parts & CODEC_PARTS)
            codec_section = res["codec"]
            files += list(res["files"])
            for f in res["files"]:
                if f.endswith(".onnx"):
                    graphs[f.removesuffix(".onnx")] = f
        log("hashing files, writing manifest.json")
        manifest = build_manifest(
            cfg=ck.config,
            tokens=ck.tokens,
            precision=precision,
            fast_logit_rows=llm.fast_logit_rows(ck.config),
            codec=codec_section,
            graphs=graphs,
            weights=weights,
            bundle_dir=tmp,
            files=files,
        )
        write_manifest(tmp / "manifest.json", manifest)
        publish(tmp, out_dir)
        log(f"wrote {out_dir}")
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _export_quantized(checkpoint: Path, out_dir: Path, precision: str, parts, force: bool, log, kv_cache,
                      codec) -> dict:
    from .quantize import CODEC, KV_CACHE, quantize_bundle

    parts = set(PARTS) if parts is None else parts
    if "llm" not in parts:
        raise ExportError(f"--precision {precision} quantises the transformer: --parts must include llm")
    parent = check_out_dir(out_dir, force)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.fp32-", dir=parent) as tmp:
        fp32 = Path(tmp) / "fp32"
        export(checkpoint, fp32, "fp32", parts, log=log)
        log(f"quantising to {precision}")
        return quantize_bundle(
            fp32, out_dir, precision, force=force, log=log, kv_cache=kv_cache or KV_CACHE, codec=codec or CODEC
        )
