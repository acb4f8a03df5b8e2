"""A CPU dry run of the GPU session (issue 18): the very scripts of ``gpu/`` from packing to the
comparison table and the exported default model, so that a script bug surfaces here and not
in the device's 15 minutes.

``gpu/prepare.sh`` runs in a scratch "checkout" on a small training set (12 identities × 6
images, three ~0.15 MB shards, 80 dev pairs, SFace teacher embeddings) and prints the device
calls. Each printed call is then made as the device tool makes it: a fresh copy of the
checkout (the repository's ``gpu/``, ``configs/`` and ``marginface/``) plus exactly the paths
that call carries, an empty ``$OUT``, and a scratch ``$MF_TMP`` standing for the device's
``/tmp`` that survives between calls of one warm machine. The networks are tiny and train a
few steps (``EXTRA``), only two losses of the comparison run (``CONFIGS``), and everything
else (preload, fp16 export, the logs and weights archives, dev evaluation, distillation) is
what the device does.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import load_file

from marginface.embed import load_embedder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "gpu").glob("*.sh"))
TREE = ("gpu", "configs", "marginface")  # what a call needs of the working tree that travels
CONFIGS = ("configs/arcface_mbf.yaml", "configs/triplet_mbf.yaml")  # a margin head + triplet
# The configs' own amp (bf16), channels_last and preload stay. TinyNet keeps its default
# widths: widths [4, 8] at 112×112 crashes inside torch on CPU (heap corruption, seen here).
TINY = "--set backbone.name=tiny --set backbone.embedding_dim=16 --set steps=3 --set batch_size=16"
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back from $OUT
PROBE = "mf_dryrun_probe"


def test_scripts_parse() -> None:
    assert {p.name for p in SCRIPTS} >= {
        "env.sh",
        "prepare.sh",
        "stage.sh",
        "compare.sh",
        "train_default.sh",
    }
    for p in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, f"{p.name}: {r.stderr}"
        assert "/tmp" not in _code(p), f"{p.name} hard-codes /tmp (use $MF_TMP from env.sh)"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed; bash -n passed")
    r = subprocess.run(
        ["shellcheck", "-s", "bash", "-x", "-S", "warning", *(str(p) for p in SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _code(script: Path) -> str:
    """The script without its comments and defaults' documentation, for the /tmp check."""
    lines = [ln.split("#", 1)[0] for ln in script.read_text().splitlines()]
    return "\n".join(ln for ln in lines if "MF_TMP=${MF_TMP:-/tmp}" not in ln)


def _checkout(path: Path) -> Path:
    """A stand-in for the project checkout: the parts the scripts use, linked."""
    path.mkdir(parents=True)
    for name in TREE:
        (path / name).symlink_to(ROOT / name)
    return path


def _probe_wheel(folder: Path) -> None:
    """A tiny pure-Python wheel in .whl/, so env.sh's install step runs without a network."""
    folder.mkdir()
    dist = f"{PROBE}-0.1.dist-info"
    with zipfile.ZipFile(folder / f"{PROBE}-0.1-py3-none-any.whl", "w") as z:
        z.writestr(f"{PROBE}/__init__.py", "OK = True\n")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n")
        z.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{dist}/RECORD", "")
    (folder / ".done").touch()  # prepare.sh then skips the real download


def _parse_plan(text: str) -> list[tuple[str, str, list[str]]]:
    """(number, command, carry) of each ``N. run(command="...", carry=[...])`` printed."""
    call = r"^(\d+'?)\. run\(command=\"([^\"]+)\", timeout_s=\d+,\s*carry=\[([^\]]*)\]\)"
    calls = re.findall(call, text, flags=re.M)
    return [(n, cmd, re.findall(r'"([^"]+)"', carry)) for n, cmd, carry in calls]


