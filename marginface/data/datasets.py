"""Labelled face data sets: identity folders, CSV lists, and the shared loading contract.

Every data set here is a :class:`FaceDataset`: ``dataset[i]`` is ``(image, label)`` where
``image`` is what the transform returns (an RGB ``uint8`` array when there is none) and
``label`` an ``int`` class index. ``dataset.labels`` holds every sample's label without
decoding any image (samplers use it), and ``dataset.label_map`` maps indices to identity names.

**Corrupt images never stop a run.** When a sample cannot be read or decoded, ``dataset[i]``
returns a :class:`SkippedSample` instead of raising. :func:`collate_faces` drops those from the
batch and carries them in :attr:`FaceBatch.skipped`; the training loop feeds each batch to a
:class:`SkipCounter` in the main process and prints :meth:`SkipCounter.summary` at the end. The
record travels with the batch, so the count is exact with any number of worker processes and
needs no shared state.

**One loading path for training and tests.** :func:`make_loader` builds every training
DataLoader. The trainer reads a data set through :class:`SeededSamples` with
:class:`~marginface.data.samplers.SeededBatches`: each sample is asked for by an
``(index, epoch, seed)`` key and augmented by :class:`~marginface.data.augment.FaceTransform`
from those integers alone. :class:`ArrayDataset` holds images already in memory (the demo, the
plots, tests).
"""

from __future__ import annotations

import csv
import json
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from marginface.data.augment import FaceTransform
from marginface.data.images import decode_image, is_image_file
from marginface.errors import DataError, ImageError

__all__ = [
    "ArrayDataset",
    "CsvListDataset",
    "FaceBatch",
    "FaceDataset",
    "ImageFolderDataset",
    "LabelMap",
    "SeededSamples",
    "SkipCounter",
    "SkippedSample",
    "collate_faces",
    "make_loader",
    "worker_init",
]

LABEL_MAP_FORMAT = "marginface-labels/1"


