"""s1mini_export.calibrate: TensorRT int8 tables under the names the engine looks up (ep.rs
calibration_table_name), read back with ONNX Runtime's own flatbuffers reader; clear errors and no
partial output on bad inputs. The tiny fixture takes a few seconds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import EXPORT_DIR, REPO
from onnxruntime.quantization.CalTableFlatBuffers import TrtTable

from s1mini_export import calibrate as cal
from s1mini_export.llm import SlowRunner
from s1mini_export.prompt import build_prompt, load_encoding

FIXTURE = REPO / "tests" / "fixtures" / "tiny"
SENTENCES = "Hello there.\n\n  General Kenobi, you are a bold one.\r\n"


def read_table(path: Path) -> dict[str, float]:
    """The table as the TensorRT provider reads it: key -> max |x| (ReadDynamicRange)."""
    t = TrtTable.TrtTable.GetRootAsTrtTable(path.read_bytes(), 0)
    return {t.Dict(i).Key().decode(): float(t.Dict(i).Value()) for i in range(t.DictLength())}


def expected_name(role: str, bundle: Path, sentences: list[str]) -> str:
    """Computed here from scratch, as ep.rs does: sha256 of manifest.json, sha256 of the sentences
    joined by \\n, 16 hex digits each."""
    b = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:16]
    s = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    return f"int8-calibration-{role}-{b}-{s}.flatbuffers"


def tensor_names(graph: Path) -> set[str]:
    m = onnx.load(str(graph))
    return {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the CLI (`python -m s1mini_export.calibrate`) on the committed fp32 fixture."""
    d = tmp_path_factory.mktemp("calib")
    sentences = d / "sentences.txt"
    sentences.write_bytes(SENTENCES.encode())
    cache = d / "cache"
    before = sorted(p.name for p in FIXTURE.iterdir())
    env = dict(os.environ, PYTHONPATH=str(EXPORT_DIR))
    args = ["--bundle", str(FIXTURE), "--sentences", str(sentences), "--cache-dir", str(cache)]
    res = subprocess.run(
        [sys.executable, "-m", "s1mini_export.calibrate", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in FIXTURE.iterdir()) == before, "the calibrator wrote into the bundle"
    return res, cache


@pytest.fixture
def sentences(tmp_path) -> Path:
    f = tmp_path / "sentences.txt"
    f.write_text("Hello there.\n")
    return f


def test_table_names_match_the_engine(tmp_path):
    # The same bytes and names as ep.rs `calibration_table_names_match_the_python_calibrator`.
    f = tmp_path / "sentences.txt"
    f.write_bytes("  Hello there.\r\n\n\u3000General Kenobi.\u00a0\n\u001fx\u001f\n\t\n".encode())
    sentences = cal.read_sentences(f)
    assert sentences == ["Hello there.", "General Kenobi.", "\u001fx\u001f"]
    assert hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16] == "f0a00020040baf51"
    assert cal.table_name("slow", "0123456789abcdef", sentences) == (
        "int8-calibration-slow-0123456789abcdef-f0a00020040baf51.flatbuffers"
    )
    assert cal.bundle_id(FIXTURE) == hashlib.sha256((FIXTURE / "manifest.json").read_bytes()).hexdigest()[:16]


def test_tiny_bundle_gets_both_tables_under_the_engine_names(tiny_run):
    res, cache = tiny_run
    sentences = ["Hello there.", "General Kenobi, you are a bold one."]
    names = [expected_name(r, FIXTURE, sentences) for r in ("slow", "fast")]
    assert res.stdout.split() == [str(cache.resolve() / n) for n in names]
    txt = [n.removesuffix(".flatbuffers") + ".txt" for n in names]
    assert sorted(p.name for p in cache.iterdir()) == sorted(names + txt), "leftover work files"
    progress = [line for line in res.stderr.splitlines() if "calibrate: sentence" in line]
    assert len(progress) == 2 and "5 slow steps, 50 fast steps" in progress[0], res.stderr


@pytest.mark.parametrize("role", ["slow", "fast"])
def test_tables_cover_the_graph_with_finite_ranges(tiny_run, role):
    _, cache = tiny_run
    [path] = cache.glob(f"int8-calibration-{role}-*.flatbuffers")
    table = read_table(path)
    graph = FIXTURE / f"{role}.onnx"
    assert table and set(table) <= tensor_names(graph)
    assert all(np.isfinite(v) and v >= 0 for v in table.values())
    m = onnx.load(str(graph))
    matmuls = {n.output[0] for n in m.graph.node if n.op_type == "MatMul"}
    assert matmuls <= set(table), sorted(matmuls - set(table))
    # the KV inputs got their ranges from the decode steps (prefill's past is empty)
    kv = ("past_key_0", "present_value_0") if role == "slow" else ("past_keys", "present_values")
    assert table[kv[0]] > 0 and table[kv[1]] > 0 and table["logits"] > 0
    # the masked attention scores (-inf fill) are left out, not written as inf
    assert not any("ConstantOfShape" in k and "attention" in k for k in table)
    text = path.with_suffix(".txt").read_text().splitlines()
    assert {k: float(v) for k, v in (line.split(" ") for line in text)} == pytest.approx(table)


