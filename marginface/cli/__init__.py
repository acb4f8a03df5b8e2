"""The ``marginface`` command line: a thin typer layer over the library.

Each module in this package adds the commands of one concept through ``register(app)``.
Heavy imports (torch, cv2, ...) happen inside the commands, so ``marginface --help`` is quick.
"""

from __future__ import annotations

import importlib
import sys

import typer

from marginface.cli.exit_codes import ExitCode
from marginface.errors import MarginfaceError
from marginface.extras import missing_extra_message

__all__ = ["COMMAND_MODULES", "ExitCode", "build_app", "main"]

# One module per concept; each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (
    "demo",
    "data",
    "train",
    "eval",
    "align",
    "embed",
    "gallery",
    "keys",
    "serve",
    "plot",
    "watch",
)


def build_app() -> typer.Typer:
    """Create the root typer application with every command group registered."""
    app = typer.Typer(
        name="marginface",
        help="Face recognition by learned similarity: train, evaluate, enrol, identify, serve.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"marginface.cli.{name}")
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one clean line on stderr.

    The exit status is one of :class:`ExitCode` (listed in the README), so scripts can tell a
    user error from "no face" or "different people".
    """
    app = build_app()
    try:
        code = app(args=argv, standalone_mode=False)
    except MarginfaceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(ExitCode.USER_ERROR)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or ExitCode.SUCCESS)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(ExitCode.ABORTED)
    except KeyboardInterrupt:
        sys.exit(ExitCode.ABORTED)
    except ImportError as exc:  # an optional dependency that is not installed: name its extra
        message = missing_extra_message(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(ExitCode.USER_ERROR)
    except Exception as exc:  # usage errors arrive here in standalone_mode=False
        # Click's usage errors (a typo in an option, a missing argument) know how to show
        # themselves. Typer ships its own copy of click, whose classes are not the click
        # package's, so they are recognised by what they can do, not by their class.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
    sys.exit(code if isinstance(code, int) else ExitCode.SUCCESS)
