"""CLI commands for ``marginface.embed``: ``export`` and ``embed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from marginface.errors import MarginfaceError


def _accuracy_on_pairs(
    models: list[Path],
    pairs: Path,
    root: Path | None,
) -> list[tuple[str, float]]:
    """``(model name, mean 10-fold verification accuracy)`` for each model on ``pairs``, run
    with marginface's evaluation protocol (:func:`marginface.eval.verify.verify`): what
    ``export --int8 --pairs`` reports. It lives here, above both ``embed`` and ``eval``."""
    # CLI: keeps marginface --help quick
    from marginface.embed.loader import load_embedder
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import verify

    pair_set = load_pairs(pairs, root)
    rows = []
    for spec in models:
        embedder = load_embedder(spec)
        report, _ = verify(pair_set, embedder, progress=True, model_spec=str(spec))
        accuracy = float(report["accuracy_mean"])
        rows.append((embedder.name, accuracy / 100.0))
    return rows


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""

    @app.command("export")
    def export(
        model_dir: Path = typer.Argument(..., help="marginface model directory (model.json)."),
        onnx: Path = typer.Option(..., "--onnx", help="Output .onnx file."),
        int8: bool = typer.Option(False, "--int8", help="Also write an int8 (dynamic) model."),
        opset: int = typer.Option(17, help="ONNX opset."),
        pairs: Path | None = typer.Option(
            None,
            help="With --int8: a verification pairs file (e.g. celeba-dev/pairs.txt) to "
            "report the accuracy change on.",
        ),
        root: Path | None = typer.Option(None, help="Image root for --pairs."),
    ) -> None:
        """Export a model to ONNX with a dynamic batch axis, checked against PyTorch."""
        from marginface.embed.export import export_onnx  # CLI: keeps marginface --help quick

        result = export_onnx(model_dir, onnx, int8=int8, opset=opset)
        typer.echo(
            f"wrote {result.onnx_path} (+ card {result.card_path.name}); "
            f"max |ONNX - PyTorch| of normalised embeddings: {result.max_abs_diff:.2e}"
        )
        if result.int8_path is not None:
            typer.echo(
                f"wrote {result.int8_path}; vs float ONNX on random input: max |diff| "
                f"{result.int8_max_abs_diff:.3f}, min cosine {result.int8_min_cosine:.4f}"
            )
            if pairs is not None:
                rows = _accuracy_on_pairs([result.onnx_path, result.int8_path], pairs, root)
                for name, acc in rows:
                    typer.echo(f"  {name}: verification accuracy {acc * 100:.2f}%")
                typer.echo(
                    f"  accuracy change (int8 - float): "
                    f"{(rows[1][1] - rows[0][1]) * 100:+.2f} points"
                )

    @app.command("embed")
    def embed(
        photos: list[Path] = typer.Argument(..., help="Photos to embed."),
        model: str = typer.Option("default", help="Model: built-in name, folder, .onnx, .pth."),
        detector: str = typer.Option("yunet", help="Face detector: yunet or mtcnn."),
        all_faces: bool = typer.Option(False, "--all", help="Every face, not only the largest."),
        flip: bool = typer.Option(False, help="Flip test-time augmentation."),
        out: Path | None = typer.Option(None, help="Write embeddings to this .npy file."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Detect, align and embed the faces in photos."""
        import numpy as np  # CLI: keeps marginface --help quick

        from marginface.embed.pipeline import Pipeline  # CLI: keeps marginface --help quick

        pipe = Pipeline.from_names(
            model, detector, selection="all" if all_faces else "largest", flip=flip
        )
        rows: list[dict[str, Any]] = []
        vectors: list[np.ndarray] = []
        for photo in photos:
            try:
                faces = pipe.embed_image(photo)
            except MarginfaceError as exc:
                rows.append({"file": str(photo), "error": str(exc), "faces": []})
                continue
            vectors += [f.embedding for f in faces]
            rows.append(
                {
                    "file": str(photo),
                    "faces": [
                        {
                            **f.to_dict(),
                            **(
                                {"embedding": [round(float(v), 6) for v in f.embedding]}
                                if as_json and out is None
                                else {}
                            ),
                        }
                        for f in faces
                    ],
                }
            )
        if out is not None:
            dim = pipe.embedder.embedding_dim
            np.save(out, np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))
        if as_json:
            typer.echo(json.dumps({"model": pipe.embedder.name, "results": rows}, indent=2))
            return
        for row in rows:
            if "error" in row:
                typer.echo(f"{row['file']}: error: {row['error']}")
            elif not row["faces"]:
                typer.echo(f"{row['file']}: no face")
            else:
                for face in row["faces"]:
                    typer.echo(f"{row['file']}: face at {face['box']} score {face['score']}")
        if out is not None:
            typer.echo(f"{len(vectors)} embeddings ({pipe.embedder.name}) written to {out}")
