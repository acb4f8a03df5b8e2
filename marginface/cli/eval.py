"""CLI commands for ``marginface.eval``: ``eval verify``, ``eval identify`` and ``calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from marginface.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from marginface.card import Calibration, ImpostorTail, ModelCard
    from marginface.embed import Embedder
    from marginface.eval.embeddings import EmbeddingCache, EmbedOptions

# The options the commands share, defined once (as in cli/gallery.py).
_PAIRS = typer.Option(
    ..., "--pairs", help="verification pairs: LFW pairs.txt, CSV path1,path2,same, or .bin"
)
_PAIRS_ROOT = typer.Option(
    None, "--root", help="image folder (default: the pairs file's folder; unused for .bin)"
)
_MODEL = typer.Option(
    "default",
    "--model",
    "-m",
    help="built-in name (sface, default), model directory, .onnx file or backbone.pth",
)
_ALIGNED = typer.Option(False, "--aligned", help="images are already aligned crops")
_FLIP = typer.Option(False, "--flip", help="flip test-time augmentation")
_DETECTOR = typer.Option("yunet", "--detector", help="face detector: yunet or mtcnn")
_FACE = typer.Option("largest", "--face", help="face of a multi-face photo: largest or central")
_VERIFY_FACE = typer.Option(
    None,
    "--face",
    help="face of a multi-face photo: largest or "
    "central (default: central for LFW pairs.txt, whose photos are "
    "centred on the person; largest for other pair sets)",
)
_MIN_FACE_SIZE = typer.Option(
    None, "--min-face-size", help="smallest face, pixels (default: the pipeline's)"
)
_BATCH_SIZE = typer.Option(64, "--batch-size", help="crops per embedding batch")
_PRECISION = typer.Option(
    "fp32",
    "--precision",
    help="fp32, or bf16 for PyTorch weights (about twice as fast on CPUs with AVX512-BF16 or AMX)",
)
_WORKERS = typer.Option(None, "--workers", help="decode/detect threads")
_CACHE_DIR = typer.Option(
    None,
    "--cache-dir",
    help="embedding cache folder (default: $MARGINFACE_CACHE_DIR or ~/.cache/marginface)",
)
_NO_CACHE = typer.Option(False, "--no-cache", help="neither read nor write the cache")
_QUIET = typer.Option(False, "--quiet", "-q", help="no progress bar")


def _options(
    aligned: bool,
    flip: bool,
    detector: str,
    face: str,
    batch_size: int,
    min_face_size: float | None,
) -> EmbedOptions:
    from marginface.eval.embeddings import EmbedOptions  # CLI: keeps marginface --help quick

    if face not in ("largest", "central"):
        raise ConfigError(f"--face must be 'largest' or 'central', got {face!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    return EmbedOptions(
        aligned=aligned,
        flip=flip,
        detector=detector,
        selection=face,
        min_face_size=min_face_size,
        batch_size=batch_size,
    )


def _cache(cache_dir: Path | None, no_cache: bool) -> EmbeddingCache | None:
    from marginface.eval.embeddings import EmbeddingCache  # CLI: keeps marginface --help quick

    return None if no_cache else EmbeddingCache(cache_dir)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def _echo_verification(report: dict[str, Any]) -> None:
    typer.echo(
        f"{Path(report['pairs']).name} ({report['pairs_format']}): {report['n_pairs']} pairs, "
        f"{report['n_folds']} folds, model {report['model']}"
    )
    opts = report["options"]
    if "face_selection" in opts:
        why = (
            f"the default for {report['pairs_format']} pairs; --face changes it"
            if opts.get("face_selection_default")
            else "--face"
        )
        typer.echo(f"  faces: the {opts['face_selection']} face of each photo ({why})")
    typer.echo(
        f"  accuracy  {report['accuracy_mean']:.2f} ± {report['accuracy_std']:.2f} %   "
        f"AUC {report['auc']:.4f}   EER {100 * report['eer']:.2f} %   "
        f"best threshold {report['threshold']:.4f}"
    )
    parts = []
    for far, tar in report["tar_at_far"].items():
        parts.append(f"{far}: {_fmt(tar)}" if tar is not None else f"{far}: not resolvable")
    typer.echo("  TAR@FAR   " + " | ".join(parts))
    for far, reason in report.get("tar_at_far_reasons", {}).items():
        typer.echo(f"            {far} {reason}")
    if report["n_failed_images"]:
        typer.secho(
            f"  {report['n_failed_images']} images failed ({report['n_failed_pairs']} pairs "
            "scored -1, listed in the report)",
            fg=typer.colors.YELLOW,
        )
    emb = report["embedding"]
    speed = f", {emb['images_per_second']} images/s" if emb.get("images_per_second") else ""
    typer.echo(f"  embeddings: {emb['computed']} computed, {emb['from_cache']} from cache{speed}")


def verify_command(
    pairs: Path = _PAIRS,
    root: Path | None = _PAIRS_ROOT,
    model: str = _MODEL,
    out: Path = typer.Option(Path("report.json"), "--out", "-o", help="JSON report to write"),
    aligned: bool = _ALIGNED,
    flip: bool = _FLIP,
    plots: Path | None = typer.Option(None, "--plots", help="folder for ROC/histogram PNGs"),
    detector: str = _DETECTOR,
    face: str | None = _VERIFY_FACE,
    min_face_size: float | None = _MIN_FACE_SIZE,
    batch_size: int = _BATCH_SIZE,
    precision: str = _PRECISION,
    workers: int | None = _WORKERS,
    cache_dir: Path | None = _CACHE_DIR,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
) -> None:
    """Verification protocol: 10-fold accuracy, AUC, EER, TAR@FAR, with a JSON report."""
    # CLI: keeps marginface --help quick
    from marginface.embed import load_embedder
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import default_face_selection, verify, write_report

    pair_set = load_pairs(pairs, root)
    selection = default_face_selection(pair_set) if face is None else face
    embedder = load_embedder(model, precision=precision)
    report, scored = verify(
        pair_set,
        embedder,
        _options(aligned, flip, detector, selection, batch_size, min_face_size),
        cache=_cache(cache_dir, no_cache),
        workers=workers,
        progress=not quiet,
        model_spec=model,
        face_selection_default=face is None,
    )
    if plots is not None:
        from marginface.eval.plots import verification_plots  # CLI: keeps marginface --help quick

        report["plots"] = verification_plots(report, scored.scores, pair_set.issame, plots)
    write_report(report, out)
    _echo_verification(report)
    typer.echo(f"  report: {out}" + (f", plots: {plots}" if plots else ""))


_IDENTIFY_SOURCES = "give --root DIR, or both --gallery LIST and --probes LIST"


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    """A comma-separated list of whole numbers (``10,100,1000``), or None when not given."""
    if text is None:
        return None
    try:
        values = tuple(int(v.strip().replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option} takes whole numbers separated by commas, got {text!r}"
        ) from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _k(row: dict[str, Any]) -> str:
    """A result row's photos per subject ("-" for a gallery as listed)."""
    return "-" if row["photos_per_subject"] is None else str(row["photos_per_subject"])