def test_ranges_are_the_max_abs_over_prefill_and_decode_steps(tiny_run):
    """Symmetric MinMax: each entry is max |x| (what TensorRT's setDynamicRange(-v, v) needs), here
    rechecked for the slow logits and the fast logits by replaying the calibrator's feeds."""
    _, cache = tiny_run
    m = json.loads((FIXTURE / "manifest.json").read_text())
    enc, ids = load_encoding(FIXTURE)
    sess = {r: ort.InferenceSession(str(FIXTURE / f"{r}.onnx"), providers=["CPUExecutionProvider"]) for r in cal.ROLES}
    peak = {"slow": 0.0, "fast": 0.0}
    for s in ["Hello there.", "General Kenobi, you are a bold one."]:
        slow_feeds, fast_feeds = cal.sentence_feeds(sess, m, build_prompt(enc, ids, 10, s), cal.DEFAULT_FRAMES)
        assert [f["tokens"].shape[2] for f in slow_feeds][1:] == [1] * cal.DEFAULT_FRAMES
        for role, feeds in (("slow", slow_feeds), ("fast", fast_feeds)):
            for f in feeds:
                peak[role] = max(peak[role], float(np.abs(sess[role].run(["logits"], f)[0]).max()))
    for role in cal.ROLES:
        [path] = cache.glob(f"int8-calibration-{role}-*.flatbuffers")
        assert read_table(path)["logits"] == pytest.approx(peak[role], rel=1e-6)
    assert peak["slow"] != peak["fast"]  # one table per graph: `logits` is in both


def test_greedy_frames_are_semantic_tokens_and_codes():
    m = json.loads((FIXTURE / "manifest.json").read_text())
    enc, ids = load_encoding(FIXTURE)
    sess = {r: ort.InferenceSession(str(FIXTURE / f"{r}.onnx"), providers=["CPUExecutionProvider"]) for r in cal.ROLES}
    slow_feeds, fast_feeds = cal.sentence_feeds(sess, m, build_prompt(enc, ids, 10, "Hi."), 2)
    assert len(slow_feeds) == 3 and len(fast_feeds) == 30
    frame = slow_feeds[1]["tokens"][0, :, 0]
    t = m["tokens"]
    assert t["semantic_begin"] <= frame[0] <= t["semantic_end"]
    assert frame[1] == frame[0] - t["semantic_begin"] and (frame[1:] < m["fast"]["logit_rows"]).all()
    assert [int(f["code"][0]) for f in fast_feeds[:10]] == [0, *frame[1:10]]
    assert [f["past_keys"].shape[3] for f in fast_feeds[:10]] == list(range(10))


