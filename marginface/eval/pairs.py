"""Verification pair sets: LFW ``pairs.txt``, CSV ``path1,path2,same`` and insightface ``.bin``.

Every reader returns a :class:`PairSet`: the unique images, each pair as two indices into
them, the matched/mismatched labels and each pair's fold for k-fold cross-validation.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginface.errors import DataError

__all__ = [
    "ImageRef",
    "PairSet",
    "balanced_folds",
    "contiguous_folds",
    "load_pairs",
    "read_bin_pairs",
    "read_csv_pairs",
    "read_lfw_pairs",
]

#: Number of folds used when a pairs file does not define its own (as in the LFW protocol).
DEFAULT_N_FOLDS = 10

_TRUE = {"1", "true", "yes", "same", "match", "matched", "genuine", "y", "t"}
_FALSE = {"0", "false", "no", "different", "diff", "mismatch", "mismatched", "impostor", "n", "f"}


@dataclass(frozen=True, eq=False)
class ImageRef:
    """One image of a pair set: a file on disk, or an image stored inside a ``.bin`` set
    (encoded bytes or a decoded RGB array).

    ``key`` identifies the image uniquely (an absolute path, or ``<bin path>#<index>``) and is
    what reports list and caches index.
    """

    key: str
    path: Path | None = None
    data: bytes | np.ndarray | None = None

    def __repr__(self) -> str:
        return f"ImageRef({self.key!r})"


@dataclass(frozen=True)
class PairSet:
    """Pairs of images with labels and folds, ready to be embedded and scored."""

    source: str
    format: str  # "lfw" | "csv" | "bin"
    images: list[ImageRef]
    left: np.ndarray  # (P,) indices into images
    right: np.ndarray  # (P,)
    issame: np.ndarray  # (P,) bool
    folds: np.ndarray  # (P,) int fold id
    folds_note: str  # how the folds were formed

    @property
    def n_pairs(self) -> int:
        return int(self.issame.size)

    @property
    def n_folds(self) -> int:
        return int(np.unique(self.folds).size)


def contiguous_folds(n_pairs: int, n_folds: int = DEFAULT_N_FOLDS) -> np.ndarray:
    """Fold ids for ``n_pairs`` pairs cut into ``n_folds`` contiguous blocks (insightface style)."""
    n_folds = max(1, min(n_folds, n_pairs))
    return (np.arange(n_pairs) * n_folds // max(n_pairs, 1)).astype(np.int64)


def balanced_folds(issame: np.ndarray, n_folds: int = DEFAULT_N_FOLDS) -> np.ndarray:
    """Fold ids that spread matched and mismatched pairs evenly, keeping the file's order."""
    y = np.asarray(issame, dtype=bool)
    folds = np.zeros(y.size, dtype=np.int64)
    for mask in (y, ~y):
        idx = np.flatnonzero(mask)
        folds[idx] = contiguous_folds(idx.size, n_folds) if idx.size else idx
    return folds


class _ImageTable:
    """Deduplicates images by key while pairs are read."""

    def __init__(self) -> None:
        self.refs: list[ImageRef] = []
        self.index: dict[str, int] = {}

    def add_path(self, path: Path) -> int:
        path = path.expanduser().resolve()
        key = str(path)
        if key not in self.index:
            self.index[key] = len(self.refs)
            self.refs.append(ImageRef(key=key, path=path))
        return self.index[key]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"pairs file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text pairs file ({exc.reason})") from None


def _image_number(path: Path, lineno: int, token: str) -> int:
    try:
        n = int(token)
    except ValueError:
        raise DataError(f"{path}:{lineno}: image number {token!r} is not an integer") from None
    if n < 0:
        raise DataError(f"{path}:{lineno}: image number {n} is negative")
    return n