def _fnir(block: dict[str, Any], fpir: str) -> str:
    """One rule's FNIR at an FPIR, or "n/r" where not resolvable."""
    value = block["fnir_at_fpir"].get(fpir)
    return "n/r" if value is None else f"{value:.4f}"


def _echo_identification(report: dict[str, Any]) -> None:
    """An identification report as three small tables: FNIR at FPIR, the operating points,
    and (with several photos per subject) the subject-score rules compared."""
    typer.echo(f"open-set identification: model {report['model']} on {report['dataset']}")
    if report["mode"] == "folder":
        ids, draws = report["identities"], report["draws"]
        photos = sorted({d["non_mated_photos"] for d in draws})
        typer.echo(
            f"  {ids['total']:,} identities, {ids['photos']:,} photos; seed "
            f"{report['protocol']['seed']}, {len(draws)} draw(s) pooled"
        )
        typer.echo(
            f"  non-mated: {'/'.join(f'{v:,}' for v in ids['non_mated'])} identities, "
            f"{'/'.join(f'{v:,}' for v in photos)} photos per draw, never enrolled"
        )
        twins = sorted({len(d["same_person_left_out"]) for d in draws})
        if twins != [0]:
            typer.echo(
                f"  left out of the non-mated searches: {'/'.join(map(str, twins))} "
                "identities per draw that look like the same person as an enrolled one"
            )
    else:
        typer.echo(
            f"  gallery: {report['gallery_subjects']} subjects; probes: "
            f"{report['mated_probes']} mated, {report['non_mated_probes']} non-mated"
        )
    typer.echo(f"  non-mated probes: {report['non_mated_source']}")
    typer.echo(f"  gallery identities: {report['gallery_source']}")
    results = report["results"]
    fpirs = list(results[0]["rules"]["best_face"]["fnir_at_fpir"]) if results else []
    typer.echo(
        "  FNIR at FPIR (best face; threshold set on the non-mated searches; n/r: not "
        f"resolvable, fewer than {report['fnir_min_false_positives']}/FPIR different "
        "non-mated photos):"
    )
    typer.echo(
        "    gallery   K     mated  non-mated  rank-1"
        + "".join(f"  {'FNIR@' + f:>10}" for f in fpirs)
    )
    for r in results:
        best = r["rules"]["best_face"]
        cells = "".join(f"  {_fnir(best, f):>10}" for f in fpirs)
        typer.echo(
            f"    {r['gallery_size']:>7,} {_k(r):>3} {r['mated_searches']:>9,} "
            f"{r['non_mated_searches']:>10,}  {_fmt(best['rank1']):>6}{cells}"
        )
    if report.get("operating_points_error"):
        typer.secho(
            f"  no operating points: {report['operating_points_error']}", fg=typer.colors.YELLOW
        )
    if any(r["operating_points"] for r in results):
        typer.echo(
            "  operating points (threshold from the card's impostor table for the "
            "target FPIR and this gallery; measured on these searches, best face; the "
            "95% interval resamples identities, since one stranger's photos pass or "
            "fail together):"
        )
        typer.echo(
            "    gallery   K  target  threshold  measured FPIR (false pos./searches)"
            "  95% interval       ratio    FNIR"
        )
        notes: list[str] = []
        for r in results:
            for op in r["operating_points"]:
                target = op["target_fpir"] or "given"
                counts = f"({op['false_positives']:,}/{op['non_mated_searches']:,})"
                ci = op.get("measured_fpir_95ci_identities") or op["measured_fpir_95ci"]
                interval = "n/a" if ci is None else f"{ci[0]:.2g}-{ci[1]:.2g}"
                ratio = _fmt(op["ratio_to_target"], ".2f")
                mark = ""
                if op.get("note"):
                    if op["note"] not in notes:
                        notes.append(op["note"])
                    mark = f"  [{notes.index(op['note']) + 1}]"
                typer.echo(
                    f"    {r['gallery_size']:>7,} {_k(r):>3}  {target:>6}  "
                    f"{op['threshold']:>9.4f}  {_fmt(op['measured_fpir'], '.5f'):>7} "
                    f"{counts:<27}  {interval:<17} {ratio:>5}  "
                    f"{_fmt(op['fnir'], '.4f'):>6}{mark}"
                )
        for i, note in enumerate(notes, start=1):
            typer.echo(f"    [{i}] {note}")
    compared = [r for r in results if len(r["rules"]) > 1]
    if compared:
        typer.echo("  subject-score rules compared (K >= 2; FNIR at the same FPIR):")
        typer.echo(
            "    gallery   K  rule        rank-1" + "".join(f"  {'FNIR@' + f:>10}" for f in fpirs)
        )
        for r in compared:
            for rule, block in r["rules"].items():
                cells = "".join(f"  {_fnir(block, f):>10}" for f in fpirs)
                typer.echo(
                    f"    {r['gallery_size']:>7,} {_k(r):>3}  {rule:<10}  "
                    f"{_fmt(block['rank1']):>6}{cells}"
                )
    n_failed = len(report["failed_images"])
    if n_failed:
        typer.secho(
            f"  {n_failed} images failed, listed in the report: {report['failed_image_policy']}",
            fg=typer.colors.YELLOW,
        )
    typer.echo(
        f"  embeddings: {report['embedding']['computed']} computed, "
        f"{report['embedding']['from_cache']} from cache; search "
        f"{report['search_seconds']:.1f} s"
    )


