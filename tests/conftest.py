"""Shared fixtures: the real face data in ``../shared/data`` (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; tests that need it fail loudly when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """Path of ``../shared/reference`` (backbone parity files)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.fail(f"shared reference files not found at {SHARED_REFERENCE}")
    return SHARED_REFERENCE
