"""CLI commands for ``marginface.plots``: ``marginface plot logit-curves|decision-boundaries|
features|margin-sweep|all``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from marginface.errors import ConfigError

if TYPE_CHECKING:
    from marginface.plots.run import DataOptions

_OUT = typer.Option(Path("docs/images"), "--out", "-o", help="output folder")
_FMT = typer.Option("png", "--format", "-f", help="image format: png or svg")
_DATA = typer.Option(
    "orl",
    "--data",
    help="celeba, orl, yale, digits or a folder of identity folders (digits needs no shared data)",
)
_ROOT = typer.Option(
    None,
    "--data-root",
    help="shared data folder (default: $MARGINFACE_SHARED_DATA or ../shared/data)",
)
_IDS = typer.Option(8, "--identities", help="number of identities (those with most images)")
_PER = typer.Option(30, "--per-identity", help="at most this many images per identity")
_SIZE = typer.Option(32, "--image-size", help="images are resized to this square size")
_SEED = typer.Option(0, "--seed", help="random seed (same seed, same figure)")
_EPOCHS = typer.Option(60, "--epochs", help="training epochs per loss")
_WORKERS = typer.Option(
    2, "--workers", help="parallel training processes (1 thread each; results do not depend on it)"
)


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in ("png", "svg"):
        raise ConfigError(f"--format must be png or svg, got {fmt!r}")
    return fmt


def _data_options(
    data: str, data_root: Path | None, identities: int, per_identity: int, image_size: int
) -> DataOptions:
    """The data options (``--data`` ... ``--image-size``) as ``plots.run.DataOptions``."""
    from marginface.plots.run import DataOptions  # loads torch: inside commands, as all of them

    root = None if data_root is None else str(data_root)
    return DataOptions(data, root, identities, per_identity, image_size)


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Rows as written to the JSON (``train`` and ``held_out`` parts, the latter maybe null)."""
    # CLI: keeps marginface --help quick
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    held = any(row.get("held_out") for row in rows)
    parts = ["train", "held_out"] if held else ["train"]
    table.add_column("loss", justify="left")
    for part in parts:
        tag = "held-out" if part == "held_out" else "train"
        for name in ("intra", "min inter", "gap", "acc"):
            table.add_column(f"{tag} {name}", justify="right")
    table.add_column("time", justify="right")
    for row in rows:
        cells = [row["label"]]
        for part in parts:
            s = row[part]
            cells += [
                f"{s['mean_intra_angle']:.2f}°",
                f"{s['min_inter_angle']:.2f}°",
                f"{s['angular_gap']:.2f}°",
                f"{s['accuracy']:.3f}",
            ]
        cells.append(f"{row['seconds']:.1f} s")
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a full table in logs and pipes
    console.print(table)


def logit_curves_command(out: Path = _OUT, fmt: str = _FMT) -> None:
    """Target logit against θ for Softmax, NormFace, SphereFace, CosFace, ArcFace, combined."""
    from marginface.plots.run import plot_logit_curves  # heavy: torch

    typer.echo(f"wrote {plot_logit_curves(out, _check_format(fmt))}")


def decision_boundaries_command(out: Path = _OUT, fmt: str = _FMT) -> None:
    """Two-class decision boundaries with the margin region shaded."""
    from marginface.plots.run import plot_decision_boundaries  # heavy: torch

    typer.echo(f"wrote {plot_decision_boundaries(out, _check_format(fmt))}")


