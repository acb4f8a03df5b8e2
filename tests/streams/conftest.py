"""Fixtures of the camera-stream tests: the people of the synthetic videos, the videos
themselves (rendered once per session, on first use) and a gallery enrolling the enrolled
people from photos that never appear in the videos.

Everything is lazy: a test pays only for the fixtures it asks for, and ``scene_videos``
renders a scene only when a test first reads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.streams.synthetic import People, Scene, render, standard_scenes, truth

#: The choice of people every stream test shares (6 enrolled, 3 strangers, seed 0).
N_ENROLLED, N_STRANGERS, PEOPLE_SEED = 6, 3, 0


class SceneVideos(Mapping[str, tuple[Path, list[dict[str, Any]]]]):
    """name -> (mp4 path, ground truth) of the standard scenes, each rendered on first read
    and kept for the session. ``scenes[name]`` is the :class:`Scene` itself."""

    def __init__(self, scenes: dict[str, Scene], folder: Path) -> None:
        self.scenes = scenes
        self.folder = folder
        self._done: dict[str, tuple[Path, list[dict[str, Any]]]] = {}

    def __getitem__(self, name: str) -> tuple[Path, list[dict[str, Any]]]:
        if name not in self._done:
            scene = self.scenes[name]  # KeyError for an unknown name
            path = render(scene, self.folder / f"{name}.mp4")
            self._done[name] = (path, truth(scene))
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scenes)

    def __len__(self) -> int:
        return len(self.scenes)


@pytest.fixture(scope="session")
def default_pipeline():
    """marginface's default pipeline (SFace with YuNet, largest face), loaded once."""
    from marginface.embed.pipeline import Pipeline

    return Pipeline.from_names()


@pytest.fixture(scope="session")
def stream_people(shared_data, default_pipeline) -> People:
    """The enrolled people and the strangers of the test videos."""
    from tests.streams.synthetic import choose_people

    return choose_people(
        shared_data, N_ENROLLED, N_STRANGERS, PEOPLE_SEED, pipeline=default_pipeline
    )


@pytest.fixture(scope="session")
def stream_scenes(shared_data, stream_people) -> dict[str, Scene]:
    """The standard scenes (not rendered)."""
    return standard_scenes(shared_data, stream_people, seed=PEOPLE_SEED)


@pytest.fixture(scope="session")
def scene_videos(stream_scenes, tmp_path_factory) -> SceneVideos:
    """name -> (mp4 path, truth) of the standard scenes: H.264 1280x720 at 25 frames/s,
    each rendered once per session when first read."""
    return SceneVideos(stream_scenes, tmp_path_factory.mktemp("stream_videos"))


@pytest.fixture(scope="session")
def enrolled_gallery_path(stream_people, default_pipeline, tmp_path_factory) -> Path:
    """A SQLite gallery file enrolling each enrolled person (subject name = identity, e.g.
    ``celeb_7298``) from their enrolment photos, built once per session. Do not modify it:
    use ``enrolled_gallery`` for a private copy."""
    from marginface.gallery import Gallery, Recognizer

    path = tmp_path_factory.mktemp("stream_gallery") / "gallery.db"
    card = default_pipeline.embedder.card
    with Gallery.open(path, card=card) as gallery:
        rec = Recognizer(gallery, default_pipeline)
        for person in stream_people.enrolled:
            result = rec.enroll(
                person.identity, list(person.enrol_photos), metadata={"identity": person.identity}
            )
            assert result.enrolled >= 2, (person.identity, result.photos)
    return path


@pytest.fixture
def enrolled_gallery(enrolled_gallery_path, default_pipeline, tmp_path):
    """A private copy of the enrolled gallery, open (closed after the test)."""
    from marginface.gallery import Gallery

    copy = tmp_path / "gallery.db"
    shutil.copyfile(enrolled_gallery_path, copy)
    gallery = Gallery.open(copy, card=default_pipeline.embedder.card, create=False)
    try:
        yield gallery
    finally:
        gallery.close()
