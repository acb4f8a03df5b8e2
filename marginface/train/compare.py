"""The loss comparison: train several configs, evaluate each on the dev pairs, write the table.

Evaluation uses *pre-aligned dev crops* so that a GPU machine only runs the networks:

1. :func:`prepare_dev_crops` (``marginface train-dev-crops PAIRS OUT.npz``, on any CPU) reads
   a pairs file, detects and aligns every image exactly as ``marginface.eval`` does (YuNet,
   largest face, ArcFace template) and stores the crops, which images failed and the pairs
   (``left``, ``right``, ``issame``, ``folds``) in one compressed ``.npz``.
2. :func:`evaluate_crops` embeds those crops with any :class:`~marginface.embed.Embedder` and
   scores the pairs with ``marginface.eval``'s protocol (failed image: score -1; 10-fold
   accuracy; TAR at FAR): the same numbers as ``marginface eval verify`` on the raw photos.
3. :func:`run_comparison` (``marginface train-compare CONFIG... --dev-crops NPZ``) trains each
   config in turn in this process (a preloaded training set is decoded once and shared), loads
   each exported model through ``marginface.embed.load_embedder``, evaluates it, and rewrites
   ``results.json`` and ``table.md`` after every run, so a run cut short keeps its rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marginface.align.transform import template_size
from marginface.card import Preprocessing
from marginface.embed import Embedder, load_embedder
from marginface.errors import DataError, MarginfaceError
from marginface.eval.embeddings import EmbedOptions, prepare_crops
from marginface.eval.pairs import load_pairs
from marginface.eval.verify import pair_similarities, verification_metrics
from marginface.train.config import load_train_config
from marginface.train.trainer import Trainer

__all__ = [
    "CompareRow",
    "DevCrops",
    "evaluate_crops",
    "flag_ties",
    "load_dev_crops",
    "merge_results",
    "prepare_dev_crops",
    "render_table",
    "run_comparison",
    "table_from_results",
]

FARS = ("1e-2", "1e-3")


@dataclass
class DevCrops:
    """Aligned crops of a pair set's images, and the pairs."""

    crops: np.ndarray  # (N, H, W, 3) uint8 RGB
    ok: np.ndarray  # (N,) bool: False where no face was found or the image was unreadable
    reasons: dict[int, str]
    left: np.ndarray
    right: np.ndarray
    issame: np.ndarray
    folds: np.ndarray
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.issame)


