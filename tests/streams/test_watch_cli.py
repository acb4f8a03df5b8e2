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
    lines = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert len(lines) == len(expected) == 2
    for row in lines:
        assert set(row) >= REQUIRED and row["camera"] == "hall" and row["kind"] == "left"
        assert row["first_seen"] < row["last_seen"] and row["start_s"] < row["end_s"]
        assert row["faces"] >= 3
    assert sorted(r["name"] for r in lines) == sorted(p["identity"] for p in expected)
    assert out.count("arrived ") == 2 and out.count("left ") == 2
    assert "2 visits (2 named, 0 unknown)" in out.splitlines()[-1]
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
    (row,) = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert row["subject_id"] is None and row["name"] is None and row["faces"] == 2
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
            ["watch", str(video), "--db", str(db), "--camera", "door", "--record", "--store-crops"],
            capsys,
        )
        assert code == ExitCode.SUCCESS, err
    with Gallery.open(db, card=default_pipeline.embedder.card, create=False) as gallery:
        kinds = sorted(e.decision for e in gallery.events(source="door"))
        assert kinds == ["arrived"] * 3 + ["left"] * 3
        rows = gallery.attendance(sources=["door"])
        expected = sorted(p["identity"] for p in scene_videos["two_at_once"][1])
        assert sorted(r.name for r in rows) == expected and all(r.count == 1 for r in rows)
        (visitor,) = gallery.list_visitors()
        assert visitor.cameras == ["door"] and visitor.faces
        assert all(f.has_crop for f in visitor.faces)
        png = gallery.visitor_face_crop(visitor.faces[0].id)
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
    assert "no gallery" in _error(["watch", video, "--db", str(tmp_path / "none.db")], capsys)
    # a gallery without subjects
    from marginface.gallery import Gallery

    Gallery.open(tmp_path / "empty.db").close()
    assert "no subjects" in _error(["watch", video, "--db", str(tmp_path / "empty.db")], capsys)
    # a model card without an impostor table: no operating point
    from marginface.errors import GalleryError

    def no_table(*args: object, **kwargs: object) -> None:
        raise GalleryError("the model card has no impostor table: calibrate it")

    monkeypatch.setattr(Gallery, "operating_point", no_table)
    assert "impostor table" in _error(["watch", video, "--db", db], capsys)
    # a file that is not a video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    monkeypatch.undo()
    assert junk.name in _error(["watch", str(junk), "--db", db], capsys, started=True)


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