def identify_command(
    root: Path | None = typer.Option(
        None,
        "--root",
        help="folder of identities <root>/<identity>/<image> (raw photos, or crops with --aligned)",
    ),
    gallery: Path | None = typer.Option(None, "--gallery", help="CSV path,subject (gallery)"),
    probes: Path | None = typer.Option(None, "--probes", help="CSV path,subject (probes)"),
    list_root: Path | None = typer.Option(
        None,
        "--list-root",
        help="base of relative paths in --gallery/--probes (default: each list's folder)",
    ),
    model: str = _MODEL,
    out: Path = typer.Option(Path("identify.json"), "--out", "-o", help="JSON report to write"),
    gallery_size: str | None = typer.Option(
        None,
        "--gallery-size",
        help="subjects enrolled, a comma list evaluated as nested "
        "galleries (e.g. 10,100,1000; default: 10, 100, ... and the largest that fits)",
    ),
    photos_per_subject: str | None = typer.Option(
        None,
        "--photos-per-subject",
        help="enrolment photos per subject, the first K usable "
        "ones in natural order; a comma list for several (default: 1)",
    ),
    repeats: int | None = typer.Option(
        None, "--repeats", help="independent random draws, pooled (default: 1)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the draws"),
    k: int = typer.Option(5, "--k", help="neighbours in the k-NN vote (the gallery's rule)"),
    target_fpir: str = typer.Option(
        "1e-2,1e-3",
        "--target-fpir",
        help="operating points: target FPIRs whose thresholds come from the card's impostor table",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="also measure at this explicit cosine threshold"
    ),
    plots: Path | None = typer.Option(None, "--plots", help="folder for FNIR/FPIR and CMC PNGs"),
    aligned: bool = _ALIGNED,
    flip: bool = _FLIP,
    detector: str = _DETECTOR,
    face: str = _FACE,
    min_face_size: float | None = _MIN_FACE_SIZE,
    batch_size: int = _BATCH_SIZE,
    precision: str = _PRECISION,
    workers: int | None = _WORKERS,
    cache_dir: Path | None = _CACHE_DIR,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
) -> None:
    """Open-set identification (NIST 1:N): FNIR against FPIR per gallery size and photos per
    subject, rank-1 and CMC, and the card's FPIR operating points measured."""
    # CLI: keeps marginface --help quick
    from marginface.embed import load_embedder
    from marginface.eval.identification import (
        OpenSetProtocol,
        identify_folder,
        identify_lists,
        split_from_lists,
    )
    from marginface.eval.verify import write_report

    if root is not None and (gallery or probes):
        raise ConfigError("give either --root or --gallery with --probes, not both")
    if root is None and (gallery is None or probes is None):
        raise ConfigError(_IDENTIFY_SOURCES)
    sizes = _int_list(gallery_size, "--gallery-size")
    photos = _int_list(photos_per_subject, "--photos-per-subject")
    if root is None and (sizes or photos or repeats):
        raise ConfigError(
            "--gallery-size, --photos-per-subject and --repeats apply to --root; "
            "explicit lists give the gallery as listed"
        )
    protocol = OpenSetProtocol(
        gallery_sizes=sizes,
        photos_per_subject=photos or (1,),
        seed=seed,
        repeats=1 if repeats is None else repeats,
        k=k,
        target_fpirs=tuple(f.strip() for f in target_fpir.split(",") if f.strip()),
        threshold=threshold,
    )
    options = _options(aligned, flip, detector, face, batch_size, min_face_size)
    split = (
        None if gallery is None or probes is None else split_from_lists(gallery, probes, list_root)
    )
    embedder = load_embedder(model, precision=precision)
    cache = _cache(cache_dir, no_cache)
    if split is not None:
        report, curves = identify_lists(
            split, embedder, options, protocol, cache=cache, workers=workers, progress=not quiet
        )
    elif root is not None:
        report, curves = identify_folder(
            root, embedder, options, protocol, cache=cache, workers=workers, progress=not quiet
        )
    else:  # pragma: no cover - ruled out above
        raise ConfigError(_IDENTIFY_SOURCES)
    if plots is not None:
        from marginface.eval.plots import identification_plots  # CLI: keeps --help quick

        report["plots"] = identification_plots(curves, plots, title=report["model"])
    write_report(report, out)
    _echo_identification(report)
    typer.echo(f"  report: {out}" + (f", plots: {plots}" if plots else ""))


