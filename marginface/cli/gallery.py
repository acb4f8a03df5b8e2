"""CLI commands for ``marginface.gallery``: enroll, identify, verify, and ``gallery ...``.

All of them work on the same store as the service: ``--db`` or ``$MARGINFACE_GALLERY_URL``,
else ``~/.local/share/marginface/gallery.db``. Only ``enroll`` creates a gallery; the others
refuse one that does not exist, so a mistyped path is an error, not a new empty gallery.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from marginface.cli.exit_codes import ExitCode
from marginface.cli.gallery_access import (
    DB_OPTION,
    JSON_OPTION,
    console,
    emit_json,
    open_gallery,
    progress,
)
from marginface.errors import ConfigError, GalleryError

if TYPE_CHECKING:
    from marginface.gallery import RecognizedFace, Recognizer

_INDEX = typer.Option("exact", "--index", help="vector index: exact, faiss or milvus")
_MODEL = typer.Option(
    "default", "--model", "-m", help="embedding model: built-in name, model directory or .onnx file"
)
_DETECTOR = typer.Option("yunet", "--detector", help="face detector: yunet or mtcnn")
_THRESHOLD = typer.Option(
    None,
    "--threshold",
    "-t",
    help="explicit cosine decision threshold (default: derived from the model card)",
)
_FAR = typer.Option(
    None,
    "--far",
    help="verification's calibrated false-accept rate, e.g. \"1e-4\" (default: the card's)",
)
_FPIR = typer.Option(
    None,
    "--fpir",
    help="identification's target false positive "
    "identification rate, e.g. 1e-3 (default 1e-2): the share of people who "
    "are not enrolled that would be identified as someone",
)


def _require_gallery(db: str | None) -> None:
    """Refuse a gallery that does not exist (:class:`NotFoundError`), before any model loads.

    Only ``enroll`` creates a gallery; every other command needs an existing one, and a
    mistyped ``--db`` must fail at once with one clear line instead of creating folders and an
    empty gallery, or answering "unknown" for everyone. Loading the detector and embedder takes
    seconds, so this cheap check (no connection) comes first.
    """
    # CLI: keeps marginface --help quick
    from marginface.gallery import default_gallery_url
    from marginface.gallery.db import require_existing

    require_existing(db if db is not None else default_gallery_url())


def _recognizer(
    db: str | None,
    model: str,
    detector: str,
    index: str,
    threshold: float | None,
    far: str | None,
    *,
    create: bool = False,
    fpir: str | None = None,
    k: int | None = None,
    **kwargs: Any,
) -> Recognizer:
    """A recognizer over the gallery ``db``, deciding as the options say (one
    :class:`~marginface.decision.IdentificationPolicy`); ``create=False`` (all but ``enroll``)
    refuses a gallery that does not exist, before the models are loaded."""
    # CLI: keeps marginface --help quick
    from marginface.decision import DEFAULT_K, IdentificationPolicy
    from marginface.embed import Pipeline
    from marginface.gallery import Gallery, Recognizer

    if not create:
        _require_gallery(db)
    policy = IdentificationPolicy(
        fpir=fpir, threshold=threshold, k=DEFAULT_K if k is None else k, far=far
    )
    with progress(f"loading the model {model!r} and the detector {detector!r}"):
        pipeline = Pipeline.from_names(model=model, detector=detector, selection="all")
    card = pipeline.embedder.card
    with progress(f"opening the gallery and its {index} index"):
        gallery = Gallery.open(
            db,
            model_name=pipeline.embedder.name,
            dim=pipeline.embedder.embedding_dim,
            index=index,
            card=card,
            policy=policy,
            create=create,
        )
    if threshold is not None and (card.calibration is None or not card.calibration.thresholds):
        typer.secho(
            f"warning: model {card.name!r} is not calibrated; using the threshold "
            f"given ({threshold})",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return Recognizer(gallery, pipeline, **kwargs)


def _fmt_score(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def enroll(
    name: str = typer.Argument(..., help="the person's display name (duplicates get new ids)"),
    photos: list[Path] = typer.Argument(..., help="one or more photos of this person only"),
    to: str | None = typer.Option(None, "--to", help="add to this existing subject id instead"),
    metadata: str | None = typer.Option(None, "--metadata", help='JSON object, e.g. {"team": 3}'),
    multiple_faces: str = typer.Option(
        "reject",
        "--multiple-faces",
        help="photos with several faces: reject, largest, or central (nearest the centre)",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="enrol photos held back as someone else's (matches another "
        "subject, or the same photo is stored) or unlike the --to subject (mismatch)",
    ),
    store_crops: bool = typer.Option(
        False, "--store-crops", help="keep each enrolled face's aligned crop"
    ),
    db: str | None = DB_OPTION,
    model: str = _MODEL,
    detector: str = _DETECTOR,
    index: str = _INDEX,
    threshold: float | None = _THRESHOLD,
    as_json: bool = JSON_OPTION,
) -> None:
    """Enrol a person from photos: one new subject (or --to an existing one).

    A photo whose face is identified as another subject, or whose exact bytes are enrolled
    already, is held back (and with --to, a face unlike the subject's own): --force enrols it
    anyway. Faces are identified as identify does (--threshold as there). A new subject none of
    whose photos could be enrolled is not created (exit code 2)."""
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--metadata is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ConfigError("--metadata must be a JSON object")
    from marginface.gallery import MULTIPLE_FACES  # CLI: keeps marginface --help quick

    if multiple_faces not in MULTIPLE_FACES:
        raise ConfigError("--multiple-faces must be 'reject', 'largest' or 'central'")
    rec = _recognizer(
        db,
        model,
        detector,
        index,
        threshold,
        None,
        create=True,
        multiple_faces=multiple_faces,
        store_crops=store_crops,
    )
    try:
        with progress(f"enrolling {len(photos)} photo(s)"):
            if to is not None:
                result = rec.add_photos(to, [str(p) for p in photos], force=force)
            else:
                result = rec.enroll(name, [str(p) for p in photos], metadata=meta, force=force)
    finally:
        rec.gallery.close()
    if as_json:
        emit_json(result)
        return
    from rich.markup import escape  # CLI: keeps marginface --help quick
    from rich.table import Table

    table = Table(
        title=f"{result.subject.name}  ({result.subject.id}), {result.subject.n_faces} faces"
    )
    for col in ("photo", "result", "face id", "note"):
        table.add_column(col)
    colours = {"enrolled": "green", "near_duplicate": "yellow"}
    for o in result.photos:
        colour = "yellow" if o.forced or o.forceable else colours.get(o.status, "red")
        status = o.status.replace("_", " ") + (" (forced)" if o.forced else "")
        table.add_row(
            o.source,
            f"[{colour}]{escape(status)}[/]",
            "" if o.face_id is None else str(o.face_id),
            escape(o.message),
        )
    console().print(table)
    held = sum(o.forceable for o in result.photos)
    if held:
        typer.secho(
            f"{held} photo(s) held back as someone else's or unlike this subject; "
            "--force enrols them anyway",
            fg=typer.colors.YELLOW,
            err=True,
        )


def identify(
    photo: Path = typer.Argument(..., help="a photo; every face in it is answered"),
    k: int = typer.Option(5, "--k", help="neighbours in the k-NN vote"),
    source: str | None = typer.Option(
        None, "--log-source", help="log each answer as an event from this camera/door"
    ),
    db: str | None = DB_OPTION,
    model: str = _MODEL,
    detector: str = _DETECTOR,
    index: str = _INDEX,
    threshold: float | None = _THRESHOLD,
    fpir: str | None = _FPIR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Identify every face in a photo against the gallery; exit code 3 when it shows none.

    A face is named when its best subject passes the threshold that keeps the target FPIR
    (--fpir) for the gallery's current size; --threshold sets one instead.
    --json prints {"photo": ..., "faces": [...]}, each face in the REST API's
    shape: box, detection_score, landmarks, match, score, threshold, operating_point,
    candidates."""
    rec = _recognizer(db, model, detector, index, threshold, None, k=k, fpir=fpir)
    try:
        faces = rec.identify(str(photo), source=source)
    finally:
        rec.gallery.close()
    if as_json:
        # The local user may see every candidate (the API hides them from recognise-only keys).
        emit_json({"photo": str(photo), "faces": [f.answer(candidates=True) for f in faces]})
    elif faces:
        _print_faces(photo, faces)
        point = faces[0].identification.operating_point
        if point is not None:
            how = (
                f"target FPIR {point.target_fpir:g} for {point.gallery_subjects} subjects"
                if point.source == "fpir"
                else "the explicit threshold"
            )
            typer.echo(
                f"threshold {point.threshold:.3f}: {how}"
                + (f" ({point.note})" if point.note else "")
            )
    else:
        typer.echo(f"no face found in {photo}")
    if not faces:
        raise typer.Exit(ExitCode.NO_FACE)


def _print_faces(photo: Path, faces: list[RecognizedFace]) -> None:
    """The table of ``identify``: one row per face, its answer and the runner-up."""
    from rich.table import Table  # CLI: keeps marginface --help quick

    table = Table(title=f"{photo.name}: {len(faces)} face(s)")
    for col in ("#", "box", "answer", "subject id", "score", "threshold", "runner-up"):
        table.add_column(col, no_wrap=col in ("subject id", "answer"))
    for i, f in enumerate(faces, 1):
        ans = f.identification
        runner = next((c for c in ans.candidates if c.subject_id != ans.subject_id), None)
        table.add_row(
            str(i),
            ",".join(f"{v:.0f}" for v in f.box),
            f"[green]{ans.name}[/]" if ans.known else "[yellow]unknown[/]",
            ans.subject_id or "",
            _fmt_score(ans.score),
            _fmt_score(ans.threshold),
            f"{runner.name} {runner.score:.3f}" if runner else "",
        )
    console().print(table)


def verify(
    photo_a: Path = typer.Argument(..., help="first photo (its largest face)"),
    photo_b: str = typer.Argument(..., help="second photo, or subject:ID for an enrolled one"),
    db: str | None = DB_OPTION,
    model: str = _MODEL,
    detector: str = _DETECTOR,
    threshold: float | None = _THRESHOLD,
    far: str | None = _FAR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Are two photos (or a photo and an enrolled subject) the same person? Exit code 0 or 1.

    Exit code 0 when they are, 1 when they are not.
    Two photos need no gallery: --db is then not opened (nor created).
    subject:ID needs the existing gallery that holds the subject."""
    with tempfile.TemporaryDirectory(prefix="marginface-verify-") as scratch:
        if photo_b.startswith("subject:"):
            rec = _recognizer(db, model, detector, "exact", threshold, far)
        else:  # a throwaway gallery: the recognizer wants one, the comparison does not use it
            rec = _recognizer(
                str(Path(scratch) / "unused.db"),
                model,
                detector,
                "exact",
                threshold,
                far,
                create=True,
            )
        try:
            if photo_b.startswith("subject:"):
                result = rec.verify_subject(str(photo_a), photo_b.split(":", 1)[1])
            else:
                result = rec.verify(str(photo_a), photo_b)
        finally:
            rec.gallery.close()
    if as_json:
        emit_json(result)
    else:
        verdict = "[green]same person[/]" if result.same else "[red]different people[/]"
        console().print(f"{verdict}: cosine {result.score:.3f} (threshold {result.threshold:.3f})")
    raise typer.Exit(ExitCode.SUCCESS if result.same else ExitCode.DIFFERENT_PEOPLE)


def gallery_list(
    search: str | None = typer.Option(None, "--search", "-s", help="filter names"),
    limit: int | None = typer.Option(None, "--limit"),
    db: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List enrolled subjects."""
    with open_gallery(db) as g:
        subjects = g.subjects.list(search=search, limit=limit)
        stats = g.stats()
    if as_json:
        emit_json({"model": stats["model"], "dim": stats["dim"], "subjects": subjects})
        return
    from rich.table import Table  # CLI: keeps marginface --help quick

    table = Table(
        title=f"{len(subjects)} subject(s) - model {stats['model'] or 'none yet'}, "
        f"{stats['faces']} faces"
    )
    for col in ("id", "name", "faces", "metadata", "enrolled"):
        table.add_column(col)
    for s in subjects:
        table.add_row(
            s.id,
            s.name,
            str(s.n_faces),
            json.dumps(s.metadata, ensure_ascii=False) if s.metadata else "",
            s.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
        )
    console().print(table)


def gallery_delete(
    subject_ids: list[str] = typer.Argument(None, help="subject ids to delete"),
    face: list[int] = typer.Option(None, "--face", help="delete only this face id (repeatable)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    db: str | None = DB_OPTION,
    index: str = _INDEX,
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete subjects (all their faces and events) or single faces, from every store."""
    subject_ids, face = subject_ids or [], face or []
    if not subject_ids and not face:
        raise GalleryError("name subject ids to delete, or --face FACE_ID")
    with open_gallery(db, index) as g:
        for sid in subject_ids:
            g.subjects.get(sid)  # unknown ids fail before anything is deleted
        for fid in face:
            g.subjects.get_face(fid)
        if not yes and not as_json:
            what = ", ".join([*subject_ids, *(f"face {f}" for f in face)])
            if not typer.confirm(f"Delete {what}? This erases their embeddings", default=False):
                raise typer.Abort()
        report: dict[str, list[Any]] = {"subjects": [], "faces": []}
        for sid in subject_ids:
            report["subjects"].append({"id": sid, "faces_removed": g.subjects.delete(sid)})
        for fid in face:
            report["faces"].append(g.subjects.delete_face(fid).id)
    if as_json:
        emit_json(report)
    else:
        for s in report["subjects"]:
            typer.echo(f"deleted subject {s['id']} ({s['faces_removed']} faces)")
        for f in report["faces"]:
            typer.echo(f"deleted face {f}")


def gallery_export(
    out: str = typer.Argument("-", help="output JSON file, or - for stdout"),
    embeddings: bool = typer.Option(
        False, "--embeddings", help="include the embeddings (biometric data)"
    ),
    db: str | None = DB_OPTION,
) -> None:
    """Export subjects and faces as JSON (without embeddings unless asked)."""
    from marginface.gallery import to_jsonable  # CLI: keeps marginface --help quick

    with open_gallery(db) as g:
        data = g.export(include_embeddings=embeddings)
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False)
    if out == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(out).write_text(text + "\n", encoding="utf-8")
        typer.echo(f"exported {len(data['subjects'])} subjects to {out}", err=True)


def gallery_attendance(
    date: str | None = typer.Option(None, "--date", help="YYYY-MM-DD (default today)"),
    csv: bool = typer.Option(False, "--csv", help="CSV output"),
    source: list[str] | None = typer.Option(
        None, "--source", help="only this camera or door (repeat for a group of cameras)"
    ),
    db: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """First and last sighting per subject on a day (local time); for cameras, first in and
    last out from the visits."""
    sources = source or None
    with open_gallery(db) as g:
        if csv:
            sys.stdout.write(g.events.attendance_csv(date, sources=sources))
            return
        rows = g.events.attendance(date, sources=sources)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table  # CLI: keeps marginface --help quick

    table = Table(title=f"attendance {rows[0].date if rows else (date or 'today')}")
    for col in ("name", "subject id", "first seen", "last seen", "sightings", "sources"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name,
            r.subject_id,
            r.first_seen.strftime("%H:%M:%S"),
            r.last_seen.strftime("%H:%M:%S"),
            str(r.count),
            ", ".join(r.sources),
        )
    console().print(table)


def gallery_config(
    fpir: str | None = typer.Option(
        None,
        "--fpir",
        help="store the gallery's target FPIR (identification's operating "
        "point, e.g. 1e-3): every process and the service use it unless told otherwise",
    ),
    reset_fpir: bool = typer.Option(False, "--reset-fpir", help="back to the default, 1e-2"),
    db: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show, or set, the settings stored with the gallery."""
    from marginface.errors import ConfigError  # CLI: keeps marginface --help quick

    if fpir is not None and reset_fpir:
        raise ConfigError("give --fpir or --reset-fpir, not both")
    with open_gallery(db) as g:
        if fpir is not None or reset_fpir:
            g.set_target_fpir(None if reset_fpir else fpir)
        stored = g.stored_target_fpir()
        settings = {
            "target_fpir": g.fpir,
            "target_fpir_stored": stored is not None,
            "model": g.model_name,
            "subjects": g.subjects.count(),
            "faces": g.subjects.count_faces(),
        }
    if as_json:
        emit_json(settings)
        return
    how = "stored with the gallery" if stored is not None else "the default"
    typer.echo(
        f"target FPIR {settings['target_fpir']} ({how}); model {settings['model']}, "
        f"{settings['subjects']} subjects, {settings['faces']} faces"
    )


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
    app.command("enroll")(enroll)
    app.command("identify")(identify)
    app.command("verify")(verify)
    group = typer.Typer(
        help="Inspect and manage the gallery of enrolled subjects.", no_args_is_help=True
    )
    group.command("list")(gallery_list)
    group.command("delete")(gallery_delete)
    group.command("export")(gallery_export)
    group.command("attendance")(gallery_attendance)
    group.command("config")(gallery_config)
    app.add_typer(group, name="gallery")