@pytest.fixture(scope="module")
def flow(small_subset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("gpu_flow")
    train_csv, pairs = small_subset
    src = base / "src"  # identity folders of links to the shared images (nothing copied)
    with train_csv.open(newline="") as fh:
        for path, label in csv.reader(fh):
            (src / label).mkdir(parents=True, exist_ok=True)
            (src / label / Path(path).name).symlink_to(path)
    local = _checkout(base / "local")
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(local)], check=True)
    _probe_wheel(local / ".whl")
    tmp = base / "device-tmp"  # the device's /tmp: kept while the machine stays warm
    env = {
        **os.environ,
        "PY": sys.executable,
        "SRC": str(src),
        "DEV": str(pairs),
        "SHARD_MB": "0.1",
        "TEACHER_BATCH": "32",
    }
    for key in ("OUT", "MF_DATA", "MF_RUNS", "MF_SITE", "MF_TMP", "CONFIGS", "EXTRA"):
        env.pop(key, None)
    prep = subprocess.run(
        ["bash", "gpu/prepare.sh", "--teacher"],
        cwd=local,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prep.returncode == 0, prep.stdout + prep.stderr
    plan = _parse_plan(prep.stdout)

    device_env = {
        **os.environ,
        "PY": sys.executable,
        "MF_TMP": str(tmp),
        "WORKERS": "0",
        "CONFIGS": " ".join(CONFIGS),
        "EXTRA": TINY,
        "COMPILE": "false",
    }
    for key in ("OUT", "MF_DATA", "MF_RUNS", "MF_SITE", "SRC", "DEV", "PYTHONPATH"):
        device_env.pop(key, None)
    calls = []
    for i, (num, command, carry) in enumerate(plan):
        repo = _checkout(base / f"call{i}" / "repo")  # a fresh copy of the tree per call
        for rel in carry:
            src_path, dst = local / rel, repo / rel
            assert src_path.exists(), f"call {num} carries {rel}, which prepare.sh did not make"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src_path.is_dir():
                shutil.copytree(src_path, dst)
            else:
                shutil.copy2(src_path, dst)
        out = base / f"call{i}" / "out"
        out.mkdir()
        command = command.replace("<best>", "arcface")
        r = subprocess.run(
            ["bash", "-c", command],
            cwd=repo,
            env={**device_env, "OUT": str(out)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        calls.append(
            {
                "num": num,
                "command": command,
                "carry": carry,
                "out": out,
                "rc": r.returncode,
                "log": r.stdout + r.stderr,
            }
        )
    return {"prep": prep.stdout, "plan": plan, "calls": calls, "local": local, "tmp": tmp}


def _call(flow: dict, script: str) -> dict:
    (c,) = [c for c in flow["calls"] if script in c["command"]]
    return c


def test_prepare_packs_shards_and_prints_a_call_per_part(flow: dict) -> None:
    d = flow["local"] / ".gpu-data"
    manifest = dict(line.split() for line in (d / "manifest.txt").read_text().splitlines())
    shards = sorted(n for n in manifest if n.endswith(".rec"))
    assert len(shards) >= 2, "the dry run must exercise staging across several calls"
    for name, size in manifest.items():
        assert (d / name).stat().st_size == int(size)
    assert {
        "celeba.labels.json",
        "dev_crops.npz",
        "teacher_sface.npy",
        "teacher_sface.json",
    } <= set(manifest)
    teacher = np.load(d / "teacher_sface.npy")
    assert teacher.shape == (72, 128)
    commands = [cmd for _, cmd, _ in flow["plan"]]
    assert commands[:-2] == ["bash gpu/stage.sh"] * (len(shards) - 1)
    assert commands[-2] == "bash gpu/compare.sh" and "gpu/train_default.sh" in commands[-1]
    carried = {f.removeprefix(".gpu-data/") for _, _, carry in flow["plan"][:-1] for f in carry}
    assert set(manifest) - carried == {"teacher_sface.npy", "teacher_sface.json"}
    assert set(manifest) <= {f.removeprefix(".gpu-data/") for f in flow["plan"][-1][2]} | carried
    assert "WARNING" not in flow["prep"]
    if (flow["local"] / ".git").is_dir():
        exclude = (flow["local"] / ".git" / "info" / "exclude").read_text().split()
        assert "/.gpu-data/" in exclude and "/.whl/" in exclude


def test_staging_calls_report_missing_parts_until_the_last(flow: dict) -> None:
    stages = [c for c in flow["calls"] if c["command"] == "bash gpu/stage.sh"]
    for c in stages:
        assert c["rc"] == 2, c["log"]
        assert "still missing" in c["log"] and "staged celeba-" in c["log"]
    # the carried wheels were installed once, into $MF_TMP/site
    site = flow["tmp"] / "site"
    assert (site / ".mf-installed").is_file() and (site / PROBE / "__init__.py").is_file()


def _check_out_dir(out: Path) -> None:
    """What the device tool can bring back: <= 8 files of <= 16 MiB, plain names, 2 deep."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(OUT_NAME.match(part) for part in rel.parts), rel
        assert p.stat().st_size <= 16 * 2**20


def test_compare_writes_table_results_logs_and_weights(flow: dict) -> None:
    c = _call(flow, "gpu/compare.sh")
    assert c["rc"] == 0, c["log"]
    out = c["out"]
    _check_out_dir(out)
    assert "0 file(s) of the manifest still missing" in c["log"]
    assert "not staged (optional): teacher_sface.npy" in c["log"]
    names = [Path(p).stem.removesuffix("_mbf") for p in CONFIGS]
    table = (out / "table.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ")][2:]
    assert len(rows) == len(CONFIGS) and all(any(f"| {n} |" in r for r in rows) for n in names)
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == names
    for r in results["rows"]:
        assert r["status"] == "done", r["error"]
        assert 0 <= r["accuracy"] <= 100 and r["std"] >= 0 and r["steps"] == 3
    assert "steps=3" in results["overrides"] and results["dev"]["n_pairs"] == 80
    log = (out / "compare.log").read_text()
    assert all(f"== {n}: training" in log for n in names)
    with tarfile.open(out / "logs.tar.gz") as t:
        members = set(t.getnames())
    for n in names:
        assert {
            f"{n}_mbf/{f}" for f in ("model.json", "metrics.csv", "dev_metrics.json")
        } <= members
    parts = sorted(out.glob("weights.tar.part-*"))
    assert parts and parts[0].name == "weights.tar.part-00"
    blob = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        assert sorted(t.getnames()) == sorted(f"{n}_mbf/weights.fp16.safetensors" for n in names)
        for m in t.getmembers():
            sd = load_safetensors(t.extractfile(m).read())
            floats = [v for v in sd.values() if v.dtype.kind == "f"]
            assert floats and all(v.dtype == np.float16 for v in floats)


def test_train_default_exports_a_loadable_fp16_model(flow: dict, shared_data: Path) -> None:
    c = _call(flow, "gpu/train_default.sh")
    assert c["rc"] == 0, c["log"]
    out = c["out"]
    _check_out_dir(out)
    assert "finished after 3 steps" in (out / "train.log").read_text()
    model = out / "model"
    assert sorted(p.name for p in model.iterdir()) == ["model.json", "weights.safetensors"]
    assert all(
        v.dtype == np.float16
        for v in load_file(model / "weights.safetensors").values()
        if v.dtype.kind == "f"
    )
    card = json.loads((model / "model.json").read_text())
    assert card["name"] == "marginface-mbf"
    distill = card["training"]["distill"]  # the staged teacher embeddings were used
    assert distill["teacher"].endswith("mf-data/teacher_sface.npy") and distill["weight"] == 1.0
    for name in ("dev_metrics.json", "dev_metrics_flip.json"):
        m = json.loads((out / name).read_text())
        assert 0 <= m["accuracy_mean"] <= 100
    assert (out / "metrics.csv").read_text().count("\n") >= 2
    embedder = load_embedder(model)
    assert embedder.embedding_dim == 16
    import cv2

    face = next((shared_data / "celeba-train-112").glob("*/*.jpg"))
    crop = cv2.cvtColor(cv2.imread(str(face)), cv2.COLOR_BGR2RGB)
    e = embedder.embed(crop[None])
    assert e.shape == (1, 16) and np.isfinite(e).all()
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-4