def card_path_for(spec: str, embedder: Embedder) -> Path:
    """The card file that ``load_embedder(spec)`` reads, i.e. where calibration must go."""
    # CLI: keeps marginface --help quick
    from marginface.card import CARD_FILENAME
    from marginface.embed.loader import BUILTIN_DIR, resolve_builtin

    path = Path(spec).expanduser()
    if not path.exists() and not any(c in spec for c in "/\\"):
        target = resolve_builtin(spec)
        if target == "sface":
            return BUILTIN_DIR / "sface.json"
        if isinstance(target, Path):
            return target / CARD_FILENAME
    if path.is_dir():
        return path / CARD_FILENAME
    if path.suffix.lower() == ".json":
        return path
    if path.suffix.lower() == ".onnx":
        sidecar = path.with_suffix(".json")
        folder_card = path.parent / CARD_FILENAME
        if not sidecar.is_file() and folder_card.is_file():
            return folder_card
        return sidecar
    if path.suffix.lower() == ".safetensors" and (path.parent / CARD_FILENAME).is_file():
        return path.parent / CARD_FILENAME
    raise ModelError(
        f"{spec}: this model has no card file that marginface reads back (e.g. a .pth); "
        "export it to a model directory first"
    )


def _write_calibration(
    card_file: Path,
    embedder: Embedder,
    calibration: Calibration | None,
    impostors: ImpostorTail | None = None,
) -> ModelCard:
    from marginface.card import ModelCard  # CLI: keeps marginface --help quick

    if card_file.is_file():
        card = ModelCard.load(card_file)
        if card.name != embedder.card.name or card.embedding_dim != embedder.card.embedding_dim:
            raise ModelError(
                f"{card_file} describes model '{card.name}' ({card.embedding_dim}-d), not the "
                f"evaluated '{embedder.card.name}'; refusing to write its calibration there"
            )
    else:
        card = embedder.card.model_copy(deep=True)  # an ONNX file without a card gets one
    if calibration is not None:
        card.calibration = calibration
    if impostors is not None:
        card.impostors = impostors
    card.save(card_file)
    return card


