"""CLI failures: one line naming the file or field, non-zero exit, no partial bundle left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXPORT_DIR


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(EXPORT_DIR))
    return subprocess.run(
        [sys.executable, "-m", "s1mini_export", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_fails(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    err = [line for line in lines if "error:" in line]
    assert len(err) == 1, res.stderr
    for n in needles:
        assert n in err[0], err[0]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, d)
    return d


def test_missing_model_pth_names_the_file(ckpt_copy, tmp_path):
    (ckpt_copy / "model.pth").unlink()
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    res = run_cli("--checkpoint", str(ckpt_copy), "--out", str(out_parent / "b"), "--parts", "llm")
    assert_fails(res, "model.pth", "not found")
    assert leftovers(out_parent) == []


def test_config_not_matching_weights_names_the_field(ckpt_copy, tmp_path):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    res = run_cli("--checkpoint", str(ckpt_copy), "--out", str(out_parent / "b"), "--parts", "llm")
    assert_fails(res, "model.pth", "intermediate_size")
    assert leftovers(out_parent) == []


def test_special_tokens_with_wrong_ids_fail(ckpt_copy, tmp_path):
    data = json.loads((ckpt_copy / "special_tokens.json").read_text())
    data["<|im_end|>"] += 1
    (ckpt_copy / "special_tokens.json").write_text(json.dumps(data))
    res = run_cli("--checkpoint", str(ckpt_copy), "--out", str(tmp_path / "b"), "--parts", "llm")
    assert_fails(res, "special_tokens.json", "<|im_end|>")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("flag,value,needle", [("--parts", "llm,vocoder", "vocoder"), ("--precision", "int3", "int3")])
def test_unknown_part_or_precision(tiny_ckpt, tmp_path, flag, value, needle):
    res = run_cli("--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "b"), flag, value)
    assert_fails(res, flag, needle)
    assert leftovers(tmp_path) == []


def test_kv_cache_of_an_fp32_bundle_is_refused(tiny_ckpt, tmp_path):
    res = run_cli("--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "b"), "--kv-cache", "fp16")
    assert_fails(res, "--kv-cache", "int8 / int4")
    assert leftovers(tmp_path) == []


def test_codec_int8_of_an_fp32_bundle_is_refused(tiny_ckpt, tmp_path):
    res = run_cli("--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "b"), "--codec", "int8")
    assert_fails(res, "--codec", "int8 / int4")
    assert leftovers(tmp_path) == []


def test_unknown_random_kind(tmp_path):
    res = run_cli("--random", "huge", "--out", str(tmp_path / "c"))
    assert_fails(res, "huge")
    assert leftovers(tmp_path) == []


def test_existing_output_is_not_overwritten(tiny_ckpt, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("x")
    res = run_cli("--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "b"), "--parts", "llm")
    assert_fails(res, "already exists")
    assert (tmp_path / "b" / "keep").exists()
