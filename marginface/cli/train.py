"""CLI commands for ``marginface.train``: ``marginface train CONFIG.yaml [--set k=v] [--resume]``.

Distributed training runs one process per GPU through PyTorch's launcher::

    torchrun --nproc_per_node=8 -m marginface train configs/arcface_mbf.yaml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 -m marginface train CONFIG.yaml      # on each node
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""

    @app.command("train")
    def train_command(
        config: Annotated[Path, typer.Argument(help="Training configuration (YAML); see "
                                                    "configs/ for examples.")],
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Override a config value, e.g. --set optim.lr=0.05 (repeatable).")
        ] = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="Continue from the newest checkpoint in the output folder.")
        ] = False,
    ) -> None:
        """Train a face-embedding model (one process, or every rank under torchrun)."""
        from marginface.train import load_train_config, train

        cfg = load_train_config(config, list(set_ or []))
        result = train(cfg, resume=resume)
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            state = "interrupted" if result.interrupted else "finished"
            typer.echo(f"{state} after {result.steps} steps ({result.epochs_done:.2f} epochs, "
                       f"{result.seconds:.0f} s); output in {result.output}")
        if result.interrupted:
            raise typer.Exit(130)
