"""``marginface align``: batch alignment with a failure CSV and resume."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from marginface.align.batch import AlignJob, align_folder


@pytest.fixture
def photo_tree(tmp_path, shared_data, astronaut):
    src = tmp_path / "src"
    dev = sorted((shared_data / "celeba-dev").glob("*/*.jpg"))[:3]
    for p in dev:
        (src / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, src / p.parent.name / p.name)  # into tmp only, never the repository
    (src / "misc").mkdir()
    Image.fromarray(astronaut).save(src / "misc" / "astronaut.png")
    (src / "misc" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (src / "misc" / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (10, 10), (120, 90, 60)).save(src / "misc" / "tiny.png")
    Image.new("RGB", (200, 160), (128, 128, 128)).save(src / "misc" / "wall.png")
    (src / "misc" / "notes.txt").write_text("not an image, ignored by extension")
    return src


def _failures(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["file"]: row["reason"] for row in csv.DictReader(fh)}


def test_failure_csv_and_resume(photo_tree, tmp_path):
    dst = tmp_path / "dst"
    report = align_folder(photo_tree, dst, workers=1, progress=False)
    assert report.total == 8 and report.aligned == 4 and report.failed == 4
    failures = _failures(dst / "_failed.csv")
    assert failures == {
        "misc/corrupt.jpg": "unreadable",
        "misc/empty.jpg": "unreadable",
        "misc/tiny.png": "too small",
        "misc/wall.png": "no face",
    }
    crops = sorted(dst.rglob("*.jpg"))
    assert len(crops) == 4 and (dst / "misc" / "astronaut.jpg").is_file()
    assert all(np.asarray(Image.open(c)).shape == (112, 112, 3) for c in crops)
    assert not list(dst.rglob(".part-*"))

    # a rerun does nothing; removing one crop redoes only that file
    again = align_folder(photo_tree, dst, workers=1, progress=False)
    assert again.skipped == 8 and again.aligned == 0
    (dst / "misc" / "astronaut.jpg").unlink()
    third = align_folder(photo_tree, dst, workers=1, progress=False)
    assert third.aligned == 1 and third.skipped == 7
    assert _failures(dst / "_failed.csv") == failures  # earlier failures are kept
    retried = align_folder(photo_tree, dst, workers=1, progress=False, retry_failed=True)
    assert retried.failed == 4 and retried.skipped == 4


def test_all_faces_png_and_112x96(photo_tree, tmp_path):
    job = AlignJob(selection="all", image_format="png", template="arcface_112x96")
    dst = tmp_path / "out"
    report = align_folder(photo_tree, dst, job, progress=False)
    assert report.faces >= 4
    first = dst / "misc" / "astronaut_0.png"
    assert np.asarray(Image.open(first)).shape == (112, 96, 3)


@pytest.mark.slow
def test_cli_with_worker_processes(photo_tree, tmp_path):
    import typer
    from typer.testing import CliRunner

    from marginface.cli import align as align_cli
    from marginface.cli import embed as embed_cli

    app = typer.Typer()
    align_cli.register(app)
    embed_cli.register(app)
    dst = tmp_path / "cli-out"
    result = CliRunner().invoke(app, ["align", str(photo_tree), str(dst), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 aligned" in result.output and "4 failed" in result.output
    assert _failures(dst / "_failed.csv")["misc/corrupt.jpg"] == "unreadable"
    assert len(list(dst.rglob("*.jpg"))) == 4


def test_destination_inside_source_is_refused(photo_tree):
    from marginface.errors import ImageError

    with pytest.raises(ImageError, match="inside"):
        align_folder(photo_tree, photo_tree / "aligned", progress=False)
