"""``marginface enroll / identify / verify / gallery ...`` through typer's CliRunner, on real
photos with the SFace baseline."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from marginface.cli import gallery as gallery_cli
from marginface.errors import GalleryError


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

    res = runner.invoke(app, ["enroll", "Alice", *map(str, photos_a[:3]), "--metadata",
                              '{"team": 1}', "--json", *model], env=env)
    assert res.exit_code == 0, res.output
    enrolled = json.loads(res.output)
    alice = enrolled["subject"]["id"]
    assert [p["status"] for p in enrolled["photos"]] == ["enrolled"] * 3
    assert enrolled["subject"]["metadata"] == {"team": 1}
    res = runner.invoke(app, ["enroll", "Bob", *map(str, photos_b[:2]), *model], env=env)
    assert res.exit_code == 0 and "Bob" in res.output and "enrolled" in res.output

    # the threshold comes from the model card's calibration; a FAR it lacks is a clear error
    res = runner.invoke(app, ["identify", str(photos_a[5]), "--json", *model], env=env)
    assert res.exit_code == 0, res.output
    ident = json.loads(res.output[res.output.index("{"):])["faces"][0]["identification"]
    from marginface.card import ModelCard
    from marginface.embed import load_embedder

    card: ModelCard = load_embedder("sface").card
    assert ident["threshold"] == pytest.approx(card.calibration.threshold())
    assert ident["match"]["subject_id"] == alice
    res = runner.invoke(app, ["identify", str(photos_a[5]), "--far", "1e-9", *model], env=env)
    assert isinstance(res.exception, GalleryError)
    assert "no calibrated threshold for FAR=1e-9" in str(res.exception)

    res = runner.invoke(app, ["identify", str(photos_a[5]), "-t", "0.363", "--json",
                              "--log-source", "door", *model], env=env)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["faces"][0]["identification"]["match"]["subject_id"] == alice
    res = runner.invoke(app, ["identify", str(photos_b[4]), "-t", "0.363", *model], env=env)
    assert res.exit_code == 0 and "Bob" in res.output

    same = runner.invoke(app, ["verify", str(photos_a[0]), str(photos_a[6]), "-t", "0.363",
                               *model], env=env)
    assert same.exit_code == 0 and "same person" in same.output
    diff = runner.invoke(app, ["verify", str(photos_a[0]), str(photos_b[0]), "-t", "0.363",
                               "--json", *model], env=env)
    assert diff.exit_code == 1 and json.loads(diff.output[diff.output.index("{"):])[
        "same"] is False
    subj = runner.invoke(app, ["verify", str(photos_a[7]), f"subject:{alice}", "-t", "0.363",
                               *model], env=env)
    assert subj.exit_code == 0, subj.output

    res = runner.invoke(app, ["gallery", "list", "--json"], env=env)
    listing = json.loads(res.output)
    assert listing["model"] == "sface" and sorted(s["name"] for s in listing["subjects"]) == [
        "Alice", "Bob"]
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
    # --db overrides the environment
    other = tmp_path / "other.db"
    res = runner.invoke(app, ["gallery", "list", "--json", "--db", str(other)], env=env)
    assert json.loads(res.output)["subjects"] == []
    res = runner.invoke(app, ["gallery", "list", "--json"], env=env)
    assert [s["name"] for s in json.loads(res.output)["subjects"]] == ["Bob"]
