"""The package's structure, checked as tests: the dependency rules (import-linter, the contracts
in ``.importlinter``), the static types (mypy, ``mypy.ini``) and the lazy heavy imports that
keep ``marginface --help`` and the inference packages light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Modules that take a second or more to import, or belong to an optional extra.
HEAVY = (
    "torch",
    "cv2",
    "onnx",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "matplotlib",
    "sklearn",
    "faiss",
    "pymilvus",
    "psycopg",
    "albumentations",
    "tensorboard",
)


def test_import_contracts_hold(capsys):
    """``lint-imports``: layers, independence, no cycles (see ``.importlinter``)."""
    pytest.importorskip("importlinter")
    from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

    path = list(sys.path)
    try:  # lint_imports puts the working directory on sys.path
        status = lint_imports(
            config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True
        )
    finally:
        sys.path[:] = path
    report = capsys.readouterr().out
    assert status == EXIT_STATUS_SUCCESS, report


@pytest.mark.slow
def test_types_check(monkeypatch):
    """mypy over the package with ``mypy.ini`` (about 30 s without its cache)."""
    pytest.importorskip("mypy")
    from mypy import api

    monkeypatch.chdir(ROOT)  # mypy.ini names the package; its cache lives in .mypy_cache
    out, err, status = api.run(["--config-file", str(ROOT / "mypy.ini")])
    assert status == 0, out + err


def _heavy_after(code: str) -> list[str]:
    probe = (
        f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_cli_help_imports_nothing_heavy():
    """Building the CLI (what ``marginface --help`` does) loads no heavy or optional module:
    commands import them inside their functions."""
    assert _heavy_after("from marginface.cli import build_app\nbuild_app()") == []


@pytest.mark.parametrize(
    "package",
    [
        "marginface.align",
        "marginface.decision",
        "marginface.embed",
        "marginface.eval",
        "marginface.gallery",
        "marginface.runtime",
    ],
)
def test_inference_packages_import_light(package):
    """The inference path imports torch, OpenCV and onnxruntime only when a model runs."""
    assert _heavy_after(f"import {package}") == []