def prepare_dev_crops(
    pairs: str | Path,
    out: str | Path,
    *,
    root: str | Path | None = None,
    detector: str = "yunet",
    selection: str = "largest",
    template: str = "arcface_112x112",
    workers: int | None = None,
    progress: bool = True,
) -> DevCrops:
    """Detect and align every image of ``pairs`` as ``marginface.eval`` does; save ``out``."""
    ps = load_pairs(pairs, root)
    pre = Preprocessing(template=template, input_size=template_size(template))
    options = EmbedOptions(aligned=False, flip=False, detector=detector, selection=selection)
    n = len(ps.images)
    t0 = time.perf_counter()

    def report(done: int, total: int) -> None:
        if progress and (done % 200 == 0 or done == total):
            print(f"dev crops: {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

    crops, reasons = prepare_crops(
        ps.images, pre, options, workers=workers or 2, on_progress=report
    )
    ok = np.ones(n, dtype=bool)
    ok[list(reasons)] = False
    names = [str(ref.key) for ref in ps.images]
    meta = {
        "format": "marginface-dev-crops/1",
        "pairs": str(pairs),
        "detector": detector,
        "selection": selection,
        "template": template,
        "options": options.key(),
        "n_images": n,
        "n_failed": len(reasons),
        "n_pairs": ps.n_pairs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    dc = DevCrops(
        crops,
        ok,
        reasons,
        np.asarray(ps.left),
        np.asarray(ps.right),
        np.asarray(ps.issame, dtype=bool),
        np.asarray(ps.folds),
        names,
        meta,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    blob, offsets = _encode_crops(crops)
    np.savez(
        tmp,
        crops_webp=blob,
        crops_offsets=offsets,
        crops_shape=np.array(crops.shape, dtype=np.int64),
        ok=ok,
        left=dc.left,
        right=dc.right,
        issame=dc.issame,
        folds=dc.folds,
        names=np.array(names),
        reasons=np.array(json.dumps({str(k): v for k, v in reasons.items()})),
        meta=np.array(json.dumps(meta)),
    )
    tmp.replace(out)
    return dc


def _encode_crops(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lossless WebP of every crop (about 13 KB each instead of 37 KB), checked to round-trip
    exactly (PNG where it would not)."""
    import cv2  # heavy: cv2

    parts, offsets = [], [0]
    for c in crops:
        bgr = np.ascontiguousarray(c[:, :, ::-1])
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])
        back = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if back is None or not np.array_equal(back, bgr):
            ok, buf = cv2.imencode(".png", bgr)
        parts.append(buf.ravel())
        offsets.append(offsets[-1] + len(buf))
    blob = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return blob.astype(np.uint8), np.asarray(offsets, dtype=np.int64)


def _decode_crops(blob: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2  # heavy: cv2

    crops = np.zeros(shape, dtype=np.uint8)
    for i in range(shape[0]):
        im = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)
        if im is None or im.shape != shape[1:]:
            raise DataError(f"dev crop {i} is corrupt")
        crops[i] = im[:, :, ::-1]
    return crops


def load_dev_crops(path: str | Path) -> DevCrops:
    """Read a file written by :func:`prepare_dev_crops`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"dev crops not found: {p} (write them with 'marginface train-dev-crops PAIRS OUT.npz')"
        )
    try:
        z = np.load(p, allow_pickle=False)
        crops = (
            z["crops"]
            if "crops" in z.files
            else _decode_crops(
                z["crops_webp"], z["crops_offsets"], tuple(int(x) for x in z["crops_shape"])
            )
        )
        return DevCrops(
            crops=crops,
            ok=z["ok"].astype(bool),
            reasons={int(k): v for k, v in json.loads(str(z["reasons"])).items()},
            left=z["left"],
            right=z["right"],
            issame=z["issame"].astype(bool),
            folds=z["folds"],
            names=[str(x) for x in z["names"]],
            meta=json.loads(str(z["meta"])),
        )
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{p} is not a dev-crops file: {exc}") from None


def evaluate_crops(
    embedder: Embedder, dev: DevCrops, *, flip: bool = False, batch_size: int = 128
) -> dict[str, Any]:
    """Score ``dev``'s pairs with ``embedder``: ``marginface.eval``'s verification metrics.

    Returns ``verification_metrics``' block (accuracies in %) plus ``scores`` (list) and
    ``n_failed_images``. Pairs touching a failed image score -1, as in ``eval verify``.
    """
    idx = np.flatnonzero(dev.ok)
    emb = np.zeros((len(dev.ok), int(embedder.embedding_dim)), dtype=np.float32)
    if len(idx):
        emb[idx] = embedder.embed(dev.crops[idx], flip=flip, batch_size=batch_size)
    scores, failed = pair_similarities(emb, dev.ok, dev.left, dev.right)
    metrics = verification_metrics(scores, dev.issame, dev.folds, FARS)
    metrics["n_failed_images"] = int((~dev.ok).sum())
    metrics["n_failed_pairs"] = int(failed.sum())
    metrics["flip"] = flip
    metrics["scores"] = [round(float(s), 6) for s in scores]
    return metrics


@dataclass
class CompareRow:
    """One trained configuration and its dev results."""

    name: str
    config: str
    loss: str
    seed: int
    status: str = "pending"  # pending | done | failed
    accuracy: float | None = None  # %, 10-fold mean
    std: float | None = None  # %, fold std
    tar_1e2: float | None = None
    tar_1e3: float | None = None
    epochs: float | None = None
    steps: int | None = None
    wall_seconds: float | None = None
    samples_per_second: float | None = None
    machine: str = ""
    output: str = ""
    error: str = ""
    ties: list[str] = field(default_factory=list)


@dataclass
class _Group:
    """The done runs of one configuration (one per seed)."""

    name: str
    rows: list[CompareRow]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.rows]

    def mean(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.rows if getattr(r, attr) is not None]
        return float(np.mean(vals)) if vals else None


def _groups(rows: list[CompareRow]) -> tuple[list[_Group], list[CompareRow]]:
    """Done rows grouped by configuration name (first appearance order), and the others."""
    groups: dict[str, _Group] = {}
    rest = []
    for r in rows:
        if r.status == "done" and r.accuracy is not None and r.std is not None:
            groups.setdefault(r.name, _Group(r.name, [])).rows.append(r)
        else:
            rest.append(r)
    return list(groups.values()), rest


def flag_ties(rows: list[CompareRow]) -> None:
    """Mark configurations whose accuracies are within each other's fold std.

    Runs of the same configuration name with different seeds are pooled: a configuration's
    accuracy and fold std are the means over its seeds. Two configurations ``a`` and ``b`` tie
    when ``|acc_a − acc_b| ≤ min(std_a, std_b)``; every run of each gets the other's name in
    ``ties``. A tie between single-seed rows "needs a second seed" before ranking them.
    """
    groups, _ = _groups(rows)
    for r in rows:
        r.ties = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            acc_a, acc_b = a.mean("accuracy"), b.mean("accuracy")
            std_a, std_b = a.mean("std"), b.mean("std")
            if abs(acc_a - acc_b) <= min(std_a, std_b):  # type: ignore[operator,type-var]
                for r in a.rows:
                    r.ties.append(b.name)
                for r in b.rows:
                    r.ties.append(a.name)


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def render_table(rows: list[CompareRow], *, title: str = "", notes: str = "") -> str:
    """The Markdown table, one line per configuration, best dev accuracy first.

    Runs of one configuration with several seeds share a line: accuracy, fold std, TARs and
    wall time are means over the seeds, and the ``seeds`` column lists each seed's accuracy.
    Rows are ranked by that mean; call :func:`flag_ties` first to get the notes on ties.
    """
    groups, rest = _groups(rows)
    groups.sort(key=lambda g: -(g.mean("accuracy") or 0.0))
    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines += [
        "| rank | loss | dev accuracy (%) | seeds | TAR@FAR=1e-2 | TAR@FAR=1e-3 | epochs | "
        "wall time (s) | machine | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k, g in enumerate(groups, 1):
        first = g.rows[0]
        ties = first.ties
        if not ties:
            note = ""
        elif len(g.rows) == 1:
            note = f"needs second seed (within fold std of {', '.join(ties)})"
        else:
            note = f"within fold std of {', '.join(ties)} over {len(g.rows)} seeds"
        seeds = (
            ", ".join(f"{r.seed}: {r.accuracy:.2f}" for r in g.rows)
            if len(g.rows) > 1
            else str(first.seed)
        )
        lines.append(
            f"| {k} | {g.name} | {g.mean('accuracy'):.2f} ± {g.mean('std'):.2f} | "
            f"{seeds} | {_fmt(g.mean('tar_1e2'), '.3f')} | "
            f"{_fmt(g.mean('tar_1e3'), '.3f')} | {_fmt(g.mean('epochs'), '.2f')} | "
            f"{_fmt(g.mean('wall_seconds'), '.0f')} | {first.machine or '–'} | {note} |"
        )
    for r in rest:
        note = f"{r.status}: {r.error}" if r.error else r.status
        lines.append(
            f"| – | {r.name} | – | {r.seed} | – | – | – | – | {r.machine or '–'} | {note} |"
        )
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def _notes(*headers: dict[str, Any]) -> str:
    """The line under a table: the dev set, the protocol and each run's overrides."""
    dev = headers[0].get("dev", {})
    flips = {h.get("flip", False) for h in headers}
    flip = "on" if flips == {True} else "off" if flips == {False} else "mixed"
    text = (
        f"Dev set: {dev.get('pairs', '')} ({dev.get('n_pairs', '?')} pairs, "
        f"{dev.get('n_failed', '?')} images without a detected face scored -1); 10-fold "
        f"accuracy mean ± fold std; flip TTA {flip}."
    )
    for h in headers:
        where = f" ({h['path']})" if "path" in h and len(headers) > 1 else ""
        text += f" Overrides{where}: {' '.join(h.get('overrides') or []) or 'none'}."
    return text


def table_from_results(paths: list[str | Path], *, title: str = "") -> str:
    """One Markdown table from several ``results.json`` files, seeds pooled per configuration."""
    rows, headers = merge_results(paths)
    flag_ties(rows)
    return render_table(rows, title=title, notes=_notes(*headers))


def merge_results(paths: list[str | Path]) -> tuple[list[CompareRow], list[dict[str, Any]]]:
    """Rows of several ``results.json`` files (e.g. a first pass and a second-seed rerun).

    A (name, seed) pair that appears twice keeps the later file's row when that one is done.
    Returns the rows and each file's header (everything but its rows).
    """
    fields = set(CompareRow.__dataclass_fields__)
    merged: dict[tuple[str, int], CompareRow] = {}
    headers = []
    for path in paths:
        p = Path(path)
        try:
            payload = json.loads(p.read_text(encoding="utf-8"))
            rows = [
                CompareRow(**{k: v for k, v in r.items() if k in fields}) for r in payload["rows"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{p} is not a train-compare results.json: {exc}") from None
        headers.append({k: v for k, v in payload.items() if k != "rows"} | {"path": str(p)})
        for r in rows:
            key = (r.name, r.seed)
            if key not in merged or r.status == "done" or merged[key].status != "done":
                merged[key] = r
    return list(merged.values()), headers


def _row_name(path: Path) -> str:
    stem = path.stem
    return stem[:-4] if stem.endswith("_mbf") else stem


def run_comparison(
    configs: list[str | Path],
    out_dir: str | Path,
    dev_crops: str | Path,
    *,
    overrides: list[str] | None = None,
    table: str | Path | None = None,
    flip: bool = False,
    title: str = "Loss comparison on celeba-dev",
    keep_going: bool = True,
    budget_s: float | None = None,
) -> list[CompareRow]:
    """Train each config (output ``out_dir/<config stem>``), evaluate, write the results.

    ``overrides`` (``key=value``) apply to every config, e.g. ``epochs=5`` or
    ``data.train=/tmp/mf-data/celeba``. Writes ``out_dir/results.json`` and
    ``out_dir/table.md`` (and ``table`` when given) after every run. A config that fails is
    recorded with its error and the others still run (unless ``keep_going`` is False).
    ``budget_s``: skip (status ``skipped``) a config that would probably end after this many
    seconds from the start, judged by the slowest run so far.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = load_dev_crops(dev_crops)
    paths = [Path(c) for c in configs]
    cfgs = []
    for p in paths:  # validate every config before training anything
        cfg = load_train_config(p, [*(overrides or []), f"output={out_dir / p.stem}"])
        cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"pairs": None})})
        cfgs.append(cfg)
    rows = [
        CompareRow(name=_row_name(p), config=str(p), loss=c.loss.name, seed=c.seed)
        for p, c in zip(paths, cfgs, strict=True)
    ]
    machine = ""  # the device of the latest run, as its trainer recorded it in the model card
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    preloaded = None

    def write() -> None:
        flag_ties(rows)
        payload = {
            "format": "marginface-compare/1",
            "started": started,
            "machine": machine,
            "dev_crops": str(dev_crops),
            "dev": dev.meta,
            "flip": flip,
            "overrides": overrides or [],
            "rows": [asdict(r) for r in rows],
        }
        (out_dir / "results.json").write_text(
            json.dumps(payload, indent=2) + "\n", encoding="utf-8"
        )
        text = render_table(rows, title=title, notes=_notes(payload))
        (out_dir / "table.md").write_text(text, encoding="utf-8")
        if table is not None:
            Path(table).parent.mkdir(parents=True, exist_ok=True)
            Path(table).write_text(text, encoding="utf-8")

    write()
    t_start = time.perf_counter()
    longest = 0.0
    for row, cfg in zip(rows, cfgs, strict=True):
        elapsed = time.perf_counter() - t_start
        if budget_s is not None and longest and elapsed + longest > budget_s:
            row.status, row.error = "skipped", f"time budget of {budget_s:.0f} s"
            print(
                f"== {row.name}: skipped ({elapsed:.0f} s used, the slowest run took "
                f"{longest:.0f} s, budget {budget_s:.0f} s)",
                flush=True,
            )
            write()
            continue
        print(
            f"== {row.name}: training ({row.config}; {elapsed:.0f} s into the comparison)",
            flush=True,
        )
        t_run = time.perf_counter()
        try:
            trainer = Trainer(cfg, preloaded=preloaded)
            result = trainer.run()
            preloaded = trainer.preloaded
            if result.interrupted:
                row.status, row.error = "failed", "interrupted"
                write()
                break
            embedder = load_embedder(cfg.output, runtime="torch")
            machine = str(embedder.card.training.get("device", ""))
            m = evaluate_crops(embedder, dev, flip=flip)
            (Path(cfg.output) / "dev_metrics.json").write_text(
                json.dumps(m, indent=2) + "\n", encoding="utf-8"
            )
            row.accuracy, row.std = m["accuracy_mean"], m["accuracy_std"]
            row.tar_1e2 = m["tar_at_far"].get("1e-2")
            row.tar_1e3 = m["tar_at_far"].get("1e-3")
            row.epochs = round(result.epochs_done, 3)
            row.steps = result.steps
            row.wall_seconds = round(result.seconds, 3)
            row.samples_per_second = round(result.samples_per_second, 1)
            row.machine = machine
            row.output = str(cfg.output)
            row.status = "done"
            print(
                f"== {row.name}: {row.accuracy:.2f} ± {row.std:.2f} %, TAR@FAR=1e-3 "
                f"{_fmt(row.tar_1e3, '.3f')}, {row.wall_seconds:.0f} s",
                flush=True,
            )
        except (MarginfaceError, RuntimeError, ValueError) as exc:
            row.status, row.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
            print(f"== {row.name}: FAILED {row.error}", flush=True)
            if not keep_going:
                write()
                raise
        longest = max(longest, time.perf_counter() - t_run)
        write()
    return rows
