"""Opt-in int8 convolutions for the codec decoder (`s1mini_export.quantize --codec int8`): lossy,
for CPUs where the exact fp32 codec cannot keep up with real time.

The convolutions of the four DAC decoder blocks (CONV_BLOCKS: the transposed convs, already
plain convs, and the residual units' k7 and k1; ≈ 90 % of the decoder's FLOPs) become QDQ
convolutions, which ONNX Runtime runs as QLinearConv: weights int8 symmetric per output channel,
activations uint8 per tensor with scales calibrated on random codes (CALIBRATION_*, percentile
of the activation histogram). Everything else stays fp32: the codebook projections, the
post_module transformer, the upsampler, the decoder's first and last convolution, the Snakes.
Both decode graphs are quantised with the same calibration codes and share one data file, as
the fp32 ones do (codec.share_weights).

Speed and loss are measured by tools/export/codec_int8_quality.py (docs/rust-core.md "Codec
speed (CPU)"): the PCM error is that of random weights; run the same command on a bundle of a
real checkpoint before shipping it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CONV_BLOCKS = (1, 2, 3, 4)  # dac.decoder.model.N: the DecoderBlocks
CALIBRATION_SEED = 7
CALIBRATION_UTTERANCES = 2
CALIBRATION_FRAMES = 64
CALIBRATION_CHUNK = 16  # the engine's one-shot chunk (generate.rs ONE_SHOT_CHUNK_FRAMES)
CALIBRATION_METHOD = "percentile"  # measured against minmax: lower PCM error on the real shape
DECODE, STEP = "codec_decode.onnx", "codec_decode_step.onnx"


def block_convs(model) -> list[str]:
    """Names of the Conv nodes of `model` whose weight belongs to a decoder block in CONV_BLOCKS."""
    prefixes = tuple(f"dac.decoder.model.{b}." for b in CONV_BLOCKS)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1].startswith(prefixes)]


def calibration_codes(codec: dict) -> list[np.ndarray]:
    """CALIBRATION_UTTERANCES random utterances `[1, K, CALIBRATION_FRAMES]`."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return [
        np.stack([rng.integers(0, s, CALIBRATION_FRAMES) for s in codec["codebook_sizes"]]).astype(np.int64)[None]
        for _ in range(CALIBRATION_UTTERANCES)
    ]


def calibration_feeds(src: Path, graph: str, codec: dict) -> list[dict[str, np.ndarray]]:
    """The inputs `graph` sees when the engine decodes the calibration codes: whole utterances
    (codec_decode) or chunks with their carried state (codec_decode_step, run here to get it)."""
    import onnxruntime as ort

    utterances = calibration_codes(codec)
    if graph == DECODE:
        return [{"codes": c, "start_frame": np.zeros(1, np.int64)} for c in utterances]
    spec = codec["step_state"]
    session = ort.InferenceSession(str(src / STEP), providers=["CPUExecutionProvider"])
    feeds = []
    for codes in utterances:
        state = {s["input"]: np.zeros(s["shape"], np.float32) for s in spec}
        for p in range(0, codes.shape[-1], CALIBRATION_CHUNK):
            feed = {"codes": codes[:, :, p : p + CALIBRATION_CHUNK], "start_frame": np.array([p], np.int64), **state}
            feeds.append(feed)
            out = session.run(None, feed)
            state = {s["input"]: v for s, v in zip(spec, out[1:], strict=True)}
    return feeds


def quantize_codec(src: Path, out: Path, codec: dict, log=lambda m: None) -> dict:
    """Writes int8-convolution versions of the fp32 bundle `src`'s two decode graphs into `out`
    (with their shared data file), `codec` being its manifest's codec section; returns the
    manifest's `quantization.codec` record."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from .codec import SHARED_DECODER_DATA, share_weights


    class Feeds(CalibrationDataReader):
        def __init__(self, feeds):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    counts = {}
    for graph in (DECODE, STEP):
        convs = block_convs(onnx.load(str(src / graph), load_external_data=False))
        log(f"{graph}: {len(convs)} convolutions -> int8 (calibrating on {CALIBRATION_UTTERANCES} random utterances)")
        quantize_static(
            str(src / graph),
            str(out / graph),
            Feeds(calibration_feeds(src, graph, codec)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=convs,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            use_external_data_format=True,
        )
        counts[graph] = len(convs)
    share_weights(out, [DECODE, STEP], SHARED_DECODER_DATA)
    for graph in (DECODE, STEP):
        (out / f"{graph}.data").unlink(missing_ok=True)
    return {
        "convolutions": "int8",
        "op": "QDQ Conv (ONNX Runtime: QLinearConv)",
        "weights": "int8 symmetric per output channel",
        "activations": f"uint8 per tensor, {CALIBRATION_METHOD} calibration",
        "blocks": list(CONV_BLOCKS),
        "quantized_convs": counts,
        "calibration": {
            "codes": "random",
            "seed": CALIBRATION_SEED,
            "utterances": CALIBRATION_UTTERANCES,
            "frames": CALIBRATION_FRAMES,
        },
    }