def features_command(
    out: Path = _OUT,
    fmt: str = _FMT,
    data: str = _DATA,
    data_root: Path | None = _ROOT,
    identities: int = _IDS,
    per_identity: int = _PER,
    image_size: int = _SIZE,
    dim: int = typer.Option(2, "--dim", help="embedding dimension: 2 (circle) or 3 (sphere)"),
    losses: str = typer.Option(
        "",
        "--losses",
        help="comma-separated subset of softmax, "
        "normface, sphereface, cosface, arcface, triplet (default all)",
    ),
    epochs: int = _EPOCHS,
    seed: int = _SEED,
    workers: int = _WORKERS,
    holdout: int = typer.Option(
        3, "--holdout", help="photos per identity never trained on, measured separately"
    ),
    repeats: int = typer.Option(
        3, "--repeats", help="networks per loss (seeds seed, seed+1, …); the table averages them"
    ),
) -> None:
    """Train the tiny network per loss (through the trainer) and plot its normalised features,
    one panel per loss."""
    # heavy: torch
    from marginface.plots.features import TrainSettings, mean_summary
    from marginface.plots.run import plot_features

    opts = _data_options(data, data_root, identities, per_identity, image_size)
    settings = TrainSettings(dim=dim, epochs=epochs, seed=seed, holdout=holdout)
    names = [n for n in losses.split(",") if n.strip()]
    image, table, grouped = plot_features(
        out,
        _check_format(fmt),
        data=opts,
        settings=settings,
        losses=names,
        repeats=repeats,
        workers=workers,
    )
    _print_table(
        f"{dim}-d features, {data}, mean of seeds {seed}..{seed + repeats - 1}",
        [mean_summary(runs) for runs in grouped],
    )
    typer.echo(f"wrote {image} and {table}")


def margin_sweep_command(
    out: Path = _OUT,
    fmt: str = _FMT,
    data: str = _DATA,
    data_root: Path | None = _ROOT,
    identities: int = _IDS,
    per_identity: int = _PER,
    image_size: int = _SIZE,
    dim: int = typer.Option(
        3, "--dim", help="embedding dimension (3: m=0.35 is not feasible for 8 classes on a circle)"
    ),
    margins: str = typer.Option("0,0.1,0.2,0.35", "--margins", help="CosFace margins"),
    scale: float = typer.Option(16.0, "--scale", help="CosFace scale s"),
    epochs: int = _EPOCHS,
    seed: int = _SEED,
    workers: int = _WORKERS,
) -> None:
    """CosFace features for several margins side by side."""
    # heavy: torch
    from marginface.plots.features import TrainSettings
    from marginface.plots.run import plot_margin_sweep, runs_table

    try:
        values = [float(m) for m in margins.split(",") if m.strip()]
    except ValueError as exc:
        raise ConfigError(f"--margins must be comma-separated numbers, got {margins!r}") from exc
    opts = _data_options(data, data_root, identities, per_identity, image_size)
    settings = TrainSettings(dim=dim, epochs=epochs, seed=seed, holdout=0)
    image, table, runs = plot_margin_sweep(
        out,
        _check_format(fmt),
        data=opts,
        settings=settings,
        margins=values,
        scale=scale,
        workers=workers,
    )
    _print_table(f"CosFace margin sweep, {dim}-d, {data}, seed {seed}", runs_table(runs))
    typer.echo(f"wrote {image} and {table}")


def all_command(
    out: Path = _OUT,
    fmt: str = _FMT,
    data: str = _DATA,
    data_root: Path | None = _ROOT,
    seed: int = _SEED,
    workers: int = _WORKERS,
) -> None:
    """Regenerate every figure of docs/losses.md with the default settings."""
    logit_curves_command(out, fmt)
    decision_boundaries_command(out, fmt)
    features_command(out, fmt, data, data_root, 8, 30, 32, 2, "", 60, seed, workers, 3, 3)
    margin_sweep_command(
        out, fmt, data, data_root, 8, 30, 32, 3, "0,0.1,0.2,0.35", 16.0, 60, seed, workers
    )


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
    plot_app = typer.Typer(
        name="plot",
        no_args_is_help=True,
        help="Figures of what the margin losses do (docs/losses.md).",
    )
    plot_app.command("logit-curves")(logit_curves_command)
    plot_app.command("decision-boundaries")(decision_boundaries_command)
    plot_app.command("features")(features_command)
    plot_app.command("margin-sweep")(margin_sweep_command)
    plot_app.command("all")(all_command)
    app.add_typer(plot_app, name="plot")
