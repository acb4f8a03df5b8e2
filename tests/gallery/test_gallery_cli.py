"""``marginface enroll / identify / verify / gallery ...`` through typer's CliRunner, on real
photos with the SFace baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from marginface.cli import ExitCode, main
from marginface.cli import gallery as gallery_cli
from marginface.errors import ConfigError, GalleryError, NotFoundError
from marginface.gallery import Gallery

#: The keys of ``RecognizedFace.answer()``, the shape the REST API answers each face with.
ANSWER_KEYS = {
    "box",
    "detection_score",
    "landmarks",
    "match",
    "score",
    "threshold",
    "operating_point",
    "candidates",
}
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    gallery_cli.register(app)
    return app


def test_cli_end_to_end(app, shared_data, tmp_path):
    root = shared_data / "celeba-dev"
    a, b = sorted(p.name for p in root.iterdir() if p.is_dir())[:2]
    photos_a = sorted((root / a).glob("*.jpg"))
    photos_b = sorted((root / b).glob("*.jpg"))
    runner = CliRunner()
    env = {"MARGINFACE_GALLERY_URL": str(tmp_path / "cli.db")}
    model = ["--model", "sface"]

    res = runner.invoke(
        app,
        ["enroll", "Alice", *map(str, photos_a[:3]), "--metadata", '{"team": 1}', "--json", *model],
        env=env,
    )
    assert res.exit_code == 0, res.output
    enrolled = json.loads(res.output)
    alice = enrolled["subject"]["id"]
    assert [p["status"] for p in enrolled["photos"]] == ["enrolled"] * 3
    assert enrolled["subject"]["metadata"] == {"team": 1}
    res = runner.invoke(app, ["enroll", "Bob", *map(str, photos_b[:2]), *model], env=env)
    assert res.exit_code == 0 and "Bob" in res.output and "enrolled" in res.output

    # the threshold meets the target FPIR (default 1e-2) for the gallery as it is: 2 subjects
    res = runner.invoke(app, ["identify", str(photos_a[5]), "--json", *model], env=env)
    assert res.exit_code == 0, res.output
    answer = json.loads(res.stdout)
    assert answer["photo"] == str(photos_a[5])
    ident = answer["faces"][0]
    # the one shape of an answered face, the REST API's: flat, candidates included locally
    assert set(ident) == ANSWER_KEYS and ident["candidates"][0]["subject_id"] == alice
    from marginface.card import ModelCard
    from marginface.decision import GalleryComposition, operating_point
    from marginface.embed import load_embedder

    card: ModelCard = load_embedder("sface").card
    point = ident["operating_point"]
    assert (point["source"], point["target_fpir"], point["gallery_subjects"]) == ("fpir", 0.01, 2)
    expected = operating_point(card.impostors, "1e-2", GalleryComposition({2: 1, 3: 1}))
    assert ident["threshold"] == pytest.approx(expected.threshold) == point["threshold"]
    assert ident["match"]["subject_id"] == alice
    res = runner.invoke(app, ["identify", str(photos_a[5]), "--fpir", "1e-4", *model], env=env)
    assert res.exit_code == 0 and "target FPIR 0.0001 for 2 subjects" in res.output
    res = runner.invoke(app, ["identify", str(photos_a[5]), "--fpir", "5", *model], env=env)
    assert isinstance(res.exception, GalleryError) and "FPIR" in str(res.exception)

    res = runner.invoke(
        app,
        ["identify", str(photos_a[5]), "-t", "0.363", "--json", "--log-source", "door", *model],
        env=env,
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["faces"][0]["match"]["subject_id"] == alice
    res = runner.invoke(app, ["identify", str(photos_b[4]), "-t", "0.363", *model], env=env)
    assert res.exit_code == 0 and "Bob" in res.output

    same = runner.invoke(
        app, ["verify", str(photos_a[0]), str(photos_a[6]), "-t", "0.363", *model], env=env
    )
    assert same.exit_code == 0 and "same person" in same.output
    # two photos need no gallery: a --db that does not exist is neither opened nor created
    missing = tmp_path / "typo" / "new.db"
    same = runner.invoke(
        app,
        ["verify", str(photos_a[0]), str(photos_a[6]), "-t", "0.363", "--db", str(missing), *model],
        env=env,
    )
    assert same.exit_code == 0 and not missing.parent.exists(), same.output
    diff = runner.invoke(
        app,
        ["verify", str(photos_a[0]), str(photos_b[0]), "-t", "0.363", "--json", *model],
        env=env,
    )
    assert (
        diff.exit_code == 1 and json.loads(diff.output[diff.output.index("{") :])["same"] is False
    )
    subj = runner.invoke(
        app, ["verify", str(photos_a[7]), f"subject:{alice}", "-t", "0.363", *model], env=env
    )
    assert subj.exit_code == 0, subj.output

    res = runner.invoke(app, ["gallery", "list", "--json"], env=env)
    listing = json.loads(res.output)
    assert listing["model"] == "sface" and sorted(s["name"] for s in listing["subjects"]) == [
        "Alice",
        "Bob",
    ]
    res = runner.invoke(app, ["gallery", "list"], env=env)
    assert "Alice" in res.output and "2 subject(s)" in res.output

    res = runner.invoke(app, ["gallery", "attendance", "--json"], env=env)
    assert [r["name"] for r in json.loads(res.output)] == ["Alice"]

    export = tmp_path / "export.json"
    res = runner.invoke(app, ["gallery", "export", str(export)], env=env)
    assert res.exit_code == 0
    data = json.loads(export.read_text())
    assert len(data["subjects"]) == 2 and "embedding" not in data["subjects"][0]["faces"][0]

    res = runner.invoke(app, ["gallery", "delete", "nope", "-y"], env=env)
    assert isinstance(res.exception, GalleryError)
    res = runner.invoke(app, ["gallery", "delete", alice], env=env, input="n\n")
    assert res.exit_code != 0  # declined: nothing deleted
    res = runner.invoke(app, ["gallery", "delete", alice, "-y", "--json"], env=env)
    assert json.loads(res.output)["subjects"] == [{"id": alice, "faces_removed": 3}]
    # --db overrides the environment (and one that does not exist is refused, not created)
    other = tmp_path / "other.db"
    res = runner.invoke(app, ["gallery", "list", "--json", "--db", str(other)], env=env)
    assert isinstance(res.exception, NotFoundError) and not other.exists()
    res = runner.invoke(app, ["gallery", "list", "--json"], env=env)
    assert [s["name"] for s in json.loads(res.output)["subjects"]] == ["Bob"]


@pytest.mark.parametrize(
    "command",
    [
        ["gallery", "list"],
        ["gallery", "export"],
        ["gallery", "attendance"],
        ["gallery", "delete", "0123456789abcdef", "--yes"],
        ["identify", "photo.jpg"],
        ["verify", "photo.jpg", "subject:0123456789abcdef"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_missing_gallery_is_refused_before_models_load(app, tmp_path, monkeypatch, command):
    """Only enroll creates a gallery: a mistyped --db is one clear error, leaves no folders
    or empty gallery behind, and is refused before seconds of model loading."""
    from marginface.embed import Pipeline

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded before the missing gallery was refused")

    monkeypatch.setattr(Pipeline, "from_names", no_models)
    missing = tmp_path / "typo" / "new.db"
    res = CliRunner().invoke(app, [*command, "--db", str(missing)])
    assert isinstance(res.exception, NotFoundError), res.output
    assert f"no gallery at {missing}" in str(res.exception)
    assert not missing.parent.exists()


def test_missing_gallery_exits_2_with_one_line(tmp_path, capsys):
    """Through the real entry point: exit code 2 (user error) and one ``error:`` line."""
    missing = tmp_path / "typo" / "new.db"
    with pytest.raises(SystemExit) as exc:
        main(["gallery", "list", "--db", str(missing)])
    assert exc.value.code == ExitCode.USER_ERROR == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no gallery at {missing}") and err.count("\n") == 1
    assert not missing.parent.exists()


def test_identify_without_a_face_exits_3(app, tmp_path, capsys):
    """A photo with no face is not success: exit code 3, with the (empty) answer printed."""
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    db = tmp_path / "g.db"
    Gallery.open(db).close()
    res = CliRunner().invoke(
        app, ["identify", str(blank), "--json", "--db", str(db), "--model", "sface"]
    )
    assert res.exit_code == ExitCode.NO_FACE == 3, res.output
    assert json.loads(res.stdout) == {"photo": str(blank), "faces": []}
    with pytest.raises(SystemExit) as exc:
        main(["identify", str(blank), "--db", str(db), "--model", "sface"])
    assert exc.value.code == 3
    assert f"no face found in {blank}" in capsys.readouterr().out


def test_exit_codes_are_stable_and_documented():
    """Scripts rely on these numbers; the README lists exactly them."""
    assert {c.name: int(c) for c in ExitCode} == {
        "SUCCESS": 0,
        "DIFFERENT_PEOPLE": 1,
        "USER_ERROR": 2,
        "NO_FACE": 3,
        "ABORTED": 130,
    }
    text = README.read_text(encoding="utf-8")
    section = text[text.index("Exit codes of `marginface`") :]
    section = section[: section.index("\n\n", section.index("| code |"))]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {int(c) for c in ExitCode}


def test_enroll_holds_back_someone_enrolled_until_forced(app, shared_data, tmp_path, capsys):
    """``enroll``: another photo of an enrolled person is not a new subject (exit code 2, one
    line naming her) unless --force; --to with another person's photo is a mismatch, shown with
    its score; --multiple-faces takes central."""
    root = shared_data / "celeba-dev"
    her = sorted((root / "celeb_7205").glob("*.jpg"))
    him = sorted((root / "celeb_7206").glob("*.jpg"))
    db = ["--db", str(tmp_path / "g.db"), "--model", "sface", "-t", "0.3724"]
    runner = CliRunner()
    res = runner.invoke(app, ["enroll", "Her", *map(str, her[:2]), "--json", *db])
    assert res.exit_code == 0, res.output
    her_id = json.loads(res.output)["subject"]["id"]

    with pytest.raises(SystemExit) as exc:
        main(["enroll", "Her again", str(her[2]), *db])
    assert exc.value.code == ExitCode.USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: 'Her again' was not enrolled") and err.count("\n") == 1
    assert "identified as 'Her'" in err and "--force" in err
    res = runner.invoke(app, ["enroll", "Her again", str(her[2]), "--force", "--json", *db])
    assert res.exit_code == 0, res.output
    (photo,) = json.loads(res.output)["photos"]
    assert photo["forced"] is True and photo["conflict"]["subject_id"] == her_id

    res = runner.invoke(app, ["enroll", "Her", str(him[0]), "--to", her_id, *db])
    assert res.exit_code == 0, res.output
    assert "mismatch" in res.output and "does not look like 'Her'" in res.output
    assert "--force enrols them anyway" in res.output
    res = runner.invoke(app, ["enroll", "Him", str(him[1]), "--multiple-faces", "all", *db])
    assert isinstance(res.exception, ConfigError) and "central" in str(res.exception)


def test_gallery_config_stores_the_target_fpir(app, tmp_path):
    db = str(tmp_path / "g.db")
    Gallery.open(db, model_name="m", dim=4).close()
    runner = CliRunner()
    res = runner.invoke(app, ["gallery", "config", "--db", db])
    assert res.exit_code == 0 and "target FPIR 1e-2 (the default)" in res.output
    res = runner.invoke(app, ["gallery", "config", "--db", db, "--fpir", "0.001", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["target_fpir"] == "1e-3"
    with Gallery.open(db, create=False) as g:
        assert g.fpir == "1e-3"
    res = runner.invoke(app, ["gallery", "config", "--db", db, "--fpir", "1e-3", "--reset-fpir"])
    assert isinstance(res.exception, ConfigError)
    res = runner.invoke(app, ["gallery", "config", "--db", db, "--reset-fpir"])
    assert res.exit_code == 0 and "target FPIR 1e-2 (the default)" in res.output


def test_a_first_enrolment_shows_its_progress(shared_data, tmp_path) -> None:
    """Issue #25: ``marginface enroll`` was silent for 54 s on a first run (loading the model
    and the index). At a terminal each slow step shows a spinner, then how long it took."""
    from tests.terminal import run_in_terminal

    photo = sorted((shared_data / "celeba-dev").glob("*/*.jpg"))[0]
    code, shown = run_in_terminal(["enroll", "Ada", str(photo), "--db", str(tmp_path / "g.db")])
    assert code == 0, shown
    for step in ("loading the model 'default'", "opening the gallery", "enrolling 1 photo(s)"):
        assert re.search(re.escape(step) + r"[^\r\n]*: \d+\.\d s", shown), (step, shown)
    assert "enrolled" in shown
