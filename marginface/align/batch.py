"""Batch alignment of a folder tree: worker processes, progress bar, failure CSV, resume.

Each source image ``SRC/a/b.jpg`` becomes ``DST/a/b.jpg`` (the selected face; with selection
``all`` every face as ``DST/a/b_0.jpg``, ``b_1.jpg``, ...). Files that cannot be aligned are
listed in ``DST/_failed.csv`` with the reason ``unreadable``, ``no face`` or ``too small``
instead of stopping the run. A rerun skips files whose crop (or failure entry) already exists,
so an interrupted run resumes; ``retry_failed`` tries the listed failures again.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from marginface.align.aligner import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCORE_THRESHOLD, Aligner
from marginface.align.image import ImageTooSmallError
from marginface.errors import ImageError, MarginfaceError

__all__ = [
    "FAILURES_FILENAME",
    "IMAGE_EXTENSIONS",
    "AlignJob",
    "BatchReport",
    "align_folder",
    "iter_images",
]

FAILURES_FILENAME = "_failed.csv"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
)


@dataclass(frozen=True)
class AlignJob:
    """Options shared by every worker."""

    detector: str = "yunet"
    detector_options: tuple[tuple[str, Any], ...] = ()
    template: str = "arcface_112x112"
    selection: str = "largest"
    min_face_size: float = DEFAULT_MIN_FACE_SIZE
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    image_format: str = "jpg"  # jpg or png
    jpeg_quality: int = 95


@dataclass
class BatchReport:
    """Counts of one run and where the failures were written."""

    total: int = 0
    aligned: int = 0
    faces: int = 0
    skipped: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failures_csv: Path | None = None


def iter_images(root: Path) -> Iterator[Path]:
    """Image files under ``root`` (by extension, hidden entries skipped), sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def _outputs(dst: Path, rel: Path, job: AlignJob, count: int | None = None) -> list[Path]:
    ext = ".png" if job.image_format == "png" else ".jpg"
    base = dst / rel.parent / rel.stem
    if job.selection == "all":
        return [Path(f"{base}_{i}{ext}") for i in range(count if count is not None else 1)]
    return [Path(f"{base}{ext}")]


def _atomic_write_image(path: Path, crop: np.ndarray, job: AlignJob) -> None:
    from PIL import Image  # heavy: Pillow, loaded on first use

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if job.image_format == "png":
            Image.fromarray(crop).save(tmp, format="PNG")
        else:
            Image.fromarray(crop).save(tmp, format="JPEG", quality=job.jpeg_quality)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_aligner(job: AlignJob) -> Aligner:
    return Aligner.from_options(
        job.detector,
        dict(job.detector_options),
        template=job.template,
        selection=job.selection,
        min_face_size=job.min_face_size,
        score_threshold=job.score_threshold,
    )


# Per-process state of pool workers only (set by the pool initializer in each child process).
_WORKER: dict[str, Any] = {}


def _worker_init(job: AlignJob) -> None:
    import cv2  # heavy: cv2

    cv2.setNumThreads(1)  # the workers share the machine: one OpenCV thread each
    _WORKER["aligner"] = _make_aligner(job)
    _WORKER["job"] = job


def _worker_process(task: tuple[str, str, str]) -> tuple[str, str | None, int]:
    return _process(task, _WORKER["aligner"], _WORKER["job"])


def _process(
    task: tuple[str, str, str], aligner: Aligner, job: AlignJob
) -> tuple[str, str | None, int]:
    """Align one file; returns (relative path, failure reason or None, faces written)."""
    src, rel, dst = task
    try:
        result = aligner.align(Path(src))
    except ImageTooSmallError:
        return rel, "too small", 0
    except ImageError:
        return rel, "unreadable", 0
    except MarginfaceError as exc:
        return rel, f"error: {exc}", 0
    if result.reason:
        return rel, result.reason, 0
    paths = _outputs(Path(dst), Path(rel), job, len(result.crops))
    for path, crop in zip(paths, result.crops, strict=True):
        _atomic_write_image(path, crop, job)
    return rel, None, len(paths)


def _read_failures(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row["reason"] for row in csv.DictReader(fh) if row.get("file")}


def _write_failures(path: Path, failures: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".failed-", suffix=".csv", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "reason"])
        for name in sorted(failures):
            writer.writerow([name, failures[name]])
    os.replace(tmp, path)


def align_folder(
    src: str | Path,
    dst: str | Path,
    job: AlignJob | None = None,
    *,
    workers: int = 1,
    failures_csv: str | Path | None = None,
    retry_failed: bool = False,
    progress: bool | Callable[[int, int], None] = True,
) -> BatchReport:
    """Align every image under ``src`` into ``dst``; see the module docstring.

    ``workers`` > 1 uses that many processes. ``progress`` shows a tqdm bar (or is a callback
    ``(done, total)``).
    """
    src, dst = Path(src), Path(dst)
    job = job or AlignJob()
    if not src.is_dir():
        raise ImageError(f"source folder not found: {src}")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ImageError("the destination must not be inside the source folder")
    dst.mkdir(parents=True, exist_ok=True)
    csv_path = Path(failures_csv) if failures_csv else dst / FAILURES_FILENAME
    previous = _read_failures(csv_path)
    failures = {} if retry_failed else dict(previous)

    report = BatchReport(failures_csv=csv_path)
    tasks: list[tuple[str, str, str]] = []
    for path in iter_images(src):
        rel = path.relative_to(src).as_posix()
        report.total += 1
        done = _outputs(dst, Path(rel), job)[0].exists()
        if done or (rel in failures):
            report.skipped += 1
            continue
        tasks.append((str(path), rel, str(dst)))

    bar = None
    if progress is True and tasks:
        bar = tqdm(total=len(tasks), unit="img", desc="aligning", dynamic_ncols=True)

    def record(rel: str, reason: str | None, n: int, count: int) -> None:
        if reason is None:
            report.aligned += 1
            report.faces += n
            failures.pop(rel, None)
        else:
            failures[rel] = reason
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(count, len(tasks))

    try:
        if workers <= 1 or len(tasks) < 2:
            aligner = _make_aligner(job)
            for i, task in enumerate(tasks, 1):
                record(*_process(task, aligner, job), i)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(job,)
            ) as pool:
                chunk = max(1, min(32, len(tasks) // (workers * 8) or 1))
                for i, res in enumerate(pool.map(_worker_process, tasks, chunksize=chunk), 1):
                    record(*res, i)
    finally:
        if bar is not None:
            bar.close()
        _write_failures(csv_path, failures)
    report.failed = sum(1 for t in tasks if t[1] in failures)
    return report
