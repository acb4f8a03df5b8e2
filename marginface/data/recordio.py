"""insightface / MXNet RecordIO face data (``train.rec`` + ``train.idx``), without MXNet.

**Container** (dmlc-core RecordIO, little-endian). A ``.rec`` file is a sequence of records::

    uint32 magic = 0xCED7230A
    uint32 lrec  = cflag << 29 | length          # length < 2**29
    byte   data[length]
    byte   pad[(4 - length % 4) % 4]             # zeros, so every record starts 4-aligned

``cflag`` is 0 for a whole record. A payload that contains the magic number at a 4-aligned
offset is split there: the magic is dropped and the pieces are written as parts with
``cflag`` 1 (first), 2 (middle) and 3 (last); the reader joins them with the magic in between.
The ``.idx`` file is text, one ``key<TAB>byte-offset`` line per record.

**Payload** (``mx.recordio.pack``): a 24-byte ``IRHeader`` ``struct.pack("<IfQQ", flag,
label, id, id2)``; if ``flag > 0`` the label is instead the ``flag`` float32 values that follow
the header (and the ``label`` field is 0); then the encoded image (JPEG) bytes.

**Face layout** (MS1MV2, MS1MV3, Glint360K, ...):

* record 0: ``flag=2``, label ``[N + 1, N + 1 + C]``: the key range of the identity records;
* records ``1 .. N``: images, label = class index (a float; some files store an array whose
  first value is the class);
* records ``N + 1 .. N + C``: one per identity, ``flag=2``, label ``[first, end)``: the range of
  image keys of that identity, no image. Images of an identity are contiguous.

Files without record-0 ranges (every record an image) are read too. :func:`pack_folder` writes
this layout from ``root/<identity>/<image>`` folders, optionally as shards
``PREFIX-00000.rec/.idx, PREFIX-00001.rec/.idx, ...`` of bounded size, each of them a complete
file in the layout above with global class labels, plus ``PREFIX.labels.json`` (the
:class:`~marginface.data.datasets.LabelMap`). :class:`RecordIODataset` reads one file or a list
of shards as one data set.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from marginface.data.datasets import FaceDataset, ImageFolderDataset, LabelMap
from marginface.data.images import decode_image, encode_jpeg
from marginface.errors import DataError, ImageError

__all__ = [
    "MAGIC",
    "FaceRecordWriter",
    "IRHeader",
    "PackResult",
    "RecordIODataset",
    "RecordReader",
    "RecordWriter",
    "find_shards",
    "pack_folder",
    "pack_record",
    "unpack_record",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
_LEN_MASK = (1 << 29) - 1


class IRHeader(NamedTuple):
    """MXNet's image-record header. ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: Any
    id: int
    id2: int


