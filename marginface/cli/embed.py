"""CLI commands for ``marginface.embed``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
