"""CLI commands for ``marginface.data``: ``marginface data pack`` and ``marginface data info``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
    data_app = typer.Typer(help="Prepare and inspect training data.", no_args_is_help=True)

    @data_app.command("pack")
    def pack(
        src_dir: Annotated[
            Path, typer.Argument(help="Folder of identity folders: SRC_DIR/<identity>/<image>.")
        ],
        out_prefix: Annotated[
            Path,
            typer.Argument(
                help="Output prefix: writes PREFIX.rec/.idx "
                "(or PREFIX-00000.rec/.idx, ... with "
                "--shard-size-mb) and "
                "PREFIX.labels.json."
            ),
        ],
        quality: Annotated[
            int | None,
            typer.Option(
                "--quality",
                min=1,
                max=100,
                help="Re-encode every image as JPEG at this quality (default: keep JPEG files "
                "as they are, encode others at 95).",
            ),
        ] = None,
        shard_size_mb: Annotated[
            float | None,
            typer.Option(
                "--shard-size-mb",
                min=0.001,
                help="Split the output into shards of at most this many MB each.",
            ),
        ] = None,
        min_images: Annotated[
            int, typer.Option("--min-images", min=1, help="Leave out identities with fewer images.")
        ] = 1,
        threads: Annotated[
            int, typer.Option("--threads", min=1, help="Decoding/encoding threads.")
        ] = 4,
    ) -> None:
        """Convert identity folders to insightface RecordIO (train.rec + train.idx)."""
        from tqdm import tqdm  # CLI: keeps marginface --help quick

        from marginface.data.recordio import pack_folder  # heavy: torch

        bar = tqdm(total=0, unit="img", desc="packing", disable=None)

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            result = pack_folder(
                src_dir,
                out_prefix,
                quality=quality,
                shard_size_mb=shard_size_mb,
                min_images=min_images,
                threads=threads,
                progress=progress,
            )
        finally:
            bar.close()
        files = ", ".join(str(p) for p in result.rec_files[:3])
        if len(result.rec_files) > 3:
            files += f", ... ({len(result.rec_files)} files)"
        typer.echo(
            f"wrote {result.num_images} images of {result.num_classes} identities, "
            f"{result.total_bytes / 1e6:.1f} MB: {files}"
        )
        typer.echo(f"label map: {result.label_map_path}")
        if result.skipped:
            typer.secho(
                f"skipped {len(result.skipped)} unreadable images:",
                err=True,
                fg=typer.colors.YELLOW,
            )
            for path, reason in result.skipped[:20]:
                typer.echo(f"  {path}: {reason}", err=True)
            if len(result.skipped) > 20:
                typer.echo(f"  ... and {len(result.skipped) - 20} more", err=True)

    @data_app.command("info")
    def info(
        path: Annotated[
            Path,
            typer.Argument(help="Identity folder root, .csv list, .rec file or RecordIO prefix."),
        ],
    ) -> None:
        """Show how many images and identities a training set has."""
        import numpy as np  # CLI: keeps marginface --help quick

        from marginface.data import open_dataset  # heavy: torch

        ds = open_dataset(path)
        counts = ds.class_counts()
        present = counts[counts > 0]
        typer.echo(
            f"{type(ds).__name__}: {len(ds)} images, {int((counts > 0).sum())} "
            f"identities (label space {ds.num_classes})"
        )
        typer.echo(
            f"images per identity: min {int(present.min())}, median "
            f"{float(np.median(present)):g}, max {int(present.max())}; "
            f"{int((present >= 5).sum())} identities with 5 or more"
        )

    app.add_typer(data_app, name="data")
