"""Matplotlib figures: target-logit curves, decision regions and feature grids.

Figures are built on :class:`matplotlib.figure.Figure` (no pyplot, no global backend state) and
saved as PNG or SVG. SVG output uses a fixed hash salt and no date, so it is byte-for-byte
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.axes3d import Axes3D

from marginface.errors import ConfigError
from marginface.plots.curves import (
    BOUNDARY_HEADS,
    decision_regions_angles,
    decision_regions_plane,
    logit_curves,
    make_boundary_head,
)
from marginface.plots.features import FeatureRun

__all__ = [
    "FORMATS",
    "boundaries_figure",
    "features_figure",
    "logit_curves_figure",
    "save_figure",
]

FORMATS = ("png", "svg")
_REGION_COLOURS = ("#f2f2f2", "#9ecae1", "#fdae6b")  # margin, class 1, class 2


def save_figure(fig: Figure, path: str | Path, fmt: str = "png", dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (suffix set from ``fmt``) and return the path written."""
    import matplotlib  # optional: matplotlib (marginface[plots])

    if fmt not in FORMATS:
        raise ConfigError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(path).with_suffix(f".{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "marginface", "svg.fonttype": "none"}):
        fig.savefig(out, format=fmt, dpi=dpi, metadata=metadata, bbox_inches="tight")
    return out


def logit_curves_figure() -> Figure:
    """Target logit against θ for every head (left) and SphereFace's ψ over its full range."""
    theta, curves = logit_curves()
    fig = Figure(figsize=(11, 4.3))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    styles = ["-", ":", "-", "--", "-", "-", "-.", "-."]
    for (label, values), style in zip(curves.items(), styles, strict=True):
        ax.plot(theta, values, style, lw=1.8, label=label)
    ax.set_xlim(0, 180)
    ax.set_ylim(-1.6, 1.05)
    ax.set_xticks(range(0, 181, 30))
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("angle θ between feature and target weight (degrees)")
    ax.set_ylabel("target logit / s")
    ax.set_title("Target logit curves (from each head's target_logit)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    for label, values in curves.items():
        if label.startswith("SphereFace"):
            ax2.plot(theta, values, lw=1.8, label=label.split(":")[0])
    ax2.plot(theta, np.cos(np.radians(theta)), color="0.5", lw=1, ls=":", label="cos θ")
    for k in range(1, 4):
        ax2.axvline(45 * k, color="0.8", lw=0.6)
    ax2.set_xlim(0, 180)
    ax2.set_xticks(range(0, 181, 45))
    ax2.set_title("SphereFace ψ(θ) = (−1)ᵏcos(4θ) − 2k, full range")
    ax2.set_xlabel("θ (degrees)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


def boundaries_figure(separation_deg: float = 90.0) -> Figure:
    """Two-class decision regions, top row in (θ₁, θ₂), bottom row in the 2-d feature plane."""
    from matplotlib.colors import ListedColormap  # optional: matplotlib (marginface[plots])

    cmap = ListedColormap(_REGION_COLOURS)
    n = len(BOUNDARY_HEADS)
    fig = Figure(figsize=(3.0 * n, 6.2))
    axes = fig.subplots(2, n)
    for col, (title, name, kwargs) in enumerate(BOUNDARY_HEADS):
        head = make_boundary_head(name, kwargs, separation_deg)
        theta, regions = decision_regions_angles(head)
        ax = axes[0, col]
        ax.imshow(
            regions,
            origin="lower",
            extent=(0, 180, 0, 180),
            cmap=cmap,
            vmin=0,
            vmax=2,
            interpolation="nearest",
        )
        ax.contour(theta, theta, regions, levels=[0.5, 1.5], colors="k", linewidths=0.8)
        ax.plot([0, 180], [0, 180], color="0.4", lw=0.6, ls=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("θ₁ (°)", fontsize=8)
        if col == 0:
            ax.set_ylabel("θ₂ (°)", fontsize=8)
        ax.set_xticks([0, 90, 180])
        ax.set_yticks([0, 90, 180])
        ax.tick_params(labelsize=7)
        xs, ys, plane = decision_regions_plane(head)
        ax = axes[1, col]
        ext = (xs[0], xs[-1], ys[0], ys[-1])
        ax.imshow(
            plane, origin="lower", extent=ext, cmap=cmap, vmin=0, vmax=2, interpolation="nearest"
        )
        circle = np.linspace(0, 2 * math.pi, 200)
        ax.plot(np.cos(circle), np.sin(circle), color="0.5", lw=0.6)
        w = head.weight.detach().numpy()
        for j, colour in enumerate(("#08519c", "#a63603")):
            ax.annotate(
                "",
                xy=tuple(w[j]),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.6},
            )
            ax.text(*(w[j] * 1.12), f"W{j + 1}", color=colour, fontsize=8, ha="center")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].text(0.03, 0.97, "class 1", transform=axes[0, 0].transAxes, fontsize=7, va="top")
    axes[0, 0].text(0.97, 0.03, "class 2", transform=axes[0, 0].transAxes, fontsize=7, ha="right")
    fig.suptitle(
        "Two-class decision regions: blue = class 1 wins with its margin, orange = "
        "class 2, grey = margin region (neither)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps  # optional: matplotlib (marginface[plots])

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _circle_panel(ax: Axes, run: FeatureRun, colours: list, held_out: np.ndarray | None) -> None:
    f = run.normalised
    rng = np.random.default_rng(0)
    radius = 0.88 + 0.24 * rng.random(len(f))  # radial jitter only, for visibility
    circle = np.linspace(0, 2 * math.pi, 300)
    ax.plot(np.cos(circle), np.sin(circle), color="0.75", lw=0.6)
    for k, colour in enumerate(colours):
        sel = run.labels == k
        if held_out is not None:
            train = sel & (held_out == 0)
            test = sel & (held_out == 1)
            ax.scatter(
                f[train, 0] * radius[train], f[train, 1] * radius[train], s=9, color=colour, lw=0
            )
            ax.scatter(
                f[test, 0] * radius[test],
                f[test, 1] * radius[test],
                s=14,
                facecolors="none",
                edgecolors=[colour],
                lw=0.8,
            )
        else:
            ax.scatter(f[sel, 0] * radius[sel], f[sel, 1] * radius[sel], s=9, color=colour, lw=0)
        d = run.directions[k]
        ax.plot(
            [0, 1.3 * d[0]],
            [0, 1.3 * d[1]],
            color=colour,
            lw=1.1,
            ls="-" if run.directions_are_weights else "--",
        )
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _sphere_panel(ax: Axes3D, run: FeatureRun, colours: list) -> None:
    f = run.normalised[:, :3]
    u, v = np.mgrid[0 : 2 * np.pi : 24j, 0 : np.pi : 12j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)
    for k, colour in enumerate(colours):
        sel = run.labels == k
        ax.scatter(f[sel, 0], f[sel, 1], f[sel, 2], s=7, color=colour, depthshade=False)
        d = run.directions[k][:3] / max(np.linalg.norm(run.directions[k][:3]), 1e-12)
        ax.plot(
            [0, 1.35 * d[0]],
            [0, 1.35 * d[1]],
            [0, 1.35 * d[2]],
            color=colour,
            lw=1.1,
            ls="-" if run.directions_are_weights else "--",
        )
    ax.set_box_aspect((1, 1, 1), zoom=1.35)
    ax.view_init(elev=20, azim=35)
    ax.set_axis_off()


def features_figure(
    runs: Sequence[FeatureRun],
    *,
    title: str = "",
    columns: int = 3,
    held_out: np.ndarray | None = None,
) -> Figure:
    """One panel per run: normalised features on the circle (2-d) or sphere (3-d), with the
    class weight directions (solid) or, for metric losses, the class-centre directions (dashed).
    """
    if not runs:
        raise ConfigError("no feature runs to plot")
    dim = runs[0].features.shape[1]
    columns = max(1, min(columns, len(runs)))
    rows = math.ceil(len(runs) / columns)
    fig = Figure(figsize=(3.3 * columns, 3.8 * rows))
    colours = _palette(int(runs[0].labels.max()) + 1)
    for i, run in enumerate(runs):
        if dim >= 3:
            ax = fig.add_subplot(rows, columns, i + 1, projection="3d")
            _sphere_panel(ax, run, colours)
        else:
            ax = fig.add_subplot(rows, columns, i + 1)
            _circle_panel(ax, run, colours, held_out)
        s = run.stats
        lines = [
            run.spec.title,
            f"{'train: ' if run.held_out_stats else ''}intra {s.mean_intra_angle:.1f}°  "
            f"min inter {s.min_inter_angle:.1f}°  gap {s.angular_gap:.1f}°",
        ]
        if run.held_out_stats is not None:
            h = run.held_out_stats
            lines.append(
                f"held out: intra {h.mean_intra_angle:.1f}°  min inter "
                f"{h.min_inter_angle:.1f}°  gap {h.angular_gap:.1f}°"
            )
        ax.set_title("\n".join(lines), fontsize=8)
    fig.tight_layout()
    if title:
        fig.suptitle(title, fontsize=10, y=1.06 if dim >= 3 else 1.01)
    return fig
