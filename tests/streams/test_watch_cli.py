"""``marginface watch``: a video file to its end, events as JSON lines, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marginface.cli import main
from marginface.cli.exit_codes import ExitCode

REQUIRED = {
    "camera",
    "track_id",
    "subject_id",
    "name",
    "score",
    "start_s",
    "end_s",
    "first_seen",
    "last_seen",
    "faces",
    "visit_id",
    "threshold",
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_watch_a_file_writes_one_line_per_passer(
    scene_videos, enrolled_gallery_path, tmp_path: Path, capsys
) -> None:
    video, expected = scene_videos["two_at_once"]
    out_path = tmp_path / "events.jsonl"
    code, out, err = run_cli(
        [
            "watch",
            str(video),
            "--db",
            str(enrolled_gallery_path),
            "--events-jsonl",
            str(out_path),
            "--camera",
            "hall",
        ],
        capsys,
    )
    assert code == ExitCode.SUCCESS, err
    rows = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [r["kind"] for r in rows].count("arrived") == len(expected) == 2
    lines = [r for r in rows if r["kind"] == "left"]
    assert len(lines) == 2 and len(rows) == 4  # arrived and left of each visit, nothing else
    for row in lines:
        assert set(row) >= REQUIRED and row["camera"] == "hall"
        assert row["first_seen"] < row["last_seen"] and row["start_s"] < row["end_s"]
        assert row["faces"] >= 3 and row["reason"] in ("closed", "ended", "jump", "split")
    assert sorted(r["name"] for r in lines) == sorted(p["identity"] for p in expected)
    assert out.count("arrived ") == 2 and out.count("left ") == 2
    assert "2 visits (2 named, 0 unknown)" in out
    assert "Traceback" not in err


def test_a_stranger_has_null_subject_and_name(
    scene_videos, enrolled_gallery_path, tmp_path: Path, capsys
) -> None:
    video, _ = scene_videos["stranger"]
    out_path = tmp_path / "events.jsonl"
    code, out, _ = run_cli(
        [
            "watch",
            str(video),
            "--db",
            str(enrolled_gallery_path),
            "--events-jsonl",
            str(out_path),
            "--min-faces",
            "2",
        ],
        capsys,
    )
    assert code == 0
    arrived, row = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert (arrived["kind"], row["kind"]) == ("arrived", "left")
    assert arrived["faces"] == 2  # decided on its first two faces (--min-faces 2)
    assert row["subject_id"] is None and row["name"] is None and row["faces"] >= 2
    assert row["camera"] == "stranger"  # the file's name
    assert "1 visits (0 named, 1 unknown)" in out


def test_record_writes_attendance_and_the_strangers_review_queue(
    scene_videos, enrolled_gallery_path, default_pipeline, tmp_path: Path, capsys
) -> None:
    import shutil

    from marginface.gallery import Gallery

    db = tmp_path / "gallery.db"
    shutil.copyfile(enrolled_gallery_path, db)
    for scene in ("two_at_once", "stranger"):
        video, _ = scene_videos[scene]
        code, _, err = run_cli(
            ["watch", str(video), "--db", str(db), "--camera", "door", "--record"],
            capsys,
        )
        assert code == ExitCode.SUCCESS, err
    with Gallery.open(db, card=default_pipeline.embedder.card, create=False) as gallery:
        kinds = sorted(e.decision for e in gallery.events.list(source="door"))
        assert kinds == ["arrived"] * 3 + ["left"] * 3
        rows = gallery.events.attendance(sources=["door"])
        expected = sorted(p["identity"] for p in scene_videos["two_at_once"][1])
        assert sorted(r.name for r in rows) == expected and all(r.count == 1 for r in rows)
        (visitor,) = gallery.visitors.list()
        assert visitor.cameras == ["door"] and visitor.faces
        assert all(f.has_crop for f in visitor.faces)
        png = gallery.visitors.face_crop(visitor.faces[0].id)
        assert png is not None and png[:4] == b"\x89PNG"
    for sources, people in ((["--source", "door"], 2), (["--source", "garage"], 0)):
        code, out, err = run_cli(
            ["gallery", "attendance", "--db", str(db), "--json", *sources], capsys
        )
        assert code == ExitCode.SUCCESS and len(json.loads(out)) == people, (out, err)


def _error(argv: list[str], capsys, *, started: bool = False) -> str:
    """The one error line of a refused run (``started``: after the "watching" line, for an
    error found while reading the source)."""
    code, out, err = run_cli(argv, capsys)
    assert code == ExitCode.USER_ERROR, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 + started and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and not out.strip()
    return lines[-1]


def test_bad_inputs_give_one_line_errors(
    enrolled_gallery_path, scene_videos, tmp_path: Path, capsys, monkeypatch
) -> None:
    db = str(enrolled_gallery_path)
    video = str(scene_videos["single"][0])
    assert "not found" in _error(["watch", str(tmp_path / "nope.mp4"), "--db", db], capsys)
    assert "scheme" in _error(["watch", "ftp://camera/stream", "--db", db], capsys)
    assert "--fps" in _error(["watch", video, "--db", db, "--fps", "0"], capsys)
    assert "--min-faces" in _error(["watch", video, "--db", db, "--min-faces", "0"], capsys)
    assert "--detect-size" in _error(["watch", video, "--db", db, "--detect-size", "9"], capsys)
    bad_set = _error(["watch", video, "--db", db, "--set", "visits.nope=1"], capsys)
    assert "unknown key 'visits.nope'" in bad_set
    assert "key=value" in _error(["watch", video, "--db", db, "--set", "fps"], capsys)
    missing = tmp_path / "none.yaml"
    assert "not found" in _error(["watch", video, "--db", db, "--settings", str(missing)], capsys)
    no_dir = str(tmp_path / "no" / "such" / "dir" / "x.jsonl")
    assert "cannot write --tracks-jsonl" in _error(
        ["watch", video, "--db", db, "--tracks-jsonl", no_dir], capsys
    )
    # a model card without an impostor table: no operating point
    from marginface.errors import GalleryError
    from marginface.gallery import Gallery

    def no_table(*args: object, **kwargs: object) -> None:
        raise GalleryError("the model card has no impostor table: calibrate it")

    monkeypatch.setattr(Gallery, "operating_point", no_table)
    assert "impostor table" in _error(["watch", video, "--db", db], capsys)
    # a file that is not a video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    monkeypatch.undo()
    assert junk.name in _error(["watch", str(junk), "--db", db], capsys, started=True)


def test_an_empty_gallery_counts_strangers_and_a_new_db_is_created(
    scene_videos, tmp_path: Path, capsys
) -> None:
    """Before anyone is enrolled a camera still counts people: every visit is unknown, and
    ``--record`` groups the strangers for review (``--db`` made as ``enroll`` makes it)."""
    video, expected = scene_videos["two_at_once"]
    db = tmp_path / "new" / "gallery.db"
    code, out, err = run_cli(["watch", str(video), "--db", str(db), "--record"], capsys)
    assert code == ExitCode.SUCCESS, err
    assert "0 subjects (counting strangers)" in err
    assert f"{len(expected)} visits (0 named, {len(expected)} unknown)" in out
    from marginface.gallery import Gallery

    with Gallery.open(db, create=False) as gallery:
        assert gallery.visitors.count() == len(expected)  # two different people: two visitors
        assert all(f.has_crop for v in gallery.visitors.list() for f in v.faces)


def test_tracks_jsonl_and_annotate_show_every_face_and_its_name(
    scene_videos, enrolled_gallery_path, tmp_path: Path, capsys
) -> None:
    import av

    video, expected = scene_videos["single"]
    tracks, annotated = tmp_path / "tracks.jsonl", tmp_path / "annotated.mp4"
    argv = ["watch", str(video), "--db", str(enrolled_gallery_path), "--fps", "5"]
    argv += ["--tracks-jsonl", str(tracks), "--annotate", str(annotated)]
    code, _, err = run_cli(argv, capsys)
    assert code == ExitCode.SUCCESS, err
    with av.open(str(video)) as source, av.open(str(annotated)) as drawn:
        frames_in = sum(1 for _ in source.decode(video=0))
        frames_out = sum(1 for _ in drawn.decode(video=0))
        assert frames_out == frames_in  # every frame of the file, playable
    records = [json.loads(line) for line in tracks.read_text().splitlines()]
    step = round(25 / 5)
    assert [r["frame"] for r in records] == list(range(0, frames_in, step))
    assert all(r["t"] == pytest.approx(r["frame"] / 25, abs=1e-3) for r in records)
    faces = [f for r in records for f in r["tracks"]]
    assert faces and all(
        set(f) == {"track_id", "box", "name", "subject_id", "state"} for f in faces
    )
    assert {f["state"] for f in faces} <= {"undecided", "known", "unknown"}
    named = {f["name"] for f in faces if f["state"] == "known"}
    assert named == {expected[0]["identity"]}
    assert all(f["name"] is None for f in faces if f["state"] != "known")


def test_settings_file_and_set_reach_the_camera(
    scene_videos, enrolled_gallery_path, tmp_path: Path, capsys
) -> None:
    video, _ = scene_videos["single"]
    settings = tmp_path / "camera.yaml"
    settings.write_text("fps: 2\nvisits:\n  min_faces: 2\n  revisit_s: 5\n")
    tracks = tmp_path / "tracks.jsonl"
    argv = ["watch", str(video), "--db", str(enrolled_gallery_path), "--settings", str(settings)]
    argv += ["--set", "visits.min_faces=1", "--fps", "4", "--tracks-jsonl", str(tracks)]
    code, _, err = run_cli(argv, capsys)
    assert code == ExitCode.SUCCESS, err
    frames = [json.loads(line)["frame"] for line in tracks.read_text().splitlines()]
    assert frames[:3] == [0, 7, 13]  # --fps 4 over the file's 2: due at 0.25, 0.5 s


def test_watching_a_file_shows_how_far_it_is(
    scene_videos, enrolled_gallery_path, tmp_path: Path, capsys
) -> None:
    """Issue #25: the docs promised a progress bar for a file and none appeared (a terminal
    that reported no size got an empty bar). A terminal shows the bar; a pipe or a log gets a
    line at every tenth of the file."""
    from tests.terminal import run_in_terminal

    video, _ = scene_videos["stranger"]
    code, shown = run_in_terminal(["watch", str(video), "--db", str(enrolled_gallery_path)])
    assert code == 0, shown
    assert "watching:" in shown and "%|" in shown and " s [" in shown, shown[-2000:]
    code, _, err = run_cli(["watch", str(video), "--db", str(enrolled_gallery_path)], capsys)
    assert code == ExitCode.SUCCESS, err
    lines = [line for line in err.splitlines() if line.startswith("watched ")]
    assert len(lines) >= 5 and lines[0].endswith("(10 %)"), err