class LabelMap:
    """Class index <-> identity name. Saved as JSON: ``{"format": ..., "classes": [names]}``."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names: list[str] = [str(n) for n in names]
        self._index = {name: i for i, name in enumerate(self.names)}
        if len(self._index) != len(self.names):
            counts: dict[str, int] = {}
            for n in self.names:
                counts[n] = counts.get(n, 0) + 1
            dup = next(n for n, c in counts.items() if c > 1)
            raise DataError(f"label map has a duplicate identity name {dup!r}")

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other.names == self.names

    def __repr__(self) -> str:
        return f"LabelMap({len(self)} classes)"

    def index(self, name: str) -> int:
        """Class index of identity ``name``; :class:`DataError` when unknown."""
        try:
            return self._index[name]
        except KeyError:
            raise DataError(f"identity {name!r} is not in the label map") from None

    def name(self, index: int) -> str:
        """Identity name of class ``index``."""
        return self.names[index]

    def save(self, path: str | Path) -> Path:
        """Write the map as JSON (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(
            json.dumps(
                {"format": LABEL_MAP_FORMAT, "classes": self.names}, ensure_ascii=False, indent=0
            )
            + "\n",
            encoding="utf-8",
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read a map written by :meth:`save`; :class:`DataError` when missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"label map not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: label map is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise DataError(f"{path}: label map must be an object with a 'classes' list")
        return cls(data["classes"])

    @classmethod
    def numeric(cls, num_classes: int) -> LabelMap:
        """``"0" .. str(num_classes - 1)``: for data sets labelled by number only."""
        return cls(str(i) for i in range(num_classes))


@dataclass(frozen=True)
class SkippedSample:
    """Returned by ``dataset[i]`` in place of a sample that could not be loaded."""

    index: int
    source: str
    reason: str


@dataclass
class FaceBatch:
    """A collated batch: ``images`` ``(B, ...)``, ``labels`` ``(B,)`` int64, and what was dropped.

    ``B`` may be smaller than the sampler's batch (corrupt samples dropped), even 0; the
    sampler asked for ``len(batch) + len(batch.skipped)`` samples. ``indices`` ``(B,)`` holds
    each sample's data set index when the samples carry it (:class:`SeededSamples` with
    ``with_index``), else None.
    """

    images: Any
    labels: Any
    skipped: list[SkippedSample] = field(default_factory=list)
    indices: Any = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __iter__(self) -> Any:  # allows ``images, labels = batch``
        return iter((self.images, self.labels))

    def pin_memory(self) -> FaceBatch:
        """Page-lock the tensors (called by DataLoader with ``pin_memory=True``)."""
        return FaceBatch(
            self.images.pin_memory(),
            self.labels.pin_memory(),
            self.skipped,
            None if self.indices is None else self.indices.pin_memory(),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FaceBatch:
        """Move the tensors to ``device``."""
        return FaceBatch(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.skipped,
            None if self.indices is None else self.indices.to(device, non_blocking=non_blocking),
        )


def collate_faces(batch: Sequence[tuple[Any, ...] | SkippedSample]) -> FaceBatch:
    """DataLoader ``collate_fn``: stack the good samples, keep the skipped ones aside.

    Samples are ``(image, label)`` or ``(image, label, index)``; the indices go to
    :attr:`FaceBatch.indices`.
    """
    good = [b for b in batch if not isinstance(b, SkippedSample)]
    skipped = [b for b in batch if isinstance(b, SkippedSample)]
    if not good:
        return FaceBatch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    columns = default_collate(good)
    indices = columns[2].long() if len(columns) > 2 else None
    return FaceBatch(columns[0], columns[1].long(), skipped, indices)


class SkipCounter:
    """Counts samples dropped because they could not be read; lives in the main process."""

    def __init__(self, max_examples: int = 20) -> None:
        self.total = 0
        self.max_examples = max_examples
        self.examples: list[SkippedSample] = []
        self.sources: set[str] = set()

    def update(self, batch: FaceBatch | Iterable[SkippedSample]) -> int:
        """Record the skipped samples of ``batch``; returns how many it had."""
        skipped = batch.skipped if isinstance(batch, FaceBatch) else list(batch)
        for s in skipped:
            self.total += 1
            if s.source not in self.sources:
                self.sources.add(s.source)
                if len(self.examples) < self.max_examples:
                    self.examples.append(s)
        return len(skipped)

    @property
    def unique(self) -> int:
        """Number of distinct files that failed."""
        return len(self.sources)

    def summary(self) -> str:
        """A short human-readable report (empty string when nothing was skipped)."""
        if not self.total:
            return ""
        lines = [f"skipped {self.total} unreadable samples ({self.unique} distinct files)"]
        lines += [f"  {s.source}: {s.reason}" for s in self.examples]
        if self.unique > len(self.examples):
            lines.append(f"  ... and {self.unique - len(self.examples)} more")
        return "\n".join(lines)


class FaceDataset(Dataset[tuple[Any, int] | SkippedSample]):
    """Base class: subclasses set ``labels``/``label_map``, implement ``read_bytes``/``source``.

    Subclasses must stay cheap to pickle (DataLoader workers receive a copy) and must not hold
    open file handles across pickling.
    """

    labels: np.ndarray
    label_map: LabelMap
    transform: Callable[[np.ndarray], Any] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (identities) in the label space."""
        return len(self.label_map)

    def class_counts(self) -> np.ndarray:
        """Images per class, ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def read_bytes(self, index: int) -> bytes:
        """The encoded image of sample ``index``."""
        raise NotImplementedError

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from (a path or ``file.rec#key``), for messages."""
        raise NotImplementedError

    def load_image(self, index: int) -> np.ndarray:
        """Decode sample ``index`` to RGB ``uint8``; :class:`ImageError` when it cannot."""
        try:
            data = self.read_bytes(index)
        except OSError as exc:
            raise ImageError(f"{self.source(index)}: cannot read ({exc.strerror or exc})") from None
        return decode_image(data, source=self.source(index)).pixels

    def load_or_skip(self, index: int) -> np.ndarray | SkippedSample:
        """:meth:`load_image`, or the :class:`SkippedSample` that stands for an unreadable one."""
        try:
            return self.load_image(index)
        except (ImageError, DataError) as exc:
            return SkippedSample(index, self.source(index), str(exc).split(": ", 1)[-1])

    def __getitem__(self, index: int) -> tuple[Any, int] | SkippedSample:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        image = self.load_or_skip(index)
        if isinstance(image, SkippedSample):
            return image
        x = self.transform(image) if self.transform is not None else image
        return x, int(self.labels[index])


class SeededSamples(Dataset[tuple[Any, ...] | SkippedSample]):
    """A data set read by ``(index, epoch, seed)`` keys, as :class:`SeededBatches` yields them.

    Each sample's augmentation is drawn from ``(seed, epoch, index)`` alone, so it does not
    depend on which worker loads it, on the number of ranks, or on a resume in mid-epoch.
    Samples are ``(tensor, label)``, or ``(tensor, label, index)`` with ``with_index`` (the
    distillation term looks the teacher's row up by index); unreadable ones are
    :class:`SkippedSample`. Cheap to pickle: workers get a copy.
    """

    def __init__(
        self, dataset: FaceDataset, transform: FaceTransform, *, with_index: bool = False
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Any, ...] | SkippedSample:
        index, epoch, seed = (int(k) for k in key)
        image = self.dataset.load_or_skip(index)
        if isinstance(image, SkippedSample):
            return image
        x = self.transform(image, (seed, epoch, index))
        label = int(self.dataset.labels[index])
        return (x, label, index) if self.with_index else (x, label)


class ArrayDataset(FaceDataset):
    """Images already in memory: ``(N, H, W, 3)`` uint8 RGB (or ``(N, H, W)`` grey) and labels.

    For small sets decoded by their owner (the demo, the plots) and for tests: the trainer reads
    it like any other :class:`FaceDataset` (``Trainer(cfg, dataset=...)``). ``label_map``
    defaults to numbered classes ``0 .. max(labels)``; give one to keep classes that have no
    image here (a held-out split).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        label_map: LabelMap | None = None,
        name: str = "arrays",
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        images = np.asarray(images)
        if (
            images.dtype != np.uint8
            or images.ndim not in (3, 4)
            or (images.ndim == 4 and images.shape[-1] != 3)
        ):
            raise DataError(
                f"{name}: images must be uint8 (N, H, W, 3) or (N, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(images) or not len(labels):
            raise DataError(f"{name}: {len(images)} images and {len(labels)} labels")
        if labels.min() < 0:
            raise DataError(f"{name}: negative label {int(labels.min())}")
        self.images = images
        self.labels = labels
        self.label_map = label_map or LabelMap.numeric(int(labels.max()) + 1)
        if int(labels.max()) >= len(self.label_map):
            raise DataError(
                f"{name}: label {int(labels.max())} is not in the label map of "
                f"{len(self.label_map)} classes"
            )
        self.name = name
        self.transform = transform

    def source(self, index: int) -> str:
        return f"{self.name}#{index}"

    def load_image(self, index: int) -> np.ndarray:
        return self.images[index]


def _check_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{what} not found: {root}")
    if not root.is_dir():
        raise DataError(f"{what} is not a folder: {root}")


class ImageFolderDataset(FaceDataset):
    """``root/<identity>/<image>``: one sub-folder per identity, sorted by name.

    Hidden entries and files directly in ``root`` are ignored; identity folders with fewer than
    ``min_images`` images are left out. With ``label_map`` the class indices are taken from it
    (every identity must be in it); otherwise identities are numbered in sorted order.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[np.ndarray], Any] | None = None,
        label_map: LabelMap | None = None,
        min_images: int = 1,
    ) -> None:
        self.root = Path(root)
        _check_dir(self.root, "data folder")
        self.transform = transform
        identities: list[tuple[str, list[str]]] = []
        loose_images = 0
        with os.scandir(self.root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                with os.scandir(entry.path) as sub:
                    files = sorted(e.name for e in sub if e.is_file() and is_image_file(e.name))
                if len(files) >= max(min_images, 1):
                    identities.append((entry.name, files))
            elif is_image_file(entry.name):
                loose_images += 1
        if not identities:
            hint = (
                (f" (found {loose_images} images directly in it: expected root/<identity>/<image>)")
                if loose_images
                else ""
            )
            raise DataError(f"no identity folders with images in {self.root}{hint}")
        if label_map is None:
            label_map = LabelMap(name for name, _ in identities)
        else:
            missing = [name for name, _ in identities if name not in label_map]
            if missing:
                raise DataError(
                    f"{len(missing)} identities in {self.root} are not in the label "
                    f"map, e.g. {missing[:5]}"
                )
        self.label_map = label_map
        paths: list[str] = []
        labels: list[int] = []
        for name, files in identities:
            cls = label_map.index(name)
            for f in files:
                paths.append(f"{name}/{f}")
                labels.append(cls)
        # Byte-string arrays rather than Python lists: no copy-on-access in forked workers.
        self._paths = np.array([p.encode("utf-8", "surrogateescape") for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)

    def path(self, index: int) -> Path:
        """Absolute path of sample ``index``."""
        return self.root / self._paths[index].decode("utf-8", "surrogateescape")

    def source(self, index: int) -> str:
        return str(self.path(index))

    def read_bytes(self, index: int) -> bytes:
        return self.path(index).read_bytes()


class CsvListDataset(FaceDataset):
    """A CSV list of ``path,label`` rows (optional header ``path,label``; ``#`` comments).

    Relative paths are resolved against ``root`` (default: the CSV file's folder). Labels are
    identity names or non-negative integers. If every label is an integer and no ``label_map``
    is given, the integers are the class indices; otherwise names are numbered in sorted order
    (or looked up in ``label_map``). Malformed rows raise :class:`DataError` naming file and
    line. Missing image files are not checked up front: they are skipped when loaded.
    """

    def __init__(
        self,
        csv_path: str | Path,
        root: str | Path | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        label_map: LabelMap | None = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise DataError(f"label file not found: {self.csv_path}")
        self.root = Path(root) if root is not None else self.csv_path.parent
        self.transform = transform
        paths: list[str] = []
        raw: list[str] = []
        lines: list[int] = []
        try:
            with self.csv_path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                for row in reader:
                    line = reader.line_num
                    if not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
                        continue
                    if not paths and [c.strip().lower() for c in row] == ["path", "label"]:
                        continue
                    if len(row) != 2:
                        raise DataError(
                            f"{self.csv_path}:{line}: expected 2 columns "
                            f"'path,label', got {len(row)}: {','.join(row)!r}"
                        )
                    p, lab = row[0].strip(), row[1].strip()
                    if not p:
                        raise DataError(f"{self.csv_path}:{line}: empty path")
                    if not lab:
                        raise DataError(f"{self.csv_path}:{line}: empty label")
                    paths.append(p)
                    raw.append(lab)
                    lines.append(line)
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.csv_path}: not a UTF-8 text file ({exc.reason})") from None
        except csv.Error as exc:
            raise DataError(f"{self.csv_path}: malformed CSV ({exc})") from None
        if not paths:
            raise DataError(f"{self.csv_path}: no samples listed")

        if label_map is not None:
            labels = []
            for lab, line in zip(raw, lines, strict=True):
                if lab not in label_map:
                    raise DataError(
                        f"{self.csv_path}:{line}: label {lab!r} is not in the label map"
                    )
                labels.append(label_map.index(lab))
        elif all(_is_int(lab) for lab in raw):
            labels = [int(lab) for lab in raw]
            for value, line in zip(labels, lines, strict=True):
                if value < 0:
                    raise DataError(f"{self.csv_path}:{line}: negative label {value}")
            label_map = LabelMap.numeric(max(labels) + 1)
        else:
            label_map = LabelMap(sorted(set(raw)))
            labels = [label_map.index(lab) for lab in raw]
        self.label_map = label_map
        self._paths = np.array([p.encode("utf-8", "surrogateescape") for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)

    def path(self, index: int) -> Path:
        """Absolute path of sample ``index``."""
        p = Path(self._paths[index].decode("utf-8", "surrogateescape"))
        return p if p.is_absolute() else self.root / p

    def source(self, index: int) -> str:
        return str(self.path(index))

    def read_bytes(self, index: int) -> bytes:
        return self.path(index).read_bytes()


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (no oversubscription), and
    Ctrl-C left to the main process (the trainer finishes its step and checkpoints; elsewhere
    the main process's ``KeyboardInterrupt`` shuts the workers down).

    It deliberately leaves OpenCV's thread count alone: ``cv2.setNumThreads`` in a *forked*
    worker tries to join the parent's pool threads, which do not exist in the child, and can
    hang forever. (OpenCV's own operations are fork-safe.)
    """
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_loader(
    dataset: FaceDataset | SeededSamples,
    *,
    batch_size: int | None = None,
    sampler: Sampler[Any] | Iterable[Any] | None = None,
    batch_sampler: Sampler[list[Any]] | Iterable[list[Any]] | None = None,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    timeout: float = 0,
    multiprocessing_context: str | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A :class:`torch.utils.data.DataLoader` wired for face data (the trainer's too).

    Batches are :class:`FaceBatch` (unreadable samples dropped and reported via
    :func:`collate_faces`); workers decode in parallel with one torch thread each
    (:func:`worker_init`). Give ``batch_size`` (+ ``sampler``) or a ``batch_sampler`` such as
    :class:`~marginface.data.samplers.PKSampler` or, over :class:`SeededSamples`,
    :class:`~marginface.data.samplers.SeededBatches`. ``multiprocessing_context="forkserver"``
    avoids forking a parent that already runs threads (slower worker start-up); ``timeout``
    (seconds) turns a stuck worker into an error instead of a silent stall; ``generator``
    (a seeded :class:`torch.Generator`) fixes the workers' base seed.
    """
    kwargs: dict[str, Any] = {"generator": generator}
    if num_workers > 0:
        kwargs["persistent_workers"] = bool(persistent_workers)
        kwargs["prefetch_factor"] = prefetch_factor or 2
        kwargs["worker_init_fn"] = worker_init
        kwargs["timeout"] = timeout
        kwargs["multiprocessing_context"] = multiprocessing_context
    if batch_sampler is not None:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate_faces,
            pin_memory=pin_memory,
            **kwargs,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size or 1,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=num_workers,
        collate_fn=collate_faces,
        pin_memory=pin_memory,
        drop_last=drop_last,
        **kwargs,
    )