def _trained_on(card: ModelCard, folder: Path) -> bool:
    """Whether the card says the model was trained on this folder's identities."""
    data = card.training.get("data") if isinstance(card.training, dict) else None
    path = data.get("path") if isinstance(data, dict) else None
    if not path:
        return False
    try:
        return Path(str(path)).expanduser().resolve() == folder.expanduser().resolve()
    except OSError:  # pragma: no cover - unreadable path
        return False


def _calibrate_impostors(
    folder: Path,
    embedder: Embedder,
    options: EmbedOptions,
    holdout: float,
    max_probes: int | None,
    cache: EmbeddingCache | None,
    workers: int | None,
    quiet: bool,
) -> ImpostorTail:
    # CLI: keeps marginface --help quick
    import numpy as np

    from marginface.eval.embeddings import embed_images
    from marginface.eval.identification import image_ref, scan_identities
    from marginface.eval.openset import describe, held_out, measure_impostors

    if _trained_on(embedder.card, folder):
        raise ConfigError(
            f"model '{embedder.card.name}' was trained on {folder} (its card says so): an "
            "impostor calibration there would be optimistic. Calibrate on identities the model "
            "never saw"
        )
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"--holdout must lie in [0, 1), got {holdout}")
    identities = {
        name: files
        for name, files in scan_identities(folder).items()
        if not held_out(name, holdout)
    }
    refs, labels = [], []
    for name, files in identities.items():
        for f in files:
            refs.append(image_ref(f))
            labels.append(name)
    emb = embed_images(refs, embedder, options, cache=cache, workers=workers, progress=not quiet)
    ok = np.asarray(emb.ok, dtype=bool)
    excluded = (
        f"identities with sha256(name) in the lowest {holdout:g} of the hash range held "
        "out (marginface.eval.openset.held_out)"
        if holdout > 0
        else ""
    )
    tail = measure_impostors(
        emb.embeddings[ok],
        [lab for lab, good in zip(labels, ok, strict=True) if good],
        dataset=folder.name,
        excluded=excluded,
        holdout=holdout,
        max_probes=max_probes,
        progress=not quiet,
    )
    summary = describe(tail)
    typer.echo(
        f"impostor calibration of '{embedder.name}' on {folder.name}: "
        f"{tail.identities} identities, {tail.probes} probes, {tail.comparisons:,} "
        f"non-mated comparisons ({int((~ok).sum())} images failed, left out)"
    )
    for key, th in summary["far_thresholds"].items():
        typer.echo(
            f"  1:1 FAR {key}: " + (f"threshold {th:.4f}" if th is not None else "not resolvable")
        )
    typer.echo(f"  highest impostor score: {tail.max_impostor:.4f}")
    return tail