def test_fp16_bundle_is_calibrated_on_its_own_tensor_names(tiny_ckpt, tmp_path, monkeypatch):
    """An fp16 export names its Cast nodes differently, so it gets its own tables, computed on an
    fp32 copy of its graphs with the same nodes and names (weights in a .data file here, as for
    S1-mini's slow graph)."""
    from s1mini_export.export import export

    monkeypatch.setattr(cal, "INLINE_LIMIT", 0)
    b16 = tmp_path / "b16"
    export(tiny_ckpt, b16, "fp16", {"llm"}, log=lambda m: None)
    model = onnx.load(str(b16 / "slow.onnx"))
    names = [list(n.output) for n in model.graph.node]
    cal.upcast_fp16(model)
    assert [list(n.output) for n in model.graph.node] == names
    f16 = onnx.TensorProto.FLOAT16
    g = model.graph
    assert all(t.data_type != f16 for t in g.initializer)
    assert all(v.type.tensor_type.elem_type != f16 for v in [*g.input, *g.output])
    assert all(a.t.data_type != f16 and not (a.name == "to" and a.i == f16) for n in g.node for a in n.attribute)
    s = tmp_path / "s.txt"
    s.write_text("Hello there.\n")
    paths = cal.calibrate(b16, s, tmp_path / "cache", 2, lambda m: None)
    assert [p.name for p in paths] == [expected_name(r, b16, ["Hello there."]) for r in cal.ROLES]
    for role, path in zip(cal.ROLES, paths, strict=True):
        assert set(read_table(path)) <= tensor_names(b16 / f"{role}.onnx")
    # the fp32 copy runs like the fp32 export of the same checkpoint (the fixture: same weights)
    m = json.loads((FIXTURE / "manifest.json").read_text())
    enc, ids = load_encoding(FIXTURE)
    prompt = build_prompt(enc, ids, 10, "Hello there.")
    feed = SlowRunner(None, m, capacity=prompt.shape[1], dtype=np.float32).feed(prompt)
    want = ort.InferenceSession(str(FIXTURE / "slow.onnx"), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def test_graph_with_external_data(tmp_path, sentences, tiny_run):
    """S1-mini's fp32 slow.onnx keeps its weights in slow.onnx.data: the same tiny graph that way."""
    b = tmp_path / "bundle"
    shutil.copytree(FIXTURE, b, ignore=shutil.ignore_patterns("golden", "codec_*"))
    model = onnx.load(str(b / "slow.onnx"))
    onnx.save_model(model, str(b / "slow.onnx"), save_as_external_data=True, location="slow.onnx.data")
    mpath = b / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["slow.onnx.data"] = {"sha256": "-", "bytes": (b / "slow.onnx.data").stat().st_size}
    mpath.write_text(json.dumps(m))
    sentences.write_bytes(SENTENCES.encode())
    [slow, _] = cal.calibrate(b, sentences, tmp_path / "cache", cal.DEFAULT_FRAMES, lambda m: None)
    [ref] = tiny_run[1].glob("int8-calibration-slow-*.flatbuffers")
    assert read_table(slow) == read_table(ref)
    (b / "slow.onnx.data").unlink()
    with pytest.raises(cal.ExportError, match="slow.onnx.data: not found"):
        cal.calibrate(b, sentences, tmp_path / "cache2", 1, lambda m: None)


# --- failures: one line `s1mini_export: error: ...`, exit 1, nothing written -----------------


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    d = tmp_path / "bundle"
    shutil.copytree(FIXTURE, d, ignore=shutil.ignore_patterns("golden", "codec_*"))
    return d


def run_main(capsys, bundle: Path, sentences: Path, cache: Path, *extra: str) -> str:
    rc = cal.main(["--bundle", str(bundle), "--sentences", str(sentences), "--cache-dir", str(cache), *extra])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("s1mini_export: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda b: (b / "fast.onnx").unlink(), ["fast.onnx", "not found"]),
        (lambda b: (b / "tokenizer.tiktoken").unlink(), ["tokenizer.tiktoken", "not found"]),
        (lambda b: (b / "manifest.json").unlink(), ["manifest.json", "not found"]),
        (
            lambda b: (b / "manifest.json").write_text(
                (b / "manifest.json").read_text().replace('"precision": "fp32"', '"precision": "bf16"')
            ),
            ["precision 'bf16'", "fp32 or fp16"],
        ),
    ],
)
def test_bad_bundle_names_the_file(capsys, bundle_copy, sentences, tmp_path, damage, needles):
    damage(bundle_copy)
    line = run_main(capsys, bundle_copy, sentences, tmp_path / "cache")
    for n in needles:
        assert n in line, line
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\n  \r\n\t\n", "no sentences (one per line)"),
        (b"ok\n\xff\xfe\n", "not UTF-8 (first invalid byte at offset 3)"),
    ],
)
def test_bad_sentences_file(capsys, sentences, tmp_path, content, needle):
    sentences.write_bytes(content)
    line = run_main(capsys, FIXTURE, sentences, tmp_path / "cache")
    assert str(sentences) in line and needle in line, line
    assert not (tmp_path / "cache").exists()


def test_missing_sentences_file_and_bad_frames(capsys, tmp_path, sentences):
    line = run_main(capsys, FIXTURE, tmp_path / "nope.txt", tmp_path / "cache")
    assert "nope.txt: cannot read the sentences file" in line, line
    line = run_main(capsys, FIXTURE, sentences, tmp_path / "cache", "--frames", "0")
    assert "--frames 0: must be at least 1" in line, line
    line = run_main(capsys, FIXTURE, sentences, tmp_path / "no" / "cache")
    assert "parent directory not found" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentences.txt"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_after_start_leaves_nothing(capsys, bundle_copy, sentences, tmp_path, existing):
    (bundle_copy / "slow.onnx").write_bytes(b"not an onnx graph")
    cache = tmp_path / "cache"
    if existing:
        cache.mkdir()
        (cache / "s1-slow-fp16-x.engine").write_bytes(b"engine")
    line = run_main(capsys, bundle_copy, sentences, cache)
    assert f"{bundle_copy / 'slow.onnx'}: ONNX Runtime cannot load it" in line, line
    if existing:
        assert sorted(p.name for p in cache.iterdir()) == ["s1-slow-fp16-x.engine"]
    else:
        assert not cache.exists()
