"""Evaluation plots (PNG, matplotlib's Agg backend): ROC, score histograms, CMC, FNIR/FPIR."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marginface.eval.metrics import roc

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "identification_plots",
    "plot_cmc",
    "plot_fnir_fpir",
    "plot_histogram",
    "plot_roc",
    "verification_plots",
]


def _figure(width: float = 6.0, height: float = 4.5) -> tuple[Figure, Axes]:
    import matplotlib  # optional: matplotlib (marginface[plots])

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # optional: matplotlib (marginface[plots])

    fig, ax = plt.subplots(figsize=(width, height), dpi=120)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt  # optional: matplotlib (marginface[plots])

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    tar_at_far: dict[str, float | None] | None = None,
    title: str = "ROC",
) -> Path:
    """ROC curves (TAR against FAR on a logarithmic axis) for one or more labelled score sets.

    ``curves`` maps a label to ``(scores, issame)``. Points of ``tar_at_far`` are marked.
    """
    fig, ax = _figure()
    lowest = 1.0
    for label, (scores, issame) in curves.items():
        c = roc(scores, issame)
        lowest = min(lowest, 1.0 / c.n_negative)
        keep = c.fpr > 0
        ax.step(c.fpr[keep], c.tpr[keep], where="post", label=label, linewidth=1.6)
    for key, tar in (tar_at_far or {}).items():
        if tar is not None:
            ax.plot([float(key)], [tar], "o", color="black", markersize=4)
            ax.annotate(
                f"{tar:.3f} @ {key}",
                (float(key), tar),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlim(max(lowest, 1e-6), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, Path(path))


def plot_histogram(
    scores: np.ndarray,
    issame: np.ndarray,
    path: str | Path,
    *,
    threshold: float | None = None,
    extra_thresholds: dict[str, float] | None = None,
    title: str = "similarity of same and different pairs",
) -> Path:
    """Histograms of cosine similarity for matched and mismatched pairs, thresholds drawn."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    fig, ax = _figure()
    # bin edges as a list: matplotlib's stubs type bins as a Sequence[float], not an array
    bins = np.linspace(min(-0.2, float(s.min())), 1.0, 81).tolist()
    ax.hist(
        s[~y],
        bins=bins,
        alpha=0.6,
        label=f"different ({(~y).sum()})",
        color="tab:red",
        density=True,
    )
    ax.hist(s[y], bins=bins, alpha=0.6, label=f"same ({y.sum()})", color="tab:blue", density=True)
    if threshold is not None:
        ax.axvline(
            threshold,
            color="black",
            linestyle="-",
            linewidth=1.4,
            label=f"threshold {threshold:.3f}",
        )
    styles = iter(["--", ":", "-."])
    for name, t in (extra_thresholds or {}).items():
        ax.axvline(
            t,
            color="gray",
            linestyle=next(styles, "--"),
            linewidth=1.0,
            label=f"FAR {name}: {t:.3f}",
        )
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def verification_plots(
    report: dict[str, Any], scores: np.ndarray, issame: np.ndarray, directory: str | Path
) -> dict[str, str]:
    """The ROC and histogram PNGs of a verification report; returns their paths."""
    directory = Path(directory)
    name = report.get("model", "model")
    roc_path = plot_roc(
        {f"{name} (AUC {report['auc']:.4f})": (scores, issame)},
        directory / "roc.png",
        tar_at_far=report.get("tar_at_far"),
        title=f"ROC - {Path(str(report.get('pairs', ''))).name}",
    )
    far_th = {k: v for k, v in report.get("tar_at_far_thresholds", {}).items() if v is not None}
    hist_path = plot_histogram(
        scores,
        issame,
        directory / "similarity_histogram.png",
        threshold=report.get("threshold"),
        extra_thresholds=far_th,
        title=f"{name}: accuracy {report['accuracy_mean']:.2f} ± {report['accuracy_std']:.2f} %",
    )
    return {"roc": str(roc_path), "histogram": str(hist_path)}


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path, *, title: str = "CMC") -> Path:
    """Cumulative match characteristic curves (identification rate against rank)."""
    fig, ax = _figure()
    for label, curve in curves.items():
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, curve, marker="o" if len(curve) <= 30 else None, markersize=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0.0, 1.01)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, Path(path))


def plot_fnir_fpir(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    points: dict[str, list[tuple[float, float | None, str | None]]] | None = None,
    title: str = "open-set identification",
) -> Path:
    """FNIR against FPIR (logarithmic FPIR axis), one curve per labelled gallery.

    ``curves`` maps a label to ``(fpir, fnir)`` swept over the threshold
    (:func:`marginface.eval.identify.fnir_fpir_curve`); ``points`` marks, per label, operating
    points ``(measured FPIR, FNIR, target FPIR)``, each target with its own marker.
    """
    fig, ax = _figure(7.0, 5.0)
    lowest, highest = 1.0, 0.0
    colours: dict[str, Any] = {}
    for label, (fpir, fnir) in curves.items():
        f, r = np.asarray(fpir, dtype=np.float64), np.asarray(fnir, dtype=np.float64)
        keep = f > 0
        if not keep.any():
            continue
        lowest = min(lowest, float(f[keep].min()))
        highest = max(highest, float(r[keep].max()))
        (line,) = ax.step(f[keep], r[keep], where="post", label=label, linewidth=1.4)
        colours[label] = line.get_color()
    markers = iter(["o", "s", "^", "D", "v"])
    marker_of: dict[str | None, str] = {}
    for label, marks in (points or {}).items():
        for fpir_value, fnir_value, target in marks:
            if fnir_value is None or fpir_value <= 0:
                continue
            if target not in marker_of:
                marker_of[target] = next(markers, "x")
                ax.plot(
                    [],
                    [],
                    marker_of[target],
                    color="black",
                    markersize=5,
                    label=f"operating point, target {target or 'given'}",
                )
            ax.plot(
                [fpir_value],
                [fnir_value],
                marker_of[target],
                color=colours.get(label, "black"),
                markeredgecolor="black",
                markersize=6,
            )
    for target in marker_of:
        if target:
            ax.axvline(float(target), color="gray", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(max(lowest, 1e-6), 1.0)
    ax.set_ylim(0.0, min(1.0, max(highest * 1.05, 0.05)))
    ax.set_xlabel("false positive identification rate (FPIR)")
    ax.set_ylabel("false negative identification rate (FNIR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, Path(path))


def identification_plots(
    curves: dict[str, Any], directory: str | Path, *, title: str = ""
) -> dict[str, str]:
    """``fnir_fpir.png`` and ``cmc.png`` of an identification run (the curves returned by
    :func:`marginface.eval.identification.identify_folder`); returns their paths."""
    directory = Path(directory)
    configs = curves["configs"]
    files: dict[str, str] = {}
    lines = {c["label"]: c["curve"] for c in configs if c["curve"] is not None}
    if lines:
        files["fnir_fpir"] = str(
            plot_fnir_fpir(
                lines,
                directory / "fnir_fpir.png",
                points={c["label"]: c["points"] for c in configs},
                title=f"FNIR vs FPIR, best face{f' - {title}' if title else ''}",
            )
        )
    cmcs = {c["label"]: c["cmc"] for c in configs if c["cmc"] is not None}
    if cmcs:
        files["cmc"] = str(
            plot_cmc(cmcs, directory / "cmc.png", title=f"CMC{f' - {title}' if title else ''}")
        )
    return files
