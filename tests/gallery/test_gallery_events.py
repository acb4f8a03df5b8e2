"""``gallery.events``: the event log and the attendance (EventLog), on every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from marginface.errors import GalleryError, NotFoundError


def test_events_filters_and_attendance(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    bob = g.subjects.create("Bob", embeddings=people.sample(1, 1))
    day = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    g.events.log("front-door", subject_id=ada.id, score=0.8, decision="match", time=day)
    g.events.log(
        "lab", subject_id=ada.id, score=0.7, decision="match", time=day + timedelta(hours=9)
    )
    g.events.log(
        "front-door", subject_id=bob.id, score=0.9, decision="match", time=day + timedelta(hours=1)
    )
    g.events.log(
        "front-door", subject_id=None, score=0.2, decision="unknown", time=day + timedelta(hours=2)
    )
    g.events.log(
        "front-door", subject_id=ada.id, score=0.9, decision="match", time=day + timedelta(days=1)
    )
    assert len(g.events.list()) == 5
    assert [e.source for e in g.events.list(subject=ada.id)] == ["front-door", "lab", "front-door"]
    assert len(g.events.list(source="lab")) == 1
    assert len(g.events.list(decision="unknown")) == 1
    same_day = g.events.list(start=day, end=day + timedelta(days=1))
    assert len(same_day) == 4 and same_day[0].time > same_day[-1].time  # newest first
    rows = g.events.attendance("2024-03-05", tz=UTC)
    assert [(r.name, r.count) for r in rows] == [("Ada", 2), ("Bob", 1)]
    assert rows[0].first_seen == day and rows[0].last_seen == day + timedelta(hours=9)
    assert rows[0].sources == ["front-door", "lab"]
    csv_text = g.events.attendance_csv("2024-03-05", tz=UTC)
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("date,subject_id,name,first_seen")
    assert lines[1].startswith(f"2024-03-05,{ada.id},Ada,2024-03-05T08:00:00+00:00")
    assert "2024-03-06" not in csv_text
    with pytest.raises(GalleryError, match="YYYY-MM-DD"):
        g.events.attendance("5 March")
    with pytest.raises(GalleryError, match="unknown subject"):
        g.events.log("door", subject_id="ghost", score=1.0, decision="match")


def test_one_event_is_logged_read_back_counted_and_exported(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    at = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    logged = g.events.log(
        "door", subject_id=ada.id, score=0.75, decision="match", time=at, details={"box": [1, 2]}
    )
    assert (logged.subject_name, logged.time, logged.details) == ("Ada", at, {"box": [1, 2]})
    assert g.events.get(logged.id) == logged
    assert g.events.count() == 1
    unknown = g.events.log("door", subject_id=None, score=None, decision="unknown")
    assert unknown.score is None and unknown.time > at  # now
    assert g.events.count() == 2 and [e.id for e in g.events.list(limit=1)] == [unknown.id]
    assert [e.id for e in g.events.list(limit=1, offset=1)] == [logged.id]
    lines = g.events.csv(subject=ada.id).strip().splitlines()
    assert lines[0] == "id,time,source,subject_id,subject_name,score,decision"
    assert lines[1] == f"{logged.id},2024-03-05T08:00:00+00:00,door,{ada.id},Ada,0.75,match"
    assert len(lines) == 2
    with pytest.raises(NotFoundError, match="unknown event"):
        g.events.get(10**9)


def test_the_events_part_of_the_purge_takes_camera_visits_only(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    at = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    visit = {"kind": "visit", "camera": "door", "visit_uid": "u1"}
    for decision in ("arrived", "left"):
        g.events.log(
            "door", subject_id=ada.id, score=0.8, decision=decision, time=at, details=visit
        )
    g.events.log("kiosk", subject_id=ada.id, score=0.9, decision="match", time=at)
    later = g.events.log(
        "door",
        subject_id=None,
        score=0.1,
        decision="left",
        time=at + timedelta(days=2),
        details=visit,
    )
    assert g.events.delete_visits_before((at + timedelta(days=1)).timestamp()) == 2
    assert sorted(e.id for e in g.events.list()) == sorted(
        [later.id, *(e.id for e in g.events.list(source="kiosk"))]
    )
