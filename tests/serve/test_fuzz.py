"""Property-based fuzzing of the REST API against its own OpenAPI document (schemathesis).

For each role (admin, enrol, recognise) a fresh app with the fake pipeline gets every operation's
coverage cases and Hypothesis-generated positive and negative requests, sent in-process with that
role's key; real photos and existing ids are mixed in (see ``fuzz_helpers``). Every response must:
not be a 5xx; have a documented status code and content type; match the documented body schema
and headers; refuse schema-invalid input and unsupported methods (405 with ``Allow``); not
succeed without a key (``ignored_auth``); not succeed for a role too weak for the operation, and
not show a recognise key identify's candidates (the documented role model).

The run is bounded and deterministic: the coverage cases are fixed, fuzzing draws a fixed number
of examples per operation and mode with ``derandomize=True``, and no example database is used.
All distinct failures of a role are reported together, each with its smallest request.
``MARGINFACE_FUZZ_SCALE=5 pytest tests/serve/test_fuzz.py -s`` fuzzes five times as much.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from marginface.serve import ServeSettings
from tests.serve.fuzz_helpers import ROLES, FuzzRun, RunStats, fuzz_scale

pytestmark = pytest.mark.slow

#: Generated requests each role must at least send, and each operation at least gets: the run
#: really ran (at scale 1 about 3,400 for admin, 1,800 for enrol, 1,200 for recognise).
MIN_GENERATED = 800
MIN_PER_OPERATION = 10

#: Per-role statistics of the runs in this session (also printed in pytest's terminal summary).
FUZZ_STATS: dict[str, RunStats] = {}


class _Summary:
    """A plugin printing the request counts at the end of the session."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not FUZZ_STATS:
            return
        terminalreporter.section("API fuzzing (schemathesis)")
        for stats in FUZZ_STATS.values():
            terminalreporter.write_line(
                f"{stats.role:>9}: {stats.generated} generated requests "
                f"({stats.coverage} coverage + {stats.fuzzing} fuzzing), "
                f"{stats.http_requests} HTTP requests, {stats.failures} failing, "
                f"{stats.seconds:.1f} s"
            )
        total = sum(s.generated for s in FUZZ_STATS.values())
        seconds = sum(s.seconds for s in FUZZ_STATS.values())
        terminalreporter.write_line(f"    total: {total} generated requests in {seconds:.1f} s")


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("marginface-fuzz-summary"):
        manager.register(_Summary(), "marginface-fuzz-summary")


@pytest.mark.parametrize("role", ROLES)
def test_api_conforms_to_its_schema(role: str, settings: ServeSettings) -> None:
    # Crops are stored so the crop route can answer 200 with a PNG, not only 404. numpy's BLAS
    # pool is left alone: schemathesis runs the lifespan in a thread of its own, and OpenBLAS
    # limited from there ignores later limits from the main thread (which test_settings checks).
    update = {"store_photos": True, "blas_threads": None}
    run = FuzzRun(role, settings.model_copy(update=update))
    started = time.perf_counter()
    with run.started():
        run.execute()
    run.stats.seconds = time.perf_counter() - started
    FUZZ_STATS[role] = run.stats
    print(run.summary())

    scale = min(1.0, fuzz_scale())
    assert run.stats.generated >= MIN_GENERATED * scale, run.summary()
    starved = {op: n for op, n in run.stats.per_operation.items() if n < MIN_PER_OPERATION * scale}
    assert run.operation_labels and not starved, (run.operation_labels, starved)
    # Every failure, and every operation the role may use that never answered 2xx (the fuzzer
    # did not get through to it), in one report.
    if run.failures or run.unreached():
        pytest.fail(run.report(), pytrace=False)
