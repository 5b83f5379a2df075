"""Shared fixtures: one random tiny checkpoint + its bundle per test session, fish-speech oracle."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

EXPORT_DIR = Path(__file__).resolve().parents[1]
REPO = EXPORT_DIR.parents[1]
sys.path.insert(0, str(EXPORT_DIR))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from s1mini_export.random_checkpoint import write_random_checkpoint

    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    write_random_checkpoint("tiny", 0, d, with_codec=False)  # LLM tests only
    return d


@pytest.fixture(scope="session")
def tiny_bundle(tiny_ckpt, tmp_path_factory) -> Path:
    """LLM part only: the codec has its own tests (test_codec.py)."""
    from s1mini_export.export import export

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export(tiny_ckpt, out, "fp32", {"llm"}, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def fish_model(tiny_ckpt):
    from s1mini_export import oracle

    return oracle.load_model(tiny_ckpt)


@pytest.fixture
def clean_dir(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
