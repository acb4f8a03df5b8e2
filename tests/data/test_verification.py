"""insightface verification .bin files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from marginface.data import ImageFolderDataset, read_verification_bin, write_verification_bin
from marginface.errors import DataError


def _pairs(celeba_subset: Path) -> tuple[list[np.ndarray], list[bool]]:
    ds = ImageFolderDataset(celeba_subset)
    counts = ds.class_counts()
    multi = [c for c in range(ds.num_classes) if counts[c] >= 2][:3]
    images, issame = [], []
    for c in multi:
        idx = np.flatnonzero(ds.labels == c)
        images += [ds[int(idx[0])][0], ds[int(idx[1])][0]]
        issame.append(True)
        other = np.flatnonzero(ds.labels == (c + 1) % ds.num_classes)[0]
        images += [ds[int(idx[0])][0], ds[int(other)][0]]
        issame.append(False)
    return images, issame


def test_bin_roundtrip_with_real_faces(celeba_subset: Path, tmp_path: Path) -> None:
    images, issame = _pairs(celeba_subset)
    path = write_verification_bin(tmp_path / "dev.bin", images, issame, quality=95)
    vs = read_verification_bin(path)
    assert vs.name == "dev" and len(vs) == len(issame) == 6
    assert vs.issame.dtype == bool and vs.issame.tolist() == issame
    assert vs.images.shape == (12, 112, 112, 3) and vs.images.dtype == np.uint8
    err = np.abs(vs.images.astype(int) - np.stack(images).astype(int)).mean()
    assert err < 3  # JPEG at quality 95
    assert np.array_equal(vs.first, vs.images[0::2]) and vs.second.shape == (6, 112, 112, 3)
    small = read_verification_bin(path, image_size=(56, 48))
    assert small.images.shape == (12, 56, 48, 3)


def test_reads_python2_style_pickles(celeba_subset: Path, tmp_path: Path) -> None:
    # insightface's files come from Python 2: a tuple of (list of byte strings, list of bools)
    # pickled with protocol 2, where bytes are written via _codecs.encode.
    images, issame = _pairs(celeba_subset)
    from marginface.data import encode_jpeg

    bins = [encode_jpeg(im, 90) for im in images]
    (tmp_path / "lfw.bin").write_bytes(pickle.dumps((bins, issame), protocol=2))
    vs = read_verification_bin(tmp_path / "lfw.bin")
    assert vs.issame.tolist() == issame and vs.images.shape[0] == 12
    (tmp_path / "np.bin").write_bytes(
        pickle.dumps(([np.frombuffer(b, np.uint8) for b in bins], np.array(issame)), protocol=4)
    )
    assert read_verification_bin(tmp_path / "np.bin").issame.tolist() == issame


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_malformed_and_malicious_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="verification file not found"):
        read_verification_bin(tmp_path / "none.bin")
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_Evil()], [True])))
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        read_verification_bin(tmp_path / "evil.bin")
    (tmp_path / "text.bin").write_bytes(b"hello world")
    with pytest.raises(DataError, match=r"not a verification \.bin"):
        read_verification_bin(tmp_path / "text.bin")
    (tmp_path / "count.bin").write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(DataError, match="3 images for 1 pairs"):
        read_verification_bin(tmp_path / "count.bin")
    (tmp_path / "bad.bin").write_bytes(pickle.dumps(([b"a", b"b"], [True])))
    with pytest.raises(DataError, match=r"image 0 \(pair 0\) cannot be decoded"):
        read_verification_bin(tmp_path / "bad.bin")
