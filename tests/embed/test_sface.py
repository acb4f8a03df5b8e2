"""The SFace baseline and the Pipeline on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.embed import Face, Pipeline, load_embedder
from marginface.errors import ImageError, NoFaceError

# OpenCV Zoo's published cosine threshold for SFace.
SFACE_THRESHOLD = 0.363


def _pairs(root: Path, n: int) -> list[tuple[Path, Path, bool]]:
    lines = (root / "pairs.txt").read_text().splitlines()[1:]

    def path(name: str, i: str) -> Path:
        return root / name / f"{name}_{int(i):04d}.jpg"

    pairs = []
    for line in lines:
        p = line.split("\t")
        if len(p) == 3:
            pairs.append((path(p[0], p[1]), path(p[0], p[2]), True))
        else:
            pairs.append((path(p[0], p[1]), path(p[2], p[3]), False))
    same = [p for p in pairs if p[2]][::20][:n]
    diff = [p for p in pairs if not p[2]][::20][:n]
    return same + diff


@pytest.mark.slow
def test_same_person_above_threshold_different_below(shared_data, sface_pipeline):
    pairs = _pairs(shared_data / "celeba-dev", 15)
    images = sorted({p for a, b, _ in pairs for p in (a, b)})
    faces = dict(zip(images, sface_pipeline.embed_images(images), strict=True))
    same, diff = [], []
    for a, b, is_same in pairs:
        assert faces[a] and faces[b], "every celeba-dev photo shows a face"
        score = float(faces[a][0].embedding @ faces[b][0].embedding)
        (same if is_same else diff).append(score)
    same, diff = np.array(same), np.array(diff)
    # celeba-dev is harder than SFace's own benchmark: a few matched pairs fall just short
    assert np.all(diff < SFACE_THRESHOLD), diff
    assert np.mean(same > SFACE_THRESHOLD) >= 0.7, same
    accuracy = (np.sum(same > SFACE_THRESHOLD) + np.sum(diff < SFACE_THRESHOLD)) / 30
    assert accuracy >= 0.85
    assert same.mean() - diff.mean() > 0.25


def test_opencv_and_onnxruntime_run_the_same_sface(dev_crops):
    cv = load_embedder("sface", runtime="opencv").embed(dev_crops)
    ort = load_embedder("sface", runtime="onnxruntime").embed(dev_crops, batch_size=3)
    np.testing.assert_allclose(cv, ort, atol=1e-5)


def test_pipeline_on_the_astronaut(astronaut, sface_pipeline):
    faces = sface_pipeline.embed_image(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face)
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert face.crop.shape == (112, 112, 3) and face.crop.dtype == np.uint8
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert abs(np.linalg.norm(face.embedding) - 1.0) < 1e-5
    assert 0.5 < face.score <= 1.0
    same = sface_pipeline.embed_one(astronaut[:, ::-1].copy())
    assert float(same.embedding @ face.embedding) > 0.6
    assert set(face.to_dict()) == {"box", "score", "landmarks"}


def test_no_face_is_an_empty_list_or_an_error(sface_pipeline):
    blank = np.full((240, 320, 3), 127, dtype=np.uint8)
    assert sface_pipeline.embed_image(blank) == []
    with pytest.raises(NoFaceError):
        sface_pipeline.embed_one(blank)
    with pytest.raises(ImageError, match="too small"):
        sface_pipeline.embed_image(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="not an image"):
        sface_pipeline.embed_image(b"just some text, pretending to be a photo" * 3)


def test_selection_all_and_batched_images(astronaut, sface_pipeline):
    import cv2

    canvas = np.full((600, 1200, 3), 90, dtype=np.uint8)
    canvas[:512, :512] = astronaut
    canvas[100:356, 700:956] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    pipe = Pipeline(sface_pipeline.detector, sface_pipeline.embedder, selection="all")
    faces = pipe.embed_image(canvas)
    assert len(faces) == 2 and faces[0].box[0] < 300 < faces[1].box[0]
    assert float(faces[0].embedding @ faces[1].embedding) > 0.6  # the same person twice
    batched = pipe.embed_images([canvas, np.full((100, 100, 3), 0, np.uint8), astronaut])
    assert [len(f) for f in batched] == [2, 0, 1]
    np.testing.assert_allclose(batched[0][1].embedding, faces[1].embedding, atol=1e-5)
    big_only = Pipeline(
        sface_pipeline.detector, sface_pipeline.embedder, selection="all", min_face_size=70
    ).embed_image(canvas)
    assert len(big_only) == 1


def test_pipeline_reads_files_and_animated_gifs(tmp_path, astronaut, sface_pipeline):
    from PIL import Image

    frames = [Image.fromarray(astronaut), Image.new("RGB", astronaut.shape[1::-1], (0, 0, 0))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    faces = sface_pipeline.embed_image(gif)
    assert len(faces) == 1 and any("first frame" in n for n in faces[0].notes)


def test_embed_cli(tmp_path, astronaut):
    import json

    import typer
    from PIL import Image
    from typer.testing import CliRunner

    from marginface.cli import embed as embed_cli

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut).save(photo, quality=95)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    app = typer.Typer()
    embed_cli.register(app)
    out = tmp_path / "emb.npy"
    result = CliRunner().invoke(
        app, ["embed", str(photo), str(broken), "--model", "sface", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["model"] == "sface"
    assert len(payload["results"][0]["faces"]) == 1 and "error" in payload["results"][1]
    assert np.load(out).shape == (1, 128)
