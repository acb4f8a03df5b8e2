"""CLI commands for ``marginface.align``: ``marginface align SRC DST``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from marginface.detection_defaults import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCORE_THRESHOLD
from marginface.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""

    @app.command("align")
    def align(
        src: Path = typer.Argument(..., help="Folder of photos (searched recursively)."),
        dst: Path = typer.Argument(..., help="Output folder for aligned crops (same tree)."),
        workers: int = typer.Option(2, "--workers", "-j", min=1, help="Worker processes."),
        detector: str = typer.Option("yunet", help="Face detector: yunet or mtcnn."),
        template: str = typer.Option(
            "arcface_112x112", help="Template: arcface_112x112 or arcface_112x96."
        ),
        selection: str = typer.Option("largest", help="Faces to keep: largest, central or all."),
        min_face_size: float = typer.Option(
            DEFAULT_MIN_FACE_SIZE, help="Ignore faces smaller than this (px)."
        ),
        score_threshold: float = typer.Option(
            DEFAULT_SCORE_THRESHOLD, help="Ignore detections scoring lower."
        ),
        image_format: str = typer.Option("jpg", "--format", help="Output format: jpg or png."),
        quality: int = typer.Option(95, min=1, max=100, help="JPEG quality."),
        failures: Path | None = typer.Option(None, help="Failure CSV (default: DST/_failed.csv)."),
        retry_failed: bool = typer.Option(False, help="Retry files listed in the failure CSV."),
        refine: bool | None = typer.Option(
            None,
            "--refine-landmarks/--yunet-landmarks",
            help="YuNet: refine landmarks with MTCNN's ONet (default: when installed).",
        ),
    ) -> None:
        """Detect and align every face photo under SRC into DST (failures CSV, resumable)."""
        # CLI: keeps marginface --help quick
        from marginface.align.batch import AlignJob, align_folder

        if image_format not in ("jpg", "png"):
            raise ConfigError("--format must be jpg or png")
        if selection not in ("largest", "central", "all"):
            raise ConfigError("--selection must be largest, central or all")
        options: tuple[tuple[str, Any], ...] = ()
        if detector == "yunet" and refine is not None:
            options = (("refine_landmarks", refine),)
        job = AlignJob(
            detector=detector,
            detector_options=options,
            template=template,
            selection=selection,
            min_face_size=min_face_size,
            score_threshold=score_threshold,
            image_format=image_format,
            jpeg_quality=quality,
        )
        report = align_folder(
            src, dst, job, workers=workers, failures_csv=failures, retry_failed=retry_failed
        )
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.reasons.items())) or "none"
        typer.echo(
            f"{report.total} images: {report.aligned} aligned ({report.faces} faces), "
            f"{report.skipped} skipped (already done), {report.failed} failed ({reasons})"
        )
        if report.failed:
            typer.echo(f"failures listed in {report.failures_csv}")
