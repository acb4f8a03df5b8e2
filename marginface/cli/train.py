"""CLI commands for ``marginface.train``: ``marginface train CONFIG.yaml [--set k=v] [--resume]``.

Distributed training runs one process per GPU through PyTorch's launcher::

    torchrun --nproc_per_node=8 -m marginface train configs/arcface_mbf.yaml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 -m marginface train CONFIG.yaml      # on each node
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""

    @app.command("train")
    def train_command(
        config: Annotated[
            Path, typer.Argument(help="Training configuration (YAML); see configs/ for examples.")
        ],
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set", help="Override a config value, e.g. --set optim.lr=0.05 (repeatable)."
            ),
        ] = None,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume", help="Continue from the newest checkpoint in the output folder."
            ),
        ] = False,
    ) -> None:
        """Train a face-embedding model (one process, or every rank under torchrun)."""
        from marginface.train import load_train_config, train  # heavy: torch

        cfg = load_train_config(config, list(set_ or []))
        result = train(cfg, resume=resume)

        if int(os.environ.get("RANK", "0")) == 0:
            state = "interrupted" if result.interrupted else "finished"
            typer.echo(
                f"{state} after {result.steps} steps ({result.epochs_done:.2f} epochs, "
                f"{result.seconds:.0f} s); output in {result.output}"
            )
        if result.interrupted:
            raise typer.Exit(130)

    @app.command("train-compare")
    def compare_command(
        configs: Annotated[
            list[Path],
            typer.Argument(help="Training configs, one row each (e.g. configs/*_mbf.yaml)."),
        ],
        dev_crops: Annotated[
            Path,
            typer.Option("--dev-crops", help="Pre-aligned dev crops (.npz from train-dev-crops)."),
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Folder for the runs, results.json and table.md.")
        ] = Path("runs/compare"),
        table: Annotated[
            Path | None, typer.Option("--table", help="Also write the Markdown table here.")
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set", help="Override for every config, e.g. --set epochs=5 (repeatable)."
            ),
        ] = None,
        flip: Annotated[
            bool, typer.Option("--flip/--no-flip", help="Flip test-time augmentation.")
        ] = False,
        title: Annotated[
            str, typer.Option("--title", help="Table heading.")
        ] = "Loss comparison on celeba-dev",
        budget_s: Annotated[
            float | None,
            typer.Option("--budget-s", help="Skip configs that would end after this many seconds."),
        ] = None,
    ) -> None:
        """Train each config in turn, evaluate it on the dev pairs and write the table."""
        from marginface.train.compare import run_comparison  # heavy: torch

        rows = run_comparison(
            list(configs),
            out,
            dev_crops,
            overrides=list(set_ or []),
            table=table,
            flip=flip,
            title=title,
            budget_s=budget_s,
        )
        typer.echo((out / "table.md").read_text(encoding="utf-8"))
        if any(r.status == "failed" for r in rows):
            raise typer.Exit(1)

    @app.command("train-table")
    def table_command(
        results: Annotated[
            list[Path],
            typer.Argument(
                help="results.json files of train-compare runs (e.g. seed 0 and a seed-1 rerun)."
            ),
        ],
        table: Annotated[
            Path | None,
            typer.Option("--table", help="Write the Markdown table here (default: print it)."),
        ] = None,
        title: Annotated[
            str, typer.Option("--title", help="Table heading.")
        ] = "Loss comparison on celeba-dev",
    ) -> None:
        """One table from several comparison runs; seeds of a configuration are pooled."""
        from marginface.train.compare import table_from_results  # heavy: torch

        text = table_from_results(list(results), title=title)
        if table is None:
            typer.echo(text, nl=False)
            return
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {table}")

    @app.command("train-dev-crops")
    def dev_crops_command(
        pairs: Annotated[Path, typer.Argument(help="Pairs file (LFW pairs.txt, CSV or .bin).")],
        out: Annotated[Path, typer.Argument(help="Output .npz.")],
        detector: Annotated[str, typer.Option("--detector")] = "yunet",
        workers: Annotated[int, typer.Option("--workers", min=1)] = 2,
    ) -> None:
        """Detect and align a pair set's images once (CPU) for train-compare/train-eval."""
        from marginface.train.compare import prepare_dev_crops  # heavy: torch

        dc = prepare_dev_crops(pairs, out, detector=detector, workers=workers)
        size = out.stat().st_size / 1e6
        typer.echo(
            f"wrote {out} ({size:.1f} MB): {len(dc.ok)} images, {int((~dc.ok).sum())} "
            f"without a face, {dc.n_pairs} pairs"
        )

    @app.command("train-eval")
    def eval_crops_command(
        model: Annotated[str, typer.Argument(help="Model folder, .onnx or built-in name.")],
        dev_crops: Annotated[Path, typer.Option("--dev-crops", help="Pre-aligned dev crops.")],
        flip: Annotated[bool, typer.Option("--flip/--no-flip")] = False,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics here.")] = None,
    ) -> None:
        """Evaluate a model on pre-aligned dev crops (10-fold accuracy, TAR@FAR)."""
        from marginface.embed import load_embedder  # CLI: keeps marginface --help quick
        from marginface.train.compare import evaluate_crops, load_dev_crops  # heavy: torch

        m = evaluate_crops(load_embedder(model), load_dev_crops(dev_crops), flip=flip)
        if json_out is not None:
            json_out.write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
        tars = ", ".join(
            f"TAR@FAR={k} {v:.3f}" for k, v in m["tar_at_far"].items() if v is not None
        )
        typer.echo(
            f"{model}: {m['accuracy_mean']:.2f} ± {m['accuracy_std']:.2f} % ({tars}; "
            f"{m['n_failed_images']} images without a face)"
        )

    @app.command("train-teacher")
    def teacher_command(
        data: Annotated[Path, typer.Argument(help="Training set (folder, .csv or RecordIO).")],
        out: Annotated[Path, typer.Argument(help="Output .npy (float16, data set order).")],
        teacher: Annotated[str, typer.Option("--teacher", help="Teacher embedder.")] = "sface",
        limit: Annotated[
            int | None, typer.Option("--limit", min=1, help="Only the first N images.")
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    ) -> None:
        """Embed every training crop with a teacher, for distill: {teacher: OUT.npy}."""
        from tqdm import tqdm  # CLI: keeps marginface --help quick

        from marginface.train.distill import compute_teacher_embeddings  # heavy: torch

        bar = tqdm(total=None, unit="img", desc="teacher")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        meta = compute_teacher_embeddings(
            data, out, teacher=teacher, limit=limit, batch_size=batch_size, progress=progress
        )
        bar.close()
        typer.echo(
            f"wrote {out}: {meta['n']} × {meta['dim']} float16 from {meta['teacher']} "
            f"({meta['images_per_second']} images/s, {meta['failed']} unreadable)"
        )
