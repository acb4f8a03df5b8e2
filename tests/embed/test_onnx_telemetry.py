"""onnxruntime's telemetry stays off: creating a session writes no device id or event store
under ``~/.cache/Microsoft``. Each check runs in a fresh interpreter with HOME pointed at an
empty folder, because onnxruntime decides once, when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
import numpy as np
from onnx import TensorProto, helper
from marginface.embed.runtimes import onnx_session

assert "onnxruntime" not in sys.modules, "imported before onnx_session could switch it off"
io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("x", "y")]
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io[:1], io[1:])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
session = onnx_session(model.SerializeToString())
session.run(None, {"x": np.ones((1, 2), np.float32)})
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def _run(home: Path, **env: str) -> str:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    }
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_onnx_session_writes_no_telemetry_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert _run(home) == "1"
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert not (home / ".cache" / "Microsoft").exists(), written


def test_an_explicit_user_choice_is_kept(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert _run(home, ORT_DISABLE_TELEMETRY="0") == "0"
