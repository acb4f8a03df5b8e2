"""The exit codes of the ``marginface`` command, defined once.

Scripts branch on them (a door controller calling ``marginface verify``, a cron job calling
``marginface identify``), so a code never changes meaning; new ones get new numbers. The README
lists them; a test checks that list against this module.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Why ``marginface`` stopped. An ``IntEnum``, so ``sys.exit`` and ``typer.Exit`` take it
    as the plain number."""

    #: The command did what was asked (``verify``: the same person).
    SUCCESS = 0
    #: ``verify``: the two photos (or photo and subject) are different people. (``train-compare``
    #: also exits 1 when a configuration failed.)
    DIFFERENT_PEOPLE = 1
    #: A user error: a bad option or argument, a missing file or gallery, an unknown subject or
    #: key, a refused request (any :class:`marginface.errors.MarginfaceError`, and click's usage
    #: errors, which exit 2 too). One ``error: ...`` line on stderr says what.
    USER_ERROR = 2
    #: ``identify``: the photo was read but shows no face (the answer lists no faces).
    NO_FACE = 3
    #: Interrupted (Ctrl-C; ``train`` saves a checkpoint first), or a confirmation was declined
    #: (nothing was deleted then).
    ABORTED = 130
