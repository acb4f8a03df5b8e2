"""insightface RecordIO: byte layout, face layout, packing, shards and the CLI."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from marginface.cli import data as data_cli
from marginface.data import (
    FaceRecordWriter,
    ImageFolderDataset,
    IRHeader,
    RecordIODataset,
    RecordReader,
    RecordWriter,
    SkippedSample,
    decode_image,
    find_shards,
    open_dataset,
    pack_folder,
    pack_record,
    unpack_record,
)
from marginface.data.recordio import frame_record
from marginface.errors import DataError

MAGIC = bytes.fromhex("0a23d7ce")  # 0xCED7230A little-endian


def test_irheader_bytes_match_mxnet_layout() -> None:
    rec = pack_record(IRHeader(0, 3.0, 7, 0), b"abc")
    expected = bytes(4) + bytes.fromhex("00004040") + (7).to_bytes(8, "little") + bytes(8) + b"abc"
    assert rec == expected
    header, payload = unpack_record(rec)
    assert header == IRHeader(0, 3.0, 7, 0) and payload == b"abc"
    # Array labels: flag = count, label field 0, floats follow the header.
    rec = pack_record(IRHeader(0, [5.0, 9.0], 1, 2), b"img")
    assert struct.unpack_from("<IfQQ", rec) == (2, 0.0, 1, 2)
    assert rec[24:32] == struct.pack("<2f", 5.0, 9.0) and rec[32:] == b"img"
    header, payload = unpack_record(rec)
    assert header.flag == 2 and header.label.tolist() == [5.0, 9.0] and payload == b"img"


def test_framing_pads_and_splits_at_aligned_magic() -> None:
    framed = frame_record(b"abcde")
    assert framed == MAGIC + struct.pack("<I", 5) + b"abcde" + bytes(3)
    payload = b"12345678" + MAGIC + b"tail"
    framed = frame_record(payload)
    assert framed == (
        MAGIC
        + struct.pack("<I", (1 << 29) | 8)
        + b"12345678"
        + MAGIC
        + struct.pack("<I", (3 << 29) | 4)
        + b"tail"
    )
    # A magic at an unaligned offset is ordinary data.
    odd = b"123" + MAGIC + b"x"
    assert frame_record(odd)[:8] == MAGIC + struct.pack("<I", len(odd))


def test_writer_and_reader_roundtrip_with_and_without_index(tmp_path: Path) -> None:
    payloads = [b"", b"abc", b"12345678" + MAGIC + b"tail", MAGIC * 3 + b"z", bytes(range(256))]
    with RecordWriter(tmp_path / "x.rec") as w:
        for key, p in enumerate(payloads):
            w.write(key, p)
    reader = RecordReader(tmp_path / "x.rec")
    assert [reader.read(k) for k in range(len(payloads))] == payloads
    idx = (tmp_path / "x.idx").read_text().splitlines()
    assert idx[0] == "0\t0" and all("\t" in line for line in idx)
    (tmp_path / "x.idx").unlink()
    scanned = RecordReader(tmp_path / "x.rec")  # no index: scanned
    assert [scanned.read(k) for k in range(len(payloads))] == payloads
    with pytest.raises(DataError, match="no record with key 99"):
        reader.read(99)


def test_face_layout_header_and_identity_records(tmp_path: Path) -> None:
    with FaceRecordWriter(tmp_path / "train.rec") as w:
        for label, n in [(0, 2), (1, 3), (4, 1)]:
            for i in range(n):
                w.add(f"img{label}-{i}".encode(), label)
        with pytest.raises(ValueError, match="contiguously"):
            w.add(b"late", 0)
    reader = RecordReader(tmp_path / "train.rec")
    h0, payload = unpack_record(reader.read(0))
    assert h0.flag == 2 and h0.label.tolist() == [7.0, 10.0] and payload == b""
    ranges = [unpack_record(reader.read(k))[0].label.tolist() for k in (7, 8, 9)]
    assert ranges == [[1.0, 3.0], [3.0, 6.0], [6.0, 7.0]]
    h, payload = unpack_record(reader.read(4))
    assert h.flag == 0 and h.label == 1.0 and payload == b"img1-1"
    ds = RecordIODataset(tmp_path / "train.rec")
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 4]
    assert ds.num_classes == 5 and ds.read_bytes(5) == b"img4-0"


def test_reads_files_with_array_labels_and_without_header(tmp_path: Path) -> None:
    # Some released sets store image labels as arrays (class first).
    with RecordWriter(tmp_path / "a.rec") as w:
        w.write(0, pack_record(IRHeader(2, [3.0, 5.0], 0, 0)))
        w.write(1, pack_record(IRHeader(2, [8.0, 0.0], 1, 0), b"p"))
        w.write(2, pack_record(IRHeader(2, [9.0, 0.0], 2, 0), b"q"))
        w.write(3, pack_record(IRHeader(2, [1.0, 2.0], 8, 0)))
        w.write(4, pack_record(IRHeader(2, [2.0, 3.0], 9, 0)))
    ds = RecordIODataset(tmp_path / "a.idx")
    assert ds.labels.tolist() == [8, 9] and ds.read_bytes(1) == b"q"
    # im2rec-style list: every record an image, no header record.
    with RecordWriter(tmp_path / "b.rec") as w:
        for k in range(3):
            w.write(k, pack_record(IRHeader(0, float(2 - k), k, 0), bytes([k])))
    (tmp_path / "b.idx").unlink()
    ds = RecordIODataset(tmp_path / "b.rec")
    assert ds.labels.tolist() == [2, 1, 0] and ds.read_bytes(2) == b"\x02"


def test_pack_roundtrip_real_faces(celeba_subset: Path, tmp_path: Path) -> None:
    folder = ImageFolderDataset(celeba_subset)
    result = pack_folder(celeba_subset, tmp_path / "out" / "train")
    assert result.num_images == len(folder) and not result.skipped
    assert result.rec_files == [tmp_path / "out" / "train.rec"]
    ds = open_dataset(tmp_path / "out")  # folder holding train.rec
    assert isinstance(ds, RecordIODataset)
    assert np.array_equal(ds.labels, folder.labels)
    assert ds.label_map == folder.label_map  # from train.labels.json
    for i in range(0, len(ds), 17):
        assert ds.read_bytes(i) == folder.read_bytes(i)  # JPEGs stored unchanged
        assert np.array_equal(ds[i][0], folder[i][0])


def test_pack_shards_bounded_and_read_as_one(celeba_subset: Path, tmp_path: Path) -> None:
    folder = ImageFolderDataset(celeba_subset)
    limit_mb = 0.25
    result = pack_folder(celeba_subset, tmp_path / "faces", quality=70, shard_size_mb=limit_mb)
    shards = find_shards(tmp_path / "faces")
    assert len(shards) >= 3 and shards == result.rec_files
    assert [p.name for p in shards[:2]] == ["faces-00000.rec", "faces-00001.rec"]
    assert all(p.stat().st_size <= limit_mb * 1_000_000 for p in shards)  # decimal MB
    assert all(p.with_suffix(".idx").is_file() for p in shards)
    whole = RecordIODataset(tmp_path / "faces")
    listed = RecordIODataset([str(p) for p in shards])
    assert len(whole) == len(listed) == len(folder)
    assert np.array_equal(whole.labels, folder.labels)
    assert np.array_equal(listed.labels, folder.labels)
    # Each shard is a complete insightface file on its own.
    first = RecordIODataset(shards[0])
    assert 0 < len(first) < len(folder)
    # Re-encoded at quality 70: different bytes, same picture.
    i = len(folder) // 2
    assert whole.read_bytes(i) != folder.read_bytes(i)
    diff = np.abs(whole[i][0].astype(int) - folder[i][0].astype(int)).mean()
    assert diff < 6


def test_pack_converts_pgm_and_skips_bad_images(
    shared_data: Path, folder_with_bad_images: Path, tmp_path: Path
) -> None:
    result = pack_folder(folder_with_bad_images, tmp_path / "bad")
    assert sorted(Path(p).name for p, _ in result.skipped) == [
        "empty.jpg",
        "garbage.jpg",
        "truncated.jpg",
    ]
    ds = RecordIODataset(tmp_path / "bad")
    assert len(ds) == result.num_images == len(ImageFolderDataset(folder_with_bad_images)) - 3

    orl = tmp_path / "orl"
    orl.mkdir()
    for name in ("s1", "s2"):
        (orl / name).symlink_to(shared_data / "orl" / name, target_is_directory=True)
    pack_folder(orl, tmp_path / "orl_rec" / "train")
    rec = RecordIODataset(tmp_path / "orl_rec" / "train")
    assert len(rec) == 20 and rec.read_bytes(0)[:3] == b"\xff\xd8\xff"  # stored as JPEG
    assert decode_image(rec.read_bytes(0)).pixels.shape == (112, 92, 3)


def test_corrupt_recordio_is_reported_or_skipped(celeba_subset: Path, tmp_path: Path) -> None:
    pack_folder(celeba_subset, tmp_path / "t")
    rec = tmp_path / "t.rec"
    ds = RecordIODataset(rec)
    data = bytearray(rec.read_bytes())
    # Damage the first image of an identity and a later one of the same identity.
    labels = ds.labels
    first = next(
        i
        for i in range(1, len(ds) - 2)
        if labels[i] != labels[i - 1] and labels[i] == labels[i + 2]
    )
    for i in (first, first + 2):
        pos = ds._offset[i]
        data[pos : pos + 4] = b"XXXX"
    rec.write_bytes(bytes(data))
    damaged = RecordIODataset(rec)
    # Labels come from the identity ranges (the class read from the first readable image);
    # the damaged records are skipped when loaded, the others still load.
    assert np.array_equal(damaged.labels, ds.labels) and not damaged.unreadable
    for i in (first, first + 2):
        item = damaged[i]
        assert isinstance(item, SkippedSample) and "bad magic" in item.reason
    assert not isinstance(damaged[first + 1], SkippedSample)
    # Damaged JPEG data: skipped, not a crash.
    k = 0 if first > 0 else len(ds) - 1
    data[ds._offset[k] + 100 : ds._offset[k] + 2000] = bytes(1900)
    rec.write_bytes(bytes(data))
    item = RecordIODataset(rec)[k]
    assert isinstance(item, SkippedSample) and "not an image" in item.reason  # the one decoder's
    (tmp_path / "t.idx").write_text("0\tnot-a-number\n")
    with pytest.raises(DataError, match=r"t\.idx:1: expected 'key<TAB>offset'"):
        RecordIODataset(rec)
    with pytest.raises(DataError, match="no RecordIO data"):
        RecordIODataset(tmp_path / "missing")


def test_cli_pack(celeba_subset: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    data_cli.register(app)

    @app.callback()
    def _root() -> None:
        pass

    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "data",
            "pack",
            str(celeba_subset),
            str(tmp_path / "p"),
            "--quality",
            "85",
            "--shard-size-mb",
            "0.5",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "identities" in out.output and "p-00000.rec" in out.output
    info = runner.invoke(app, ["data", "info", str(tmp_path / "p")])
    assert info.exit_code == 0, info.output
    assert "RecordIODataset" in info.output and "30 identities" in info.output
    bad = runner.invoke(app, ["data", "pack", str(tmp_path / "none"), str(tmp_path / "q")])
    assert isinstance(bad.exception, DataError)
