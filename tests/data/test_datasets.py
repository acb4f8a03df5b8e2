"""Identity folders, CSV lists, label maps, and skipping unreadable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.data import (
    CsvListDataset,
    FaceBatch,
    ImageFolderDataset,
    LabelMap,
    SkipCounter,
    SkippedSample,
    build_transform,
    collate_faces,
    make_loader,
    open_dataset,
)
from marginface.errors import DataError, ImageError


def test_orl_identity_folders(shared_data: Path) -> None:
    ds = ImageFolderDataset(shared_data / "orl")
    assert len(ds) == 400 and ds.num_classes == 40
    assert np.all(ds.class_counts() == 10)
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.shape == (112, 92, 3)  # grayscale -> RGB
    assert np.array_equal(image[..., 0], image[..., 2])
    assert ds.label_map.name(label) == "s1"
    # With a transform: resized to the card's input size, normalised to [-1, 1].
    ds.transform = build_transform(None)
    x, _ = ds[5]
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) < 0 < float(x.max()) <= 1.0


def test_training_decodes_as_inference_does(celeba_subset: Path, tmp_path: Path) -> None:
    """One decoder: EXIF orientation, transparency and the bomb guard apply to training too."""
    import io

    from PIL import Image

    from marginface.align import read_image

    root = tmp_path / "faces" / "a"
    root.mkdir(parents=True)
    rgb = np.zeros((30, 50, 3), dtype=np.uint8)
    rgb[:, :10] = 255
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    img.save(root / "turned.jpg", exif=exif.tobytes(), quality=95)
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 255  # bottom half transparent
    Image.fromarray(rgba, "RGBA").save(root / "clear.png")
    (root / "plain.jpg").symlink_to(next(celeba_subset.glob("*/*.jpg")))
    ds = ImageFolderDataset(tmp_path / "faces")
    for i in range(len(ds)):
        image, _ = ds[i]
        np.testing.assert_array_equal(image, read_image(ds.source(i)))
    by_name = {Path(ds.source(i)).name: ds[i][0] for i in range(len(ds))}
    assert by_name["turned.jpg"].shape == (50, 30, 3)
    assert by_name["clear.png"][15, 0].tolist() == [255, 255, 255]
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, "PNG")
    from marginface.data import decode_image

    with pytest.raises(ImageError, match="decompression-bomb"):
        decode_image(buf.getvalue(), max_pixels=10_000_000, source="big.png")


def test_celeba_folders_and_label_map_roundtrip(celeba_subset: Path, tmp_path: Path) -> None:
    ds = ImageFolderDataset(celeba_subset)
    assert ds.num_classes == 30 and len(ds) == int(ds.class_counts().sum())
    names = sorted(p.name for p in celeba_subset.iterdir())
    assert ds.label_map.names == names
    image, label = ds[len(ds) - 1]
    assert image.shape == (112, 112, 3) and label == 29
    path = ds.label_map.save(tmp_path / "labels.json")
    loaded = LabelMap.load(path)
    assert loaded == ds.label_map
    again = ImageFolderDataset(celeba_subset, label_map=loaded)
    assert np.array_equal(again.labels, ds.labels)
    # A map that lacks identities of the folder is refused.
    with pytest.raises(DataError, match="not in the label map"):
        ImageFolderDataset(celeba_subset, label_map=LabelMap(names[:10]))
    # min_images keeps only identities with enough images.
    rich = ImageFolderDataset(celeba_subset, min_images=5)
    assert rich.num_classes == int((ds.class_counts() >= 5).sum())
    assert rich.class_counts().min() >= 5


def test_missing_and_malformed_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"found 1 images directly in it"):
        ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "empty" / "someone").mkdir(parents=True)
    with pytest.raises(DataError, match="no identity folders with images"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="label map not found"):
        LabelMap.load(tmp_path / "labels.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        LabelMap.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="duplicate identity name 'b'"):
        LabelMap(["a", "b", "b"])


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_list_with_names_header_and_comments(celeba_subset: Path, tmp_path: Path) -> None:
    files = sorted(celeba_subset.glob("*/*.jpg"))[:6]
    rows = "\n".join(f"{f},person_{f.parent.name}" for f in files)
    csv_path = _write_csv(tmp_path / "list.csv", f"path,label\n# a comment\n{rows}\n\n")
    ds = CsvListDataset(csv_path)
    assert len(ds) == 6
    assert ds.label_map.names == sorted({f"person_{f.parent.name}" for f in files})
    image, label = ds[0]
    assert image.shape == (112, 112, 3)
    assert ds.label_map.name(label) == f"person_{files[0].parent.name}"


def test_csv_list_with_integer_labels_and_relative_paths(
    celeba_subset: Path, tmp_path: Path
) -> None:
    files = sorted(celeba_subset.glob("*/*.jpg"))[:3]
    rows = "\n".join(f"{f.relative_to(celeba_subset)},{i * 2}" for i, f in enumerate(files))
    csv_path = _write_csv(tmp_path / "list.csv", rows)
    ds = CsvListDataset(csv_path, root=celeba_subset)
    assert ds.labels.tolist() == [0, 2, 4] and ds.num_classes == 5
    assert ds[2][1] == 4 and ds[2][0].shape == (112, 112, 3)
    assert open_dataset(csv_path).num_classes == 5  # dispatch by suffix; relative to CSV dir
    assert isinstance(open_dataset(csv_path)[0], SkippedSample)  # paths relative to tmp_path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a.jpg,1\nb.jpg\n", r"list\.csv:2: expected 2 columns"),
        ("a.jpg,1\n\nb.jpg,1,extra\n", r"list\.csv:3: expected 2 columns"),
        ("a.jpg,1\n,2\n", r"list\.csv:2: empty path"),
        ("a.jpg,1\nb.jpg,   \n", r"list\.csv:2: empty label"),
        ("a.jpg,1\nb.jpg,-3\n", r"list\.csv:2: negative label -3"),
        ("path,label\n", r"no samples listed"),
    ],
)
def test_bad_csv_lines_are_named(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        CsvListDataset(_write_csv(tmp_path / "list.csv", text))


def test_csv_missing_and_unknown_label(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="label file not found"):
        CsvListDataset(tmp_path / "missing.csv")
    csv_path = _write_csv(tmp_path / "list.csv", "a.jpg,alice\nb.jpg,bob\n")
    with pytest.raises(DataError, match=r"list\.csv:2: label 'bob' is not in the label map"):
        CsvListDataset(csv_path, label_map=LabelMap(["alice"]))
    (tmp_path / "latin.csv").write_bytes("a.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not a UTF-8"):
        CsvListDataset(tmp_path / "latin.csv")


def test_unreadable_images_are_skipped_and_counted(folder_with_bad_images: Path) -> None:
    ds = ImageFolderDataset(folder_with_bad_images, transform=build_transform("flip"))
    bad_label = ds.label_map.index("zz_bad")
    bad_idx = np.flatnonzero(ds.labels == bad_label)
    results = [ds[int(i)] for i in bad_idx]
    skipped = [r for r in results if isinstance(r, SkippedSample)]
    assert sorted(Path(s.source).name for s in skipped) == [
        "empty.jpg",
        "garbage.jpg",
        "truncated.jpg",
    ]
    assert any("empty" in s.reason for s in skipped)

    counter = SkipCounter()
    seen = 0
    loader = make_loader(ds, batch_size=7, shuffle=True, num_workers=2, timeout=120)
    for batch in loader:
        assert isinstance(batch, FaceBatch)
        assert batch.images.shape[0] == batch.labels.shape[0] == len(batch)
        seen += len(batch)
        counter.update(batch)
    assert counter.total == 3 and counter.unique == 3
    assert seen == len(ds) - 3
    summary = counter.summary()
    assert summary.startswith("skipped 3 unreadable samples") and "garbage.jpg" in summary


def test_collate_of_an_all_bad_batch_is_empty() -> None:
    batch = collate_faces([SkippedSample(0, "a.jpg", "bad"), SkippedSample(1, "b.jpg", "bad")])
    assert len(batch) == 0 and batch.labels.dtype == torch.long and len(batch.skipped) == 2
    images, labels = collate_faces([(torch.zeros(3, 4, 4), 2), SkippedSample(1, "b", "x")])
    assert images.shape == (1, 3, 4, 4) and labels.tolist() == [2]


def test_open_dataset_dispatch(shared_data: Path, tmp_path: Path) -> None:
    assert isinstance(open_dataset(shared_data / "orl"), ImageFolderDataset)
    with pytest.raises(DataError, match="data not found"):
        open_dataset(tmp_path / "nothing")


def test_the_trainers_loading_path_is_make_loader(celeba_subset: Path) -> None:
    """What the trainer reads: ``make_loader`` over ``SeededSamples`` and ``SeededBatches``.
    Each sample is augmented from ``(seed, epoch, index)`` alone, so worker processes change
    nothing; indices travel with the batch (the distillation term looks rows up by them)."""
    from marginface.card import Preprocessing
    from marginface.data import (
        ArrayDataset,
        ResumableSampler,
        SeededBatches,
        SeededSamples,
    )

    folder = ImageFolderDataset(celeba_subset)
    pixels = np.stack([folder.load_image(i) for i in range(24)])
    ds = ArrayDataset(pixels, folder.labels[:24] % 3, name="crops")
    assert ds.source(5) == "crops#5" and ds.num_classes == 3
    samples = SeededSamples(
        ds, build_transform("strong", Preprocessing(input_size=(56, 56))), with_index=True
    )
    runs = []
    for workers in (0, 2):
        batches = SeededBatches(ResumableSampler(len(ds), seed=1), batch_size=8, seed=4)
        batches.seek(2)
        runs.append(
            list(
                make_loader(
                    samples,
                    batch_sampler=batches,
                    num_workers=workers,
                    generator=torch.Generator().manual_seed(0),
                    timeout=120,
                )
            )
        )
    for a, b in zip(*runs, strict=True):
        assert a.images.shape == (8, 3, 56, 56)
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.labels, torch.as_tensor(ds.labels[a.indices.numpy()]))
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(pixels.astype(np.float32), ds.labels)