def pack_record(header: IRHeader, payload: bytes = b"") -> bytes:
    """``mx.recordio.pack``: header (+ label array) + payload."""
    label = header.label
    if isinstance(label, int | float | np.integer | np.floating):
        return struct.pack(_IR_FORMAT, 0, float(label), header.id, header.id2) + payload
    arr = np.asarray(label, dtype=np.float32).reshape(-1)
    return (
        struct.pack(_IR_FORMAT, arr.size, 0.0, header.id, header.id2)
        + arr.astype("<f4").tobytes()
        + payload
    )


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    """``mx.recordio.unpack``: split a record into its header and payload."""
    if len(record) < _IR_SIZE:
        raise DataError(f"record of {len(record)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, record)
    body = record[_IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise DataError(f"record label array of {flag} floats is truncated")
        arr = np.frombuffer(body, dtype="<f4", count=flag).astype(np.float32)
        return IRHeader(flag, arr, id_, id2), body[4 * flag :]
    return IRHeader(flag, label, id_, id2), body


def _header_class(header: IRHeader) -> int:
    label = header.label
    value = float(label[0]) if isinstance(label, np.ndarray) else float(label)
    return int(value)


# ---------------------------------------------------------------------------------------------
# Container: writing


class RecordWriter:
    """Writes framed records to ``.rec`` and their offsets to ``.idx``.

    Files are written under temporary names and renamed into place by :meth:`close`, so an
    interrupted run never leaves a half-written file under the final name.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = (
            Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        )
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec_tmp = self.rec_path.with_name(f".{self.rec_path.name}.tmp{os.getpid()}")
        self._idx_tmp = self.idx_path.with_name(f".{self.idx_path.name}.tmp{os.getpid()}")
        self._rec = open(self._rec_tmp, "wb")  # noqa: SIM115  (closed in close())
        self._idx: dict[int, int] = {}
        self._framed_size: dict[int, int] = {}
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes written to the ``.rec`` file so far."""
        return self._rec.tell()

    def __len__(self) -> int:
        return len(self._idx)

    def write(self, key: int, record: bytes) -> int:
        """Append ``record`` under ``key``; returns its byte offset."""
        if key in self._idx:
            raise ValueError(f"record key {key} written twice")
        pos = self._rec.tell()
        framed = frame_record(record)
        self._rec.write(framed)
        self._idx[int(key)] = pos
        self._framed_size[int(key)] = len(framed)
        return pos

    def overwrite(self, key: int, record: bytes) -> None:
        """Replace record ``key`` in place by one of exactly the same framed size."""
        framed = frame_record(record)
        if len(framed) != self._framed_size[key]:
            raise ValueError("overwrite needs a record of the same framed size")
        end = self._rec.tell()
        self._rec.seek(self._idx[key])
        self._rec.write(framed)
        self._rec.seek(end)

    def close(self) -> None:
        """Flush, write the index and move both files into place."""
        if self._closed:
            return
        self._closed = True
        self._rec.close()
        with open(self._idx_tmp, "w", encoding="ascii") as fh:
            fh.writelines(f"{k}\t{p}\n" for k, p in self._idx.items())
        os.replace(self._rec_tmp, self.rec_path)
        os.replace(self._idx_tmp, self.idx_path)

    def abort(self) -> None:
        """Close and delete the temporary files."""
        if self._closed:
            return
        self._closed = True
        self._rec.close()
        self._rec_tmp.unlink(missing_ok=True)
        self._idx_tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def frame_record(data: bytes) -> bytes:
    """dmlc-core framing of one payload (split at aligned magic numbers, padded to 4 bytes)."""
    if len(data) >= 1 << 29:
        raise ValueError("RecordIO records must be smaller than 512 MiB")
    out = bytearray()
    start = 0
    lower = len(data) & ~3
    pos = data.find(_MAGIC_BYTES)
    while 0 <= pos < lower:
        if pos % 4 == 0:
            out += struct.pack("<II", MAGIC, ((1 if start == 0 else 2) << 29) | (pos - start))
            out += data[start:pos]
            start = pos + 4
        pos = data.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start else 0
    out += struct.pack("<II", MAGIC, (cflag << 29) | (len(data) - start))
    out += data[start:]
    out += b"\0" * ((4 - len(data) % 4) % 4)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Container: reading


class RecordReader:
    """Random access to a ``.rec`` file by key (from ``.idx``) or byte offset.

    Reads with ``os.pread``, so one reader is safe to share between threads, and it reopens
    its file after pickling (DataLoader workers). Without an ``.idx`` file the ``.rec`` is
    scanned once to build the index.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise DataError(f"RecordIO file not found: {self.rec_path}")
        self.idx_path = (
            Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        )
        self.file_size = self.rec_path.stat().st_size
        self._fd: int | None = None
        self._pid = -1
        if self.idx_path.is_file():
            self.index = self._read_idx()
        else:
            self.index = dict(self._scan())

    def _read_idx(self) -> dict[int, int]:
        index: dict[int, int] = {}
        with open(self.idx_path, encoding="ascii", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split("\t")
                try:
                    key, pos = int(parts[0]), int(parts[1])
                except (ValueError, IndexError):
                    raise DataError(
                        f"{self.idx_path}:{lineno}: expected 'key<TAB>offset', got {line[:60]!r}"
                    ) from None
                if not 0 <= pos < self.file_size:
                    raise DataError(
                        f"{self.idx_path}:{lineno}: offset {pos} is outside "
                        f"{self.rec_path.name} ({self.file_size} bytes)"
                    )
                index[key] = pos
        return index

    def _scan(self) -> Iterator[tuple[int, int]]:
        """Yield ``(key, offset)`` for every whole record, numbering keys from 0."""
        key = 0
        pos = 0
        with open(self.rec_path, "rb") as fh:
            while pos < self.file_size:
                start = pos
                while True:
                    fh.seek(pos)
                    head = fh.read(8)
                    if len(head) < 8:
                        raise DataError(f"{self.rec_path}: truncated record at byte {pos}")
                    magic, lrec = struct.unpack("<II", head)
                    if magic != MAGIC:
                        raise DataError(
                            f"{self.rec_path}: bad magic number at byte {pos}; "
                            "not a RecordIO file or corrupt"
                        )
                    length = lrec & _LEN_MASK
                    pos += 8 + ((length + 3) & ~3)
                    if lrec >> 29 in (0, 3):
                        break
                yield key, start
                key += 1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = -1
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor (it reopens on the next read)."""
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", -1) == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd = None

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    @property
    def keys(self) -> list[int]:
        """Record keys in index order."""
        return list(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def read_at(self, pos: int, limit: int | None = None) -> bytes:
        """The payload of the record at byte offset ``pos`` (parts joined).

        With ``limit`` only about the first ``limit`` bytes of a whole record are read.
        """
        fd = self._file()
        chunks: list[bytes] = []
        while True:
            head = os.pread(fd, 8, pos)
            if len(head) < 8:
                raise DataError(f"{self.rec_path}: truncated record at byte {pos}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(
                    f"{self.rec_path}: bad magic number at byte {pos} (corrupt "
                    "file or an index that does not belong to it)"
                )
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            n = length if (limit is None or cflag != 0) else min(length, limit)
            data = os.pread(fd, n, pos + 8)
            if len(data) < n:
                raise DataError(f"{self.rec_path}: record at byte {pos} is truncated")
            chunks.append(data)
            if cflag in (0, 3):
                break
            chunks.append(_MAGIC_BYTES)
            pos += 8 + ((length + 3) & ~3)
        return b"".join(chunks)

    def read(self, key: int) -> bytes:
        """The payload of record ``key``."""
        try:
            pos = self.index[key]
        except KeyError:
            raise DataError(f"{self.rec_path}: no record with key {key}") from None
        return self.read_at(pos)

    def read_header(self, key: int) -> IRHeader:
        """Only the ``IRHeader`` (and label array) of record ``key``."""
        pos = self.index[key]
        head = self.read_at(pos, limit=_IR_SIZE)
        flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        if flag > 0:
            head = self.read_at(pos, limit=_IR_SIZE + 4 * flag)
        return unpack_record(head)[0]


# ---------------------------------------------------------------------------------------------
# Face layout: writing


class FaceRecordWriter:
    """Writes the insightface face layout: header record 0, images, identity records.

    Add images grouped by identity (all of one label contiguously); :meth:`close` appends the
    identity records and fills in record 0.
    """

    _HEADER_PLACEHOLDER = IRHeader(2, np.zeros(2, np.float32), 0, 0)

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self._writer = RecordWriter(rec_path, idx_path)
        self._writer.write(0, pack_record(self._HEADER_PLACEHOLDER))
        self._ranges: list[tuple[int, int, int]] = []  # (label, first key, end key)
        self._next_key = 1
        self._seen: set[int] = set()

    @property
    def rec_path(self) -> Path:
        """Final path of the ``.rec`` file."""
        return self._writer.rec_path

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._writer.size

    @property
    def num_images(self) -> int:
        """Images written so far."""
        return self._next_key - 1

    def add(self, image: bytes, label: int) -> int:
        """Append one encoded image of class ``label``; returns its key."""
        label = int(label)
        if label < 0:
            raise ValueError(f"labels must be non-negative, got {label}")
        key = self._next_key
        if self._ranges and self._ranges[-1][0] == label:
            lab, first, _ = self._ranges[-1]
            self._ranges[-1] = (lab, first, key + 1)
        else:
            if label in self._seen:
                raise ValueError(f"images of label {label} must be added contiguously")
            self._seen.add(label)
            self._ranges.append((label, key, key + 1))
        self._writer.write(key, pack_record(IRHeader(0, float(label), key, 0), image))
        self._next_key += 1
        return key

    def close(self) -> None:
        """Write the identity records, fill in record 0 and move the files into place."""
        first_identity = self._next_key
        for i, (label, first, end) in enumerate(self._ranges):
            key = first_identity + i
            self._writer.write(
                key, pack_record(IRHeader(2, np.array([first, end], np.float32), label, 0))
            )
        end_identity = first_identity + len(self._ranges)
        self._writer.overwrite(
            0, pack_record(IRHeader(2, np.array([first_identity, end_identity], np.float32), 0, 0))
        )
        self._writer.close()

    def abort(self) -> None:
        """Discard everything written."""
        self._writer.abort()

    def __enter__(self) -> FaceRecordWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class PackResult:
    """What :func:`pack_folder` wrote."""

    rec_files: list[Path]
    label_map_path: Path
    num_images: int
    num_classes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total_bytes: int = 0


def shard_paths(prefix: str | Path, shard: int | None) -> tuple[Path, Path]:
    """``PREFIX.rec/.idx`` (``shard=None``) or ``PREFIX-00007.rec/.idx``."""
    prefix = Path(prefix)
    stem = prefix.name if shard is None else f"{prefix.name}-{shard:05d}"
    return prefix.with_name(stem + ".rec"), prefix.with_name(stem + ".idx")


def _encode_for_pack(data: bytes, source: str, quality: int | None) -> bytes:
    image = decode_image(data, source=source).pixels  # validates every image, also kept ones
    if quality is None and data[:3] == b"\xff\xd8\xff":
        return data
    return encode_jpeg(image, 95 if quality is None else quality)


def pack_folder(
    src: str | Path,
    out_prefix: str | Path,
    *,
    quality: int | None = None,
    shard_size_mb: float | None = None,
    min_images: int = 1,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> PackResult:
    """Convert ``src/<identity>/<image>`` folders to insightface RecordIO.

    JPEG files are stored as they are unless ``quality`` is given (then every image is
    re-encoded at that JPEG quality); other formats are encoded as JPEG (quality 95 by
    default). Unreadable images are skipped and listed in the result. With ``shard_size_mb``
    the output is split into ``PREFIX-NNNNN.rec/.idx`` files whose ``.rec`` holds at most that
    many megabytes (10**6 bytes, so also at most that many MiB).
    ``progress(done, total)`` is called as images are written.
    """
    if quality is not None and not 1 <= quality <= 100:
        raise DataError(f"JPEG quality must be in 1..100, got {quality}")
    if shard_size_mb is not None and shard_size_mb <= 0:
        raise DataError(f"shard size must be positive, got {shard_size_mb} MB")
    dataset = ImageFolderDataset(src, min_images=min_images)
    out_prefix = Path(out_prefix)
    limit = None if shard_size_mb is None else int(shard_size_mb * 1_000_000)
    label_map_path = dataset.label_map.save(out_prefix.with_name(out_prefix.name + ".labels.json"))
    result = PackResult([], label_map_path, 0, dataset.num_classes)
    total = len(dataset)

    def load(i: int) -> tuple[int, bytes | None, str]:
        try:
            data = dataset.read_bytes(i)
            return i, _encode_for_pack(data, dataset.source(i), quality), ""
        except OSError as exc:
            return i, None, f"cannot read ({exc.strerror or exc})"
        except ImageError as exc:
            return i, None, str(exc).split(": ", 1)[-1]

    shard = 0
    writer: FaceRecordWriter | None = None
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for done, (i, data, reason) in enumerate(pool.map(load, range(total)), 1):
                if data is None:
                    result.skipped.append((dataset.source(i), reason))
                else:
                    framed = len(data) + _IR_SIZE + 16
                    if (
                        writer is not None
                        and limit is not None
                        and writer.num_images
                        and (writer.size + framed + 64 * (len(writer._ranges) + 1) > limit)
                    ):
                        writer.close()
                        result.rec_files.append(writer.rec_path)
                        writer = None
                        shard += 1
                    if writer is None:
                        writer = FaceRecordWriter(
                            *shard_paths(out_prefix, shard if limit is not None else None)
                        )
                    writer.add(data, int(dataset.labels[i]))
                    result.num_images += 1
                if progress is not None:
                    progress(done, total)
        if writer is None:
            raise DataError(f"no readable images in {src}; nothing written")
        writer.close()
        result.rec_files.append(writer.rec_path)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    result.total_bytes = sum(p.stat().st_size for p in result.rec_files)
    return result


# ---------------------------------------------------------------------------------------------
# Face layout: reading

_SHARD_RE = re.compile(r"-(\d{5,})\.rec$")


def find_shards(prefix: str | Path) -> list[Path]:
    """``PREFIX.rec`` if it exists, else the sorted ``PREFIX-NNNNN.rec`` shards (maybe none)."""
    prefix = Path(prefix)
    single = prefix.with_name(prefix.name + ".rec")
    if single.is_file():
        return [single]
    parent = prefix.parent if str(prefix.parent) else Path(".")
    if not parent.is_dir():
        return []
    shards = []
    for p in parent.glob(f"{glob_escape(prefix.name)}-*.rec"):
        match = _SHARD_RE.search(p.name)
        if match and p.name[: match.start()] == prefix.name:
            shards.append(p)
    return sorted(shards)


def glob_escape(text: str) -> str:
    """Escape glob metacharacters."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _resolve_rec_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    sources = [source] if isinstance(source, str | Path) else list(source)
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.suffix.lower() == ".rec":
            files.append(p)
        elif p.suffix.lower() == ".idx":
            files.append(p.with_suffix(".rec"))
        elif p.is_dir() and (p / "train.rec").is_file():
            files.append(p / "train.rec")
        else:
            found = find_shards(p)
            if not found:
                raise DataError(
                    f"no RecordIO data at {p} (looked for {p}.rec and {p}-00000.rec ...)"
                )
            files.extend(found)
    for f in files:
        if not f.is_file():
            raise DataError(f"RecordIO file not found: {f}")
    return files


class RecordIODataset(FaceDataset):
    """Images and labels from one insightface ``.rec`` or a list of shards, as one data set.

    ``source`` is a ``.rec``/``.idx`` path, a prefix (``PREFIX.rec`` or ``PREFIX-NNNNN.rec``
    shards), a folder holding ``train.rec``, or a list of those. Labels are the class indices
    stored in the records. The label map is ``PREFIX.labels.json`` when present (written by
    :func:`pack_folder`), else ``label_map``, else numeric names.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        transform: Callable[[np.ndarray], Any] | None = None,
        label_map: LabelMap | None = None,
    ) -> None:
        self.rec_files = _resolve_rec_files(source)
        self.transform = transform
        self.readers = [RecordReader(f) for f in self.rec_files]
        #: Records left out because even their header could not be read (``file#key``).
        self.unreadable: list[str] = []
        shard_ids: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for s, reader in enumerate(self.readers):
            k, lab = self._index_shard(reader)
            keys.append(k)
            labels.append(lab)
            offsets.append(np.array([reader.index[int(x)] for x in k], dtype=np.int64))
            shard_ids.append(np.full(len(k), s, dtype=np.int32))
            reader.index = {}  # offsets are kept above; do not copy the dict into workers
        self._shard = np.concatenate(shard_ids)
        self._offset = np.concatenate(offsets)
        self._key = np.concatenate(keys)
        self.labels = np.concatenate(labels).astype(np.int64)
        if len(self.labels) == 0:
            raise DataError(f"no images in {', '.join(map(str, self.rec_files))}")
        if label_map is None:
            label_map = self._find_label_map()
        num = int(self.labels.max()) + 1
        if label_map is None:
            label_map = LabelMap.numeric(num)
        elif len(label_map) < num:
            raise DataError(
                f"label map has {len(label_map)} classes but the records use labels up to {num - 1}"
            )
        self.label_map = label_map

    def _find_label_map(self) -> LabelMap | None:
        first = self.rec_files[0]
        stem = _SHARD_RE.sub("", first.name)
        stem = stem[:-4] if stem.endswith(".rec") else stem
        candidate = first.with_name(stem + ".labels.json")
        return LabelMap.load(candidate) if candidate.is_file() else None

    def _index_shard(self, reader: RecordReader) -> tuple[np.ndarray, np.ndarray]:
        """Image keys and their labels, using the identity ranges when the file has them.

        Records whose header cannot be read are left out and listed in ``unreadable``.
        """

        def label_of(key: int) -> int:
            try:
                return _header_class(reader.read_header(key))
            except (DataError, KeyError, struct.error, ValueError):
                return -1

        if not reader.index:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        header0 = reader.read_header(0) if 0 in reader.index else None
        if header0 is not None and header0.flag > 0 and isinstance(header0.label, np.ndarray):
            first_id, end_id = int(header0.label[0]), int(header0.label[1])
            keys = np.arange(1, first_id, dtype=np.int64)
            keys = keys[[int(k) in reader.index for k in keys]] if len(keys) else keys
            labels = np.full(first_id, -2, dtype=np.int64)  # by key; -2 = not known yet
            if end_id > first_id and all(k in reader.index for k in range(first_id, end_id)):
                for k in range(first_id, end_id):
                    h = reader.read_header(k)
                    a, b = int(h.label[0]), int(h.label[1])
                    if not 1 <= a <= b <= first_id:
                        raise DataError(
                            f"{reader.rec_path}: identity record {k} has an "
                            f"image range [{a}, {b}) outside the images"
                        )
                    for key in range(a, b):  # the first readable header names the class
                        cls = label_of(key)
                        if cls >= 0:
                            labels[a:b] = cls
                            break
            labels = labels[keys]
            for i in np.flatnonzero(labels == -2):
                labels[i] = label_of(int(keys[i]))
        else:
            keys = np.array(sorted(reader.index), dtype=np.int64)
            labels = np.array([label_of(int(k)) for k in keys], dtype=np.int64)
        bad = labels < 0
        if bad.any():
            self.unreadable.extend(f"{reader.rec_path}#{int(k)}" for k in keys[bad])
        return keys[~bad], labels[~bad]

    def source(self, index: int) -> str:
        return f"{self.rec_files[self._shard[index]]}#{int(self._key[index])}"

    def read_bytes(self, index: int) -> bytes:
        record = self.readers[self._shard[index]].read_at(int(self._offset[index]))
        return unpack_record(record)[1]
