"""Embedding the images of an evaluation: once per unique image, batched, parallel, cached.

Decoding, detection and alignment run in a thread pool (OpenCV, Pillow and onnxruntime release
the GIL); aligned crops are embedded in batches. Results, including "no face" failures, are
cached on disk in SQLite, keyed by the model (name + card fingerprint + weights file), the
preprocessing options, and each image's absolute path, modification time and size. A second run
over the same images only reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from marginface.align import Detector, Selection
from marginface.align.aligner import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCORE_THRESHOLD, Aligner
from marginface.align.transform import template_size
from marginface.card import Preprocessing
from marginface.embed import Embedder
from marginface.errors import ImageError, MarginfaceError
from marginface.eval.pairs import ImageRef
from marginface.imaging import read_image

__all__ = [
    "CACHE_ENV",
    "CropPreparer",
    "EmbedOptions",
    "EmbeddingCache",
    "ImageEmbeddings",
    "aligned_sizes",
    "default_cache_dir",
    "embed_images",
    "model_fingerprint",
    "prepare_crops",
]

#: Environment variable that moves the cache (default: ``$XDG_CACHE_HOME/marginface`` or
#: ``~/.cache/marginface``).
CACHE_ENV = "MARGINFACE_CACHE_DIR"

#: Card fields that do not change what a model computes (so calibrating keeps the cache).
_NON_COMPUTING_CARD_FIELDS = ("calibration", "impostors", "metrics", "notes", "license", "training")


def default_cache_dir() -> Path:
    """Where evaluation caches live: ``$MARGINFACE_CACHE_DIR``, else the user cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "marginface"


@dataclass(frozen=True)
class EmbedOptions:
    """How images become embeddings; every field is part of the cache key."""

    aligned: bool = False  # images are already aligned crops of the card's template size
    flip: bool = False  # add the mirror image's embedding, then normalise
    detector: str = "yunet"
    selection: str = "largest"  # which face of a multi-face photo: largest | central
    min_face_size: float | None = None  # None: the pipeline's default
    score_threshold: float | None = None  # None: the pipeline's default
    batch_size: int = 64

    def key(self) -> dict[str, Any]:
        d: dict[str, Any] = {"aligned": self.aligned, "flip": self.flip}
        if not self.aligned:
            d |= {"detector": self.detector, "selection": self.selection, **_aligner_limits(self)}
            if self.detector == "yunet":  # ONet refines the landmarks (its weights ship)
                d["refine_landmarks"] = True
        return d


def model_fingerprint(embedder: Embedder) -> str:
    """A string that changes whenever the model's outputs could change.

    It combines the model's name, a hash of its card (without calibration, metrics and other
    descriptive fields), the numeric precision when not fp32 and, when the embedder names its
    weights file, that file's size and modification time.
    """
    card = embedder.card
    data = card.model_dump(mode="json", exclude=set(_NON_COMPUTING_CARD_FIELDS))
    parts: list[str] = [str(getattr(embedder, "name", card.name)), json.dumps(data, sort_keys=True)]
    precision = getattr(embedder, "precision", "fp32")
    if precision != "fp32":  # fp32 keeps the keys written before precisions existed
        parts.append(f"precision={precision}")
    for attr in ("weights_path", "model_path", "path"):
        value = getattr(embedder, attr, None)
        if value:
            p = Path(value)
            if p.is_file():
                st = p.stat()
                parts.append(f"{p.resolve()}|{st.st_mtime_ns}|{st.st_size}")
            elif p.is_dir() and (p / card.weights).is_file():
                st = (p / card.weights).stat()
                parts.append(f"{(p / card.weights).resolve()}|{st.st_mtime_ns}|{st.st_size}")
            break
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{card.name}-{digest}"


def _image_key(ref: ImageRef) -> str | None:
    """The cache key of an image (None when the file cannot be stat-ed: it is not cached)."""
    if ref.data is not None:
        data = ref.data
        if isinstance(data, np.ndarray):
            data = f"{data.shape}{data.dtype}".encode() + np.ascontiguousarray(data).tobytes()
        return f"{ref.key}|sha1={hashlib.sha1(data).hexdigest()}"
    if ref.path is None:
        return None
    try:
        st = ref.path.stat()
    except OSError:
        return None
    return f"{ref.path.resolve()}|{st.st_mtime_ns}|{st.st_size}"


