"""``marginface demo``: the margin losses compared end to end on real faces, in a minute."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _default_data() -> Path:
    return Path.cwd().parent / "shared" / "data"


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""

    @app.command()
    def demo(
        data: Path = typer.Option(None, help="Folder holding orl/ (default: ../shared/data)."),
        losses: str = typer.Option(
            "softmax,normface,cosface,arcface", help="Comma-separated loss names."
        ),
        epochs: int = typer.Option(10, min=1, help="Training epochs per loss."),
        seed: int = typer.Option(0),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Train a tiny network with each loss and verify people it never saw."""
        # CLI: keeps marginface --help quick
        from rich.console import Console
        from rich.table import Table

        from marginface.demo import as_dicts, run_demo  # heavy: torch

        root = data if data is not None else _default_data()
        names = tuple(n.strip() for n in losses.split(",") if n.strip())
        console = Console(stderr=json_out)
        with console.status("training one tiny network per loss ..."):
            results, source = run_demo(root, names, epochs=epochs, seed=seed)
        if json_out:
            typer.echo(json.dumps({"data": source, "results": as_dicts(results)}, indent=2))
            return
        table = Table(title=f"Verification of unseen people ({source})")
        for col in ("loss", "AUC", "EER", "best acc.", "TAR@FAR=1e-2", "intra-class angle", "time"):
            table.add_column(col, justify="right" if col != "loss" else "left")
        for r in results:
            table.add_row(
                r.loss,
                f"{r.auc:.4f}",
                f"{r.eer:.3f}",
                f"{r.accuracy:.3f}",
                f"{r.tar_at_far_1e2:.3f}",
                f"{r.intra_angle_deg:.1f}°",
                f"{r.seconds:.1f}s",
            )
        console.print(table)