def _check_images_exist(refs: list[ImageRef], source: Path, root: Path) -> None:
    """A wrong root makes every image missing: say so at once instead of failing them all."""
    paths = [r.path for r in refs if r.path is not None]
    if not paths:
        return
    sample = paths[:: max(1, len(paths) // 50)]
    if any(p.is_file() for p in sample) or any(p.is_file() for p in paths):
        return
    raise DataError(
        f"{source}: none of its {len(paths)} images exist under {root} "
        f"(e.g. {paths[0]}); check --root"
    )


def read_lfw_pairs(path: str | Path, root: str | Path, ext: str = ".jpg") -> PairSet:
    """Read an LFW-format ``pairs.txt``.

    The header is ``<folds> <pairs per fold>`` (each fold: that many matched lines, then that
    many mismatched lines; folds are identity-disjoint and used as given) or a single number
    ``n`` (n matched then n mismatched lines; folds are then assigned by
    :func:`balanced_folds`). A matched line is ``name n1 n2``, a mismatched line is
    ``name1 n1 name2 n2``; the image of ``name``, ``n`` is ``<root>/<name>/<name>_<n:04d>.jpg``.
    """
    path = Path(path)
    root = Path(root)
    lines = _read_text(path).splitlines()
    numbered = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise DataError(f"{path}: empty pairs file")
    head_no, head = numbered[0]
    try:
        header = [int(x) for x in head]
    except ValueError:
        raise DataError(
            f"{path}:{head_no}: header must be '<folds> <pairs per fold>' or '<pairs>', "
            f"got {' '.join(head)!r}"
        ) from None
    if len(header) == 2:
        n_folds, per_fold = header
        expected = 2 * n_folds * per_fold
    elif len(header) == 1:
        n_folds, per_fold = 1, header[0]
        expected = 2 * per_fold
    else:
        raise DataError(f"{path}:{head_no}: header must hold one or two numbers, got {len(header)}")
    if n_folds < 1 or per_fold < 1:
        raise DataError(f"{path}:{head_no}: header numbers must be positive, got {header}")

    table = _ImageTable()
    left: list[int] = []
    right: list[int] = []
    same: list[bool] = []

    def image(name: str, n: int) -> int:
        return table.add_path(root / name / f"{name}_{n:04d}{ext}")

    for lineno, fields in numbered[1:]:
        if len(fields) == 3:
            name, a, b = fields
            left.append(image(name, _image_number(path, lineno, a)))
            right.append(image(name, _image_number(path, lineno, b)))
            same.append(True)
        elif len(fields) == 4:
            n1, a, n2, b = fields
            left.append(image(n1, _image_number(path, lineno, a)))
            right.append(image(n2, _image_number(path, lineno, b)))
            same.append(False)
        else:
            raise DataError(
                f"{path}:{lineno}: expected 'name n1 n2' (matched) or 'name1 n1 name2 n2' "
                f"(mismatched), got {len(fields)} fields: {' '.join(fields)!r}"
            )
    if len(same) != expected:
        raise DataError(
            f"{path}: header promises {expected} pairs ({' x '.join(map(str, header))} "
            f"x 2), found {len(same)}"
        )
    issame = np.array(same, dtype=bool)
    if len(header) == 2:
        folds = np.arange(len(same), dtype=np.int64) // (2 * per_fold)
        note = f"{n_folds} folds as given by the pairs file (identity-disjoint in LFW-style files)"
    else:
        folds = balanced_folds(issame)
        note = (
            f"{int(np.unique(folds).size)} folds cut from the file's order (the single-number "
            "header defines none); they need not be identity-disjoint"
        )
    _check_images_exist(table.refs, path, root)
    return PairSet(
        source=str(path),
        format="lfw",
        images=table.refs,
        left=np.array(left, dtype=np.int64),
        right=np.array(right, dtype=np.int64),
        issame=issame,
        folds=folds,
        folds_note=note,
    )


def _parse_same(value: str) -> bool | None:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def read_csv_pairs(path: str | Path, root: str | Path | None = None) -> PairSet:
    """Read a CSV of ``path1,path2,same`` with an optional fourth column ``fold``.

    A header row is allowed (recognised when its ``same`` field is not a boolean). Relative
    paths are resolved against ``root`` (default: the CSV's folder). ``same`` accepts
    ``1/0``, ``true/false``, ``yes/no``, ``same/different``. Without a ``fold`` column the
    pairs are split into 10 folds by :func:`balanced_folds`.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    text = _read_text(path)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV ({exc})") from None
    numbered = [
        (i + 1, [c.strip() for c in r]) for i, r in enumerate(rows) if any(c.strip() for c in r)
    ]
    if not numbered:
        raise DataError(f"{path}: empty pairs file")
    _, first = numbered[0]
    looks_like_header = len(first) >= 3 and (
        first[2].lower() in {"same", "issame", "is_same", "label"} or _parse_same(first[2]) is None
    )
    if looks_like_header:
        header = [c.lower() for c in first]
        numbered = numbered[1:]
        has_fold = len(header) >= 4 and header[3] == "fold"
    else:
        has_fold = len(first) >= 4
    table = _ImageTable()
    left, right, same, folds = [], [], [], []
    for lineno, row in numbered:
        if len(row) not in (3, 4) or (len(row) == 4) != has_fold:
            want = "path1,path2,same,fold" if has_fold else "path1,path2,same"
            raise DataError(f"{path}:{lineno}: expected {want}, got {len(row)} fields")
        p1, p2, s = row[:3]
        if not p1 or not p2:
            raise DataError(f"{path}:{lineno}: empty image path")
        label = _parse_same(s)
        if label is None:
            raise DataError(f"{path}:{lineno}: 'same' must be 1/0 or true/false, got {s!r}")
        left.append(table.add_path(base / p1))
        right.append(table.add_path(base / p2))
        same.append(label)
        if has_fold:
            try:
                folds.append(int(row[3]))
            except ValueError:
                raise DataError(f"{path}:{lineno}: fold {row[3]!r} is not an integer") from None
    if not same:
        raise DataError(f"{path}: no pairs")
    issame = np.array(same, dtype=bool)
    if has_fold:
        fold_arr = np.array(folds, dtype=np.int64)
        note = f"{int(np.unique(fold_arr).size)} folds from the CSV's fold column"
    else:
        fold_arr = balanced_folds(issame)
        note = (
            f"{int(np.unique(fold_arr).size)} folds cut from the file's order (no fold column); "
            "they need not be identity-disjoint"
        )
    _check_images_exist(table.refs, path, base)
    return PairSet(
        source=str(path),
        format="csv",
        images=table.refs,
        left=np.array(left, dtype=np.int64),
        right=np.array(right, dtype=np.int64),
        issame=issame,
        folds=fold_arr,
        folds_note=note,
    )


def read_bin_pairs(path: str | Path) -> PairSet:
    """Read an insightface verification ``.bin`` (encoded images, consecutive pairs, issame).

    Images ``2i`` and ``2i + 1`` form pair ``i``. Folds are 10 contiguous blocks of pairs, as in
    insightface's evaluation (for its LFW ``.bin`` these are LFW's own folds).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"pairs file not found: {path}")
    images, issame_list = _load_bin(path)
    if len(images) != 2 * len(issame_list):
        raise DataError(
            f"{path}: {len(images)} images for {len(issame_list)} pairs (expected twice as many)"
        )
    refs = [ImageRef(key=f"{path}#{i}", data=im) for i, im in enumerate(images)]
    n = len(issame_list)
    issame = np.array([bool(x) for x in issame_list], dtype=bool)
    return PairSet(
        source=str(path),
        format="bin",
        images=refs,
        left=np.arange(0, 2 * n, 2, dtype=np.int64),
        right=np.arange(1, 2 * n, 2, dtype=np.int64),
        issame=issame,
        folds=contiguous_folds(n),
        folds_note="10 contiguous folds of the file's pairs (insightface's protocol)",
    )


def _load_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and decode a ``.bin`` with the data package's reader: (2P, H, W, 3) RGB, (P,)."""
    from marginface.data.verification import read_verification_bin  # heavy: torch

    vs = read_verification_bin(path)
    return vs.images, vs.issame


def load_pairs(path: str | Path, root: str | Path | None = None) -> PairSet:
    """Read any supported pairs file, chosen by extension: ``.bin``, ``.csv``, else LFW text."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return read_bin_pairs(path)
    if suffix == ".csv":
        return read_csv_pairs(path, root)
    if root is None:
        root = path.parent
    return read_lfw_pairs(path, root)
