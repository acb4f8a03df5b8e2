"""Fixtures for the data tests: small views of the real shared data (symlinks, never copies)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def celeba_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder linking 30 identity folders of ``celeba-train-112`` (about 250 images)."""
    src = shared_data / "celeba-train-112"
    root = tmp_path_factory.mktemp("celeba_subset")
    names = sorted(p.name for p in src.iterdir() if p.is_dir())[:30]
    for name in names:
        (root / name).symlink_to(src / name, target_is_directory=True)
    return root


@pytest.fixture()
def folder_with_bad_images(celeba_subset: Path, tmp_path: Path) -> Path:
    """Four real identities plus one identity holding a corrupt, a truncated and an empty JPEG."""
    root = tmp_path / "faces"
    root.mkdir()
    names = sorted(p.name for p in celeba_subset.iterdir())[:4]
    for name in names:
        (root / name).symlink_to((celeba_subset / name).resolve(), target_is_directory=True)
    bad = root / "zz_bad"
    bad.mkdir()
    good = sorted((celeba_subset / names[0]).iterdir())[0].read_bytes()
    (bad / "good.jpg").write_bytes(good)
    (bad / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (bad / "truncated.jpg").write_bytes(good[:40])
    (bad / "empty.jpg").write_bytes(b"")
    return root