class EmbeddingCache:
    """A SQLite store of embeddings and failures, one namespace per model + options.

    Safe for several processes (SQLite locking); each batch is committed, so an interrupted run
    keeps what it computed.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / "embeddings.sqlite"

    def _connect(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60)
            con.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (namespace TEXT NOT NULL, "
                "image TEXT NOT NULL, vector BLOB, error TEXT, PRIMARY KEY (namespace, image))"
            )
        except (OSError, sqlite3.Error) as exc:
            raise MarginfaceError(
                f"cannot use the embedding cache at {self.path} ({exc}); "
                f"set {CACHE_ENV} or pass --cache-dir / --no-cache"
            ) from None
        return con

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray | str]:
        """Cached results for ``keys``: an embedding, or the failure reason string."""
        out: dict[str, np.ndarray | str] = {}
        con = self._connect()
        try:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT image, vector, error FROM embeddings WHERE namespace = ? "
                    f"AND image IN ({marks})",
                    [namespace, *chunk],
                )
                for image, vector, error in rows:
                    out[image] = (
                        error if error is not None else np.frombuffer(vector, dtype=np.float32)
                    )
        finally:
            con.close()
        return out

    def put(self, namespace: str, items: Sequence[tuple[str, np.ndarray | str]]) -> None:
        """Store embeddings (float32 vectors) or failure reasons (strings)."""
        if not items:
            return
        rows = [
            (namespace, key, None, value)
            if isinstance(value, str)
            else (namespace, key, np.ascontiguousarray(value, np.float32).tobytes(), None)
            for key, value in items
        ]
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
        finally:
            con.close()

    def clear(self, namespace: str | None = None) -> int:
        """Forget one namespace (or everything); returns the number of rows removed."""
        con = self._connect()
        try:
            with con:
                if namespace is None:
                    cur = con.execute("DELETE FROM embeddings")
                else:
                    cur = con.execute("DELETE FROM embeddings WHERE namespace = ?", (namespace,))
            return cur.rowcount
        finally:
            con.close()


@dataclass
class ImageEmbeddings:
    """Embeddings of a list of images; failed images have a zero row and a reason."""

    embeddings: np.ndarray  # (N, D) float32, L2-normalised; zeros where failed
    failures: dict[int, str] = field(default_factory=dict)  # image index -> reason
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(self.embeddings.shape[0], dtype=bool)
        mask[list(self.failures)] = False
        return mask


def aligned_sizes(preprocessing: Preprocessing) -> frozenset[tuple[int, int]]:
    """The sizes (height, width) an image may have to count as an aligned crop for a model with
    this (card's) ``preprocessing``: its template's crop size and its input size."""
    h, w = preprocessing.input_size
    return frozenset({template_size(preprocessing.template), (int(h), int(w))})


class CropPreparer:
    """Turns one image reference into an aligned crop of the model's input size, or a failure
    reason (a string).

    The one crop preparation of evaluation, training-time verification and ``train-dev-crops``.
    Photos go through the pipeline's :class:`~marginface.align.Aligner` (its score and size
    rules, ``options.selection``, the template of ``preprocessing``, a model card's); with
    ``options.aligned`` an image must already be a crop of one of :func:`aligned_sizes`. Crops
    are resized to ``preprocessing.input_size`` where the template's size differs, as the
    embedder would. ``detector`` is a :class:`~marginface.align.Detector` or, when None,
    ``options.detector`` by name. Calls are thread-safe.
    """

    def __init__(
        self, preprocessing: Preprocessing, options: EmbedOptions, detector: Detector | None = None
    ) -> None:
        pre = preprocessing
        h, w = pre.input_size
        self.size = (int(h), int(w))  # (height, width) of every crop returned
        self.sizes = aligned_sizes(pre)
        self.options = options
        self.aligner = None
        if not options.aligned:
            limits = _aligner_limits(options)
            self.aligner = Aligner(
                detector if detector is not None else options.detector,
                template=pre.template,
                selection=cast(Selection, options.selection),  # the Aligner checks the name
                min_face_size=limits["min_face_size"],
                score_threshold=limits["score_threshold"],
            )

    def __call__(self, ref: ImageRef) -> np.ndarray | str:
        src = ref.data if ref.data is not None else (ref.path or ref.key)
        try:
            if self.aligner is None:
                crop = read_image(src)
                if crop.shape[:2] not in self.sizes:
                    expected = " or ".join(f"{w}x{h}" for h, w in sorted(self.sizes))
                    return (
                        f"not an aligned crop: {crop.shape[1]}x{crop.shape[0]}, the model "
                        f"expects {expected} (drop --aligned to detect and align)"
                    )
            else:
                result = self.aligner.align(src)
                if not len(result.crops):
                    if result.n_too_small:
                        return "no face: every detected face is below the minimum face size"
                    return "no face found"
                crop = result.crops[0]
        except ImageError as exc:
            return f"unreadable: {_strip_source(str(exc), ref)}"
        except Exception as exc:  # a decoder or detector bug must not stop a whole evaluation
            return f"failed: {type(exc).__name__}: {exc}"
        if crop.shape[:2] == self.size:
            return crop
        # marginface.data's package import loads torch: only where a resize is needed
        from marginface.data.augment import resize_to

        return resize_to(crop, self.size)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def prepare_crops(
    images: Sequence[ImageRef],
    preprocessing: Preprocessing,
    options: EmbedOptions,
    *,
    detector: Detector | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """:class:`CropPreparer` over many images in a thread pool, kept in memory.

    Returns ``(crops, failures)``: ``(N, H, W, 3)`` uint8 RGB crops of the input size (zeros
    where an image failed) and ``{image index: reason}``. ``on_progress(done, total)`` is
    called after each image.
    """
    prepare = CropPreparer(preprocessing, options, detector)
    h, w = prepare.size
    crops = np.zeros((len(images), h, w, 3), dtype=np.uint8)
    failures: dict[int, str] = {}
    with ThreadPoolExecutor(
        max_workers=workers or _default_workers(), thread_name_prefix="mf-crops"
    ) as pool:
        for i, result in enumerate(pool.map(prepare, images)):
            if isinstance(result, str):
                failures[i] = result
            else:
                crops[i] = result
            if on_progress is not None:
                on_progress(i + 1, len(images))
    return crops, failures


def _aligner_limits(options: EmbedOptions) -> dict[str, float]:
    """min_face_size / score_threshold: the options' values, else the pipeline's defaults."""
    size, score = options.min_face_size, options.score_threshold
    return {
        "min_face_size": float(DEFAULT_MIN_FACE_SIZE if size is None else size),
        "score_threshold": float(DEFAULT_SCORE_THRESHOLD if score is None else score),
    }


def _strip_source(message: str, ref: ImageRef) -> str:
    """Image errors start with the file name; the report already lists it."""
    for prefix in (f"{ref.path}: ", f"{ref.key}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _progress(total: int, enabled: bool, desc: str) -> Any:
    return tqdm(
        total=total,
        unit="img",
        desc=desc,
        disable=not enabled or total == 0,
        dynamic_ncols=True,
        smoothing=0.1,
        leave=True,
    )


def embed_images(
    images: Sequence[ImageRef],
    embedder: Embedder,
    options: EmbedOptions | None = None,
    *,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    detector: Detector | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ImageEmbeddings:
    """Embed every image once: cached results are reused, the rest computed and cached.

    ``embedder`` follows the :class:`marginface.embed.Embedder` contract (``card``, ``name``,
    ``embedding_dim``, ``embed(crops, flip=, batch_size=)``). Unless ``options.aligned``, faces
    are found by the pipeline's :class:`marginface.align.aligner.Aligner` (``detector``, default
    ``options.detector``), selected by ``options.selection`` and aligned to the card's
    template, with the pipeline's size and score limits unless the options set them. An image
    that cannot be read, or shows no face, is recorded in ``failures`` with its reason and gets
    a zero embedding.
    """
    options = options or EmbedOptions()
    start = time.perf_counter()
    n = len(images)
    dim = int(embedder.embedding_dim)
    out = np.zeros((n, dim), dtype=np.float32)
    failures: dict[int, str] = {}
    namespace = hashlib.sha256(
        json.dumps([model_fingerprint(embedder), options.key()], sort_keys=True).encode()
    ).hexdigest()[:24]
    keys = [_image_key(r) for r in images]

    todo: list[int] = []
    n_cached = 0
    if cache is not None:
        found = cache.get(namespace, [k for k in keys if k is not None])
        for i, k in enumerate(keys):
            hit = found.get(k) if k is not None else None
            if isinstance(hit, str):
                failures[i] = hit
                n_cached += 1
            elif hit is not None and hit.shape == (dim,):
                out[i] = hit
                n_cached += 1
            else:
                todo.append(i)
    else:
        todo = list(range(n))

    if todo:
        prepare = CropPreparer(embedder.card.preprocessing, options, detector)
        workers = workers or _default_workers()
        batch = max(1, int(options.batch_size))
        bar = _progress(len(todo), progress, f"embedding ({getattr(embedder, 'name', '')})")
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mf-eval") as pool:
                # prepared crops stream in order; at most two batches are in flight, so
                # detection of the next batch overlaps with embedding of this one
                pending: deque[tuple[int, Future]] = deque()
                queue = iter(todo)

                def fill() -> None:
                    while len(pending) < 2 * batch:
                        i = next(queue, None)
                        if i is None:
                            return
                        pending.append((i, pool.submit(prepare, images[i])))

                fill()
                while pending:
                    chunk = [pending.popleft() for _ in range(min(batch, len(pending)))]
                    results = [(i, fut.result()) for i, fut in chunk]
                    fill()
                    new: list[tuple[str, np.ndarray | str]] = []
                    good = [(i, c) for i, c in results if not isinstance(c, str)]
                    for i, c in results:
                        if isinstance(c, str):
                            failures[i] = c
                            key = keys[i]
                            if key is not None:
                                new.append((key, c))
                    if good:
                        vectors = embedder.embed(
                            np.stack([c for _, c in good]), flip=options.flip, batch_size=batch
                        )
                        vectors = np.asarray(vectors, dtype=np.float32)
                        for (i, _), v in zip(good, vectors, strict=True):
                            out[i] = v
                            key = keys[i]
                            if key is not None:
                                new.append((key, v))
                    if cache is not None:
                        cache.put(namespace, new)
                    bar.update(len(chunk))
                    if on_batch is not None:
                        on_batch(len(chunk))
        finally:
            bar.close()
    return ImageEmbeddings(
        embeddings=out,
        failures=dict(sorted(failures.items())),
        n_cached=n_cached,
        n_computed=len(todo),
        seconds=time.perf_counter() - start,
    )
