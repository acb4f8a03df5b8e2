"""One function per ``marginface plot`` command: build the figure, save it, save the table."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from marginface.errors import ConfigError
from marginface.plots.data import FaceSubset, load_identities
from marginface.plots.features import (
    DEFAULT_LOSSES,
    FeatureRun,
    LossSpec,
    TrainSettings,
    cosface_sweep_specs,
    mean_summary,
    train_many,
    train_repeats,
)

__all__ = [
    "DataOptions",
    "plot_decision_boundaries",
    "plot_features",
    "plot_logit_curves",
    "plot_margin_sweep",
    "runs_table",
    "select_losses",
]


@dataclass(frozen=True)
class DataOptions:
    """Which faces to train on (see :func:`marginface.plots.data.load_identities`)."""

    source: str = "orl"
    data_root: str | None = None
    identities: int = 8
    per_identity: int = 30
    image_size: int = 32


def plot_logit_curves(out_dir: str | Path, fmt: str = "png") -> Path:
    """Write ``logit_curves.<fmt>``."""
    # matplotlib (heavy): imported when a figure is drawn
    from marginface.plots.figures import logit_curves_figure, save_figure

    return save_figure(logit_curves_figure(), Path(out_dir) / "logit_curves", fmt)


def plot_decision_boundaries(out_dir: str | Path, fmt: str = "png") -> Path:
    """Write ``decision_boundaries.<fmt>``."""
    # matplotlib (heavy): imported when a figure is drawn
    from marginface.plots.figures import boundaries_figure, save_figure

    return save_figure(boundaries_figure(), Path(out_dir) / "decision_boundaries", fmt, dpi=90)


def select_losses(names: Sequence[str] | None) -> list[LossSpec]:
    """The default specs for the given registry names (all six when ``names`` is empty)."""
    if not names:
        return list(DEFAULT_LOSSES)
    by_name = {spec.name: spec for spec in DEFAULT_LOSSES}
    chosen = []
    for name in names:
        key = name.strip().lower()
        if key not in by_name:
            raise ConfigError(
                f"unknown loss {name!r} for the features figure; choose from {', '.join(by_name)}"
            )
        chosen.append(by_name[key])
    return chosen


def runs_table(runs: Sequence[FeatureRun]) -> list[dict[str, Any]]:
    """One JSON-ready row per run."""
    return [run.summary() for run in runs]


def _write_json(
    path: Path,
    title: str,
    data: DataOptions,
    settings: TrainSettings,
    rows: Sequence[dict[str, Any]],
    names: Sequence[str],
    repeats: int = 1,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "figure": title,
        "angles": "degrees; intra = mean angle to the class centre, min_inter = smallest angle "
        "between class centres, gap = min over pairs of centre angle minus both "
        "classes' 95th-percentile intra angles",
        "sets": f"train: the photos trained on; held_out: the last {settings.holdout} photos of "
        "each identity, never trained on (null when none are held out); each set is measured "
        "with its own class centres",
        "repeats": f"{repeats} run(s) per loss with seeds {settings.seed}..."
        f"{settings.seed + repeats - 1}; train/held_out are means over them, per_seed each run",
        "data": {**asdict(data), "identities_used": list(names)},
        "training": asdict(settings),
        "runs": list(rows),
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _load(data: DataOptions) -> FaceSubset:
    return load_identities(
        data.source,
        data_root=data.data_root,
        num_identities=data.identities,
        per_identity=data.per_identity,
        image_size=data.image_size,
    )


def plot_features(
    out_dir: str | Path,
    fmt: str = "png",
    *,
    data: DataOptions = DataOptions(),
    settings: TrainSettings = TrainSettings(),
    losses: Sequence[str] | None = None,
    repeats: int = 3,
    workers: int = 1,
    progress: Callable[[str, int, float], None] | None = None,
) -> tuple[Path, Path, list[list[FeatureRun]]]:
    """Train ``repeats`` networks (seeds ``seed``, ``seed + 1``, …) per loss, draw the first
    seed's features, and write ``features.<fmt>`` and ``features.json`` (statistics on the
    training photos and on the held-out photos, averaged over the repeats and per seed)."""
    # matplotlib (heavy): imported when a figure is drawn
    from marginface.plots.figures import features_figure, save_figure

    subset = _load(data)
    grouped = train_repeats(
        subset, select_losses(losses), settings, repeats, workers=workers, progress=progress
    )
    first = [runs[0] for runs in grouped]
    held = "" if settings.holdout <= 0 else f", {settings.holdout} photos each held out (rings)"
    title = (
        f"{settings.dim}-d features of {subset.num_classes} identities ({subset.source}){held}, "
        f"one network per loss, seed {settings.seed}"
    )
    fig = features_figure(first, title=title, columns=3, held_out=first[0].held_out)
    image = save_figure(fig, Path(out_dir) / "features", fmt, dpi=80)
    rows = [mean_summary(runs) for runs in grouped]
    table = _write_json(
        Path(out_dir) / "features.json", title, data, settings, rows, subset.names, repeats
    )
    return image, table, grouped


def plot_margin_sweep(
    out_dir: str | Path,
    fmt: str = "png",
    *,
    data: DataOptions = DataOptions(),
    settings: TrainSettings = TrainSettings(dim=3, holdout=0),
    margins: Sequence[float] = (0.0, 0.1, 0.2, 0.35),
    scale: float = 16.0,
    workers: int = 1,
    progress: Callable[[str, int, float], None] | None = None,
) -> tuple[Path, Path, list[FeatureRun]]:
    """Train CosFace once per margin, write ``margin_sweep.<fmt>`` and ``margin_sweep.json``."""
    # matplotlib (heavy): imported when a figure is drawn
    from marginface.plots.figures import features_figure, save_figure

    if not margins:
        raise ConfigError("give at least one margin")
    if any(m < 0 for m in margins):
        raise ConfigError(f"margins must be non-negative, got {list(margins)}")
    specs = cosface_sweep_specs(margins, scale)
    subset = _load(data)
    runs = train_many(subset, specs, settings, workers=workers, progress=progress)
    title = (
        f"CosFace s={scale:g}, {settings.dim}-d features of {subset.num_classes} "
        f"identities ({subset.source}), seed {settings.seed}"
    )
    fig = features_figure(runs, title=title, columns=len(runs))
    image = save_figure(fig, Path(out_dir) / "margin_sweep", fmt, dpi=80)
    table = _write_json(
        Path(out_dir) / "margin_sweep.json", title, data, settings, runs_table(runs), subset.names
    )
    return image, table, runs