def calibrate_command(
    pairs: Path | None = typer.Option(
        None,
        "--pairs",
        help="verification pairs (LFW-format pairs.txt or CSV) for the 1:1 thresholds",
    ),
    root: Path | None = _PAIRS_ROOT,
    impostors: Path | None = typer.Option(
        None,
        "--impostors",
        help="identity folder (<dir>/<identity>/<image>) of people the "
        "model was not trained on: measures the impostor distribution that open-set "
        "identification derives its thresholds from",
    ),
    holdout: float = typer.Option(
        0.2,
        "--holdout",
        help="share of --impostors identities left out of the calibration (for validating it)",
    ),
    max_probes: int | None = typer.Option(
        None,
        "--max-probes",
        min=1,
        help="search at most this many --impostors faces (default: all)",
    ),
    model: str = _MODEL,
    write: bool = typer.Option(False, "--write", help="write the calibration into the card"),
    fars: str = typer.Option("1e-2,1e-3,1e-4", "--fars", help="target FARs, comma-separated"),
    default_far: str = typer.Option("1e-3", "--default-far", help="the card's default FAR"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="name of the calibration set (default: from the pairs path)"
    ),
    aligned: bool = _ALIGNED,
    flip: bool = _FLIP,
    detector: str = _DETECTOR,
    face: str = _FACE,
    batch_size: int = _BATCH_SIZE,
    precision: str = _PRECISION,
    workers: int | None = _WORKERS,
    cache_dir: Path | None = _CACHE_DIR,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
) -> None:
    """Calibrate a model's thresholds and write them into its card: 1:1 thresholds for target
    FARs on verification pairs (--pairs), and the impostor distribution that open-set
    identification's FPIR operating points come from (--impostors)."""
    # CLI: keeps marginface --help quick
    from marginface.decision.rates import far_key
    from marginface.embed import load_embedder
    from marginface.eval.calibrate import calibrate
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import score_pairs

    if pairs is None and impostors is None:
        raise ConfigError(
            "give --pairs (1:1 thresholds), --impostors (open-set identification) or both"
        )
    targets = tuple(far_key(f.strip()) for f in fars.split(",") if f.strip())
    embedder = load_embedder(model, precision=precision)
    card_file = card_path_for(model, embedder) if write else None
    options = _options(aligned, flip, detector, face, batch_size, None)
    cache = _cache(cache_dir, no_cache)
    cal = None
    if pairs is not None:
        pair_set = load_pairs(pairs, root)
        scored = score_pairs(
            pair_set, embedder, options, cache=cache, workers=workers, progress=not quiet
        )
        keep = ~scored.failed  # failed images would bias the thresholds: leave those pairs out
        name = dataset or f"{Path(pair_set.source).parent.name}/{Path(pair_set.source).name}"
        cal = calibrate(
            scored.scores[keep],
            pair_set.issame[keep],
            targets,
            dataset=name,
            default_far=default_far,
        )
        typer.echo(
            f"calibration of '{embedder.name}' on {name}: {cal.n_pairs} pairs "
            f"({cal.n_negative_pairs} mismatched), {int(scored.failed.sum())} pairs with "
            "failed images left out"
        )
        for key in targets:
            if key in cal.thresholds:
                typer.echo(f"  FAR {key}: threshold {cal.thresholds[key]:.4f}")
            else:
                typer.echo(
                    f"  FAR {key}: not resolvable (needs at least "
                    f"{round(1 / float(key))} mismatched pairs)"
                )
        typer.echo(f"  default FAR: {cal.default_far}")
    tail = None
    if impostors is not None:
        tail = _calibrate_impostors(
            impostors, embedder, options, holdout, max_probes, cache, workers, quiet
        )
    if card_file is not None:
        _write_calibration(card_file, embedder, cal, tail)
        typer.echo(f"  written to {card_file}")
    else:
        typer.echo("  (not written; add --write to store it in the model card)")


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
    eval_app = typer.Typer(
        name="eval",
        help="Evaluate an embedding model: verification and identification protocols.",
        no_args_is_help=True,
    )
    eval_app.command("verify")(verify_command)
    eval_app.command("identify")(identify_command)
    app.add_typer(eval_app, name="eval")
    app.command("calibrate")(calibrate_command)
