"""CLI commands for ``marginface.eval``: ``eval verify``, ``eval identify`` and ``calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from marginface.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from marginface.card import Calibration, ModelCard
    from marginface.embed import Embedder
    from marginface.eval.embeddings import EmbeddingCache, EmbedOptions

# The options the commands share, defined once (as in cli/gallery.py).
_PAIRS = typer.Option(..., "--pairs", help="verification pairs: LFW pairs.txt, CSV "
                      "path1,path2,same, or .bin")
_PAIRS_ROOT = typer.Option(None, "--root", help="image folder (default: the pairs file's "
                           "folder; unused for .bin)")
_MODEL = typer.Option("default", "--model", "-m", help="built-in name (sface, default), model "
                      "directory, .onnx file or backbone.pth")
_ALIGNED = typer.Option(False, "--aligned", help="images are already aligned crops")
_FLIP = typer.Option(False, "--flip", help="flip test-time augmentation")
_DETECTOR = typer.Option("yunet", "--detector", help="face detector: yunet or mtcnn")
_FACE = typer.Option("largest", "--face", help="face of a multi-face photo: largest or central")
_MIN_FACE_SIZE = typer.Option(None, "--min-face-size", help="smallest face, pixels (default: "
                              "the pipeline's)")
_BATCH_SIZE = typer.Option(64, "--batch-size", help="crops per embedding batch")
_PRECISION = typer.Option("fp32", "--precision", help="fp32, or bf16 for PyTorch weights (about "
                          "twice as fast on CPUs with AVX512-BF16 or AMX)")
_WORKERS = typer.Option(None, "--workers", help="decode/detect threads")
_CACHE_DIR = typer.Option(None, "--cache-dir", help="embedding cache folder (default: "
                          "$MARGINFACE_CACHE_DIR or ~/.cache/marginface)")
_NO_CACHE = typer.Option(False, "--no-cache", help="neither read nor write the cache")
_QUIET = typer.Option(False, "--quiet", "-q", help="no progress bar")


def _options(aligned: bool, flip: bool, detector: str, face: str, batch_size: int,
             min_face_size: float | None) -> EmbedOptions:
    from marginface.eval.embeddings import EmbedOptions  # CLI: keeps marginface --help quick

    if face not in ("largest", "central"):
        raise ConfigError(f"--face must be 'largest' or 'central', got {face!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    return EmbedOptions(aligned=aligned, flip=flip, detector=detector, selection=face,
                        min_face_size=min_face_size, batch_size=batch_size)


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
            "scored -1, listed in the report)", fg=typer.colors.YELLOW,
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
    face: str = _FACE,
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
    from marginface.eval.verify import verify, write_report

    pair_set = load_pairs(pairs, root)
    embedder = load_embedder(model, precision=precision)
    report, scored = verify(
        pair_set, embedder, _options(aligned, flip, detector, face, batch_size, min_face_size),
        cache=_cache(cache_dir, no_cache), workers=workers, progress=not quiet,
        model_spec=model,
    )
    if plots is not None:
        from marginface.eval.plots import verification_plots  # CLI: keeps marginface --help quick

        report["plots"] = verification_plots(report, scored.scores, pair_set.issame, plots)
    write_report(report, out)
    _echo_verification(report)
    typer.echo(f"  report: {out}" + (f", plots: {plots}" if plots else ""))


def identify_command(
    root: Path | None = typer.Option(None, "--root", help="folder of identities "
                                     "<root>/<subject>/<image>"),
    gallery: Path | None = typer.Option(None, "--gallery", help="CSV path,subject (gallery)"),
    probes: Path | None = typer.Option(None, "--probes", help="CSV path,subject (probes)"),
    list_root: Path | None = typer.Option(None, "--list-root", help="base of relative paths "
                                          "in --gallery/--probes (default: each list's folder)"),
    model: str = _MODEL,
    out: Path = typer.Option(Path("identify.json"), "--out", "-o", help="JSON report to write"),
    k: int = typer.Option(5, "--k", help="neighbours in the k-NN vote (the gallery's rule)"),
    distractors: bool = typer.Option(True, "--distractors/--no-distractors",
                                     help="single-image subjects join the gallery"),
    unknown_fraction: float = typer.Option(0.0, "--unknown-fraction", help="share of subjects "
                                           "kept out of the gallery as non-mated probes"),
    seed: int = typer.Option(0, "--seed", help="seed for choosing the held-out subjects"),
    threshold: float | None = typer.Option(None, "--threshold", help="explicit cosine threshold "
                                           "(default: the card's calibrated one)"),
    far: str | None = typer.Option(None, "--far", help="which calibrated FAR's threshold to use "
                                   "(default: the card's default)"),
    plots: Path | None = typer.Option(None, "--plots", help="folder for CMC/DIR PNGs"),
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
    """Identification protocol: rank-1/5 and CMC (closed set), DIR at FPIR (open set)."""
    # CLI: keeps marginface --help quick
    from marginface.embed import load_embedder
    from marginface.eval.calibrate import require_threshold
    from marginface.eval.identification import identify, split_from_folder, split_from_lists
    from marginface.eval.verify import write_report

    if root is not None and (gallery or probes):
        raise ConfigError("give either --root or --gallery with --probes, not both")
    if root is not None:
        split = split_from_folder(root, distractors=distractors,
                                  unknown_fraction=unknown_fraction, seed=seed)
    elif gallery is not None and probes is not None:
        split = split_from_lists(gallery, probes, list_root)
    else:
        raise ConfigError("give --root DIR, or both --gallery LIST and --probes LIST")
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    embedder = load_embedder(model, precision=precision)
    card = embedder.card
    th: float | None
    source = ""
    if threshold is not None:
        th = require_threshold(card, far, explicit=threshold)
        source = "explicit (--threshold)"
    elif card.calibration is not None and card.calibration.thresholds:
        th = require_threshold(card, far)
        cal = card.calibration
        source = f"calibrated, FAR {far or cal.default_far} on {cal.dataset or 'unnamed set'}"
    else:
        th = None
        typer.secho(
            f"warning: model '{card.name}' is NOT calibrated: rates at an operating threshold "
            "are not reported. Run `marginface calibrate --model ... --write` or pass "
            "--threshold.", fg=typer.colors.RED, err=True,
        )
    report, curves = identify(
        split, embedder, _options(aligned, flip, detector, face, batch_size, min_face_size),
        k=k, threshold=th, threshold_source=source, cache=_cache(cache_dir, no_cache),
        workers=workers, progress=not quiet,
    )
    if plots is not None:
        from marginface.eval.plots import plot_cmc, plot_dir  # CLI: keeps marginface --help quick

        files = {}
        if curves["cmc"]:
            files["cmc"] = str(plot_cmc(curves["cmc"], plots / "cmc.png",
                                        title=f"CMC - {report['model']}"))
        for rule, (m, c, n) in curves["open_set"].items():
            files[f"dir_{rule}"] = str(plot_dir(m, c, n, plots / f"dir_{rule}.png",
                                                title=f"open set ({rule}) - {report['model']}"))
        report["plots"] = files
    write_report(report, out)
    typer.echo(
        f"gallery: {report['gallery_images_used']} images of {report['gallery_subjects_used']} "
        f"subjects ({report['distractors']} distractors); probes: {report['mated_probes']} "
        f"mated, {report['non_mated_probes']} non-mated"
    )
    for rule, block in report["rules"].items():
        line = f"  {rule:<8} rank-1 {_fmt(block.get('rank1'))}  rank-5 {_fmt(block.get('rank5'))}"
        for key, v in block.get("dir_at_fpir", {}).items():
            line += f"  DIR@FPIR {key} {_fmt(v)}"
        at = block.get("at_threshold")
        if at:
            line += (f"  at t={at['threshold']:.3f}: identified {_fmt(at['identification_rate'])}"
                     f", false alarms {_fmt(at['false_alarm_rate'])}")
        typer.echo(line)
    n_failed = len(report["failed_gallery_images"]) + len(report["failed_probe_images"])
    if n_failed:
        typer.secho(f"  {n_failed} images failed (listed in the report)", fg=typer.colors.YELLOW)
    typer.echo(f"  report: {out}")


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


def _write_calibration(card_file: Path, embedder: Embedder,
                       calibration: Calibration) -> ModelCard:
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
    card.calibration = calibration
    card.save(card_file)
    return card


def calibrate_command(
    pairs: Path = _PAIRS,
    root: Path | None = _PAIRS_ROOT,
    model: str = _MODEL,
    write: bool = typer.Option(False, "--write", help="write the thresholds into the model card"),
    fars: str = typer.Option("1e-2,1e-3,1e-4", "--fars", help="target FARs, comma-separated"),
    default_far: str = typer.Option("1e-3", "--default-far", help="the card's default FAR"),
    dataset: str | None = typer.Option(None, "--dataset", help="name of the calibration set "
                                       "(default: from the pairs path)"),
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
    """Compute cosine thresholds for target FARs on a verification set (and write them)."""
    # CLI: keeps marginface --help quick
    from marginface.embed import load_embedder
    from marginface.eval.calibrate import calibrate
    from marginface.eval.metrics import far_key
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import score_pairs

    targets = tuple(far_key(f.strip()) for f in fars.split(",") if f.strip())
    pair_set = load_pairs(pairs, root)
    embedder = load_embedder(model, precision=precision)
    card_file = card_path_for(model, embedder) if write else None
    scored = score_pairs(
        pair_set, embedder, _options(aligned, flip, detector, face, batch_size, None),
        cache=_cache(cache_dir, no_cache), workers=workers, progress=not quiet,
    )
    keep = ~scored.failed  # failed images would bias the thresholds: leave those pairs out
    name = dataset or f"{Path(pair_set.source).parent.name}/{Path(pair_set.source).name}"
    cal = calibrate(scored.scores[keep], pair_set.issame[keep], targets, dataset=name,
                    default_far=default_far)
    typer.echo(f"calibration of '{embedder.name}' on {name}: {cal.n_pairs} pairs "
               f"({cal.n_negative_pairs} mismatched), {int(scored.failed.sum())} pairs with "
               "failed images left out")
    for key in targets:
        if key in cal.thresholds:
            typer.echo(f"  FAR {key}: threshold {cal.thresholds[key]:.4f}")
        else:
            typer.echo(f"  FAR {key}: not resolvable (needs at least {round(1 / float(key))} "
                       f"mismatched pairs)")
    typer.echo(f"  default FAR: {cal.default_far}")
    if card_file is not None:
        _write_calibration(card_file, embedder, cal)
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
