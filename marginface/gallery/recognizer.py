"""Photo-level enrolment, identification and verification over a :class:`Gallery` and a face
pipeline (``marginface.embed.Pipeline``): what the CLI and the service call."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marginface.align.image import describe_source
from marginface.embed import FaceLike, FacePipeline, Pipeline
from marginface.errors import GalleryError, ImageError, NoFaceError
from marginface.gallery.store import DEFAULT_K, Gallery, resolve_threshold
from marginface.gallery.types import (
    EnrollResult,
    PhotoOutcome,
    RecognizedFace,
    Verification,
)

__all__ = ["EnrollmentError", "Photo", "Recognizer"]

#: A photo's data: a file path, encoded bytes or an RGB array.
PhotoData = str | Path | bytes | np.ndarray
#: A photo: its data, or ``(label, data)``.
Photo = PhotoData | tuple[str, PhotoData]


class EnrollmentError(NoFaceError):
    """No photo of a new subject could be enrolled; ``photos`` says why for each one."""

    def __init__(self, message: str, photos: list[PhotoOutcome]) -> None:
        super().__init__(message)
        self.photos = photos


def _label(photo: Photo, i: int) -> tuple[str, PhotoData]:
    if isinstance(photo, tuple) and len(photo) == 2 and isinstance(photo[0], str):
        return photo[0], photo[1]
    if isinstance(photo, str | Path):
        return Path(photo).name, photo
    return f"photo[{i}]", photo


def _photo_hash(data: object) -> str | None:
    if isinstance(data, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(data)).hexdigest()
    if isinstance(data, str | Path):
        try:
            return hashlib.sha256(Path(data).expanduser().read_bytes()).hexdigest()
        except OSError:
            return None
    if isinstance(data, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    return None


def _area(face: FaceLike) -> float:
    b = np.asarray(face.box, dtype=np.float64)
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def _box(face: FaceLike) -> list[float]:
    return [round(float(x), 2) for x in np.asarray(face.box).ravel()[:4]]


def _encode_png(crop: np.ndarray) -> bytes:
    import cv2  # heavy: cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(crop[..., ::-1]))
    if not ok:  # pragma: no cover - cv2 failure
        raise GalleryError("could not encode the face crop")
    return buf.tobytes()


class Recognizer:
    """Enrol subjects from photos, identify every face in a photo, verify photos.

    ``multiple_faces``: what enrolment does with a photo showing several faces - ``"reject"``
    it (reported as ``multiple_faces``) or take the ``"largest"``. ``near_duplicate``: a photo
    whose face has cosine >= this to a face the subject already has (or to an earlier photo of
    the same batch) is not stored. ``store_crops`` keeps each enrolled face's aligned crop
    (PNG) in the gallery; photos themselves are never stored.
    """

    def __init__(
        self,
        gallery: Gallery,
        pipeline: FacePipeline,
        *,
        multiple_faces: Literal["reject", "largest"] = "reject",
        near_duplicate: float = 0.95,
        store_crops: bool = False,
        k: int = DEFAULT_K,
        threshold: float | None = None,
        far: str | None = None,
    ) -> None:
        if multiple_faces not in ("reject", "largest"):
            raise GalleryError("multiple_faces must be 'reject' or 'largest'")
        self.gallery = gallery
        self.pipeline = self._all_faces(pipeline)
        embedder = pipeline.embedder
        name, dim = embedder.name, embedder.embedding_dim
        if gallery.model_name is not None and (
            name != gallery.model_name or int(dim) != gallery.dim
        ):
            raise GalleryError(
                f"the gallery holds embeddings of model {gallery.model_name!r} "
                f"({gallery.dim}-d) but the pipeline uses {name!r} ({dim}-d): embeddings of "
                "different models are not comparable"
            )
        self.card = gallery.card if gallery.card is not None else embedder.card
        self.multiple_faces = multiple_faces
        self.near_duplicate = float(near_duplicate)
        self.store_crops = bool(store_crops)
        self.k = int(k)
        self.threshold_value = threshold if threshold is not None else gallery.default_threshold
        self.far = far or gallery.far

    @staticmethod
    def _all_faces(pipeline: FacePipeline) -> FacePipeline:
        """The pipeline, answering every face (selection "all")."""
        if pipeline.selection == "all":
            return pipeline
        if isinstance(pipeline, Pipeline):  # the same detector and embedder, every face
            return type(pipeline)(
                pipeline.detector, pipeline.embedder, selection="all",
                min_face_size=pipeline.min_face_size, score_threshold=pipeline.score_threshold,
                flip=pipeline.flip, max_pixels=pipeline.aligner.max_pixels)
        other = copy.copy(pipeline)  # a stand-in whose selection is a plain attribute
        setattr(other, "selection", "all")  # noqa: B010 (FacePipeline.selection is read-only)
        return other

    def threshold(self, threshold: float | None = None) -> float:
        """The decision threshold: explicit, else configured, else the model card's."""
        return resolve_threshold(self.card, threshold if threshold is not None
                                 else self.threshold_value, self.far)

    # -- faces ----------------------------------------------------------------------------------
    def faces(self, photo: Photo) -> list[FaceLike]:
        """Every face of a photo, largest first (:class:`ImageError` when unreadable)."""
        label, data = _label(photo, 0)
        if isinstance(data, str | Path):
            data = Path(data).expanduser()
        try:
            faces = list(self.pipeline.embed_image(data))
        except ImageError as exc:
            # The decoder names bytes by their length; the caller knows them by their label
            # (an uploaded file's name).
            described = describe_source(data)
            message = str(exc)
            if isinstance(data, bytes | bytearray | memoryview) and message.startswith(described):
                raise ImageError(label + message[len(described):]) from None
            raise
        return sorted(faces, key=_area, reverse=True)

    # -- enrolment ------------------------------------------------------------------------------
    def _prepare(
        self, photos: Sequence[Photo], existing: np.ndarray
    ) -> tuple[list[PhotoOutcome], list[np.ndarray], list[str | None], list[bytes | None]]:
        outcomes: list[PhotoOutcome] = []
        chosen: list[np.ndarray] = []
        hashes: list[str | None] = []
        crops: list[bytes | None] = []
        known = [existing] if len(existing) else []
        for i, photo in enumerate(photos):
            label, data = _label(photo, i)
            try:
                faces = self.faces((label, data))
            except ImageError as exc:
                outcomes.append(PhotoOutcome(label, "unreadable", str(exc)))
                continue
            if not faces:
                outcomes.append(PhotoOutcome(label, "no_face", "no face found"))
                continue
            note = ""
            if len(faces) > 1:
                if self.multiple_faces == "reject":
                    outcomes.append(PhotoOutcome(
                        label, "multiple_faces",
                        f"{len(faces)} faces found; enrol photos showing only this person",
                        box=_box(faces[0])))
                    continue
                note = f"{len(faces)} faces found; the largest was enrolled"
            face = faces[0]
            emb = np.asarray(face.embedding, dtype=np.float32).ravel()
            emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
            if known:
                sims = np.vstack(known) @ emb
                best = float(sims.max())
                if best >= self.near_duplicate:
                    outcomes.append(PhotoOutcome(
                        label, "near_duplicate",
                        f"nearly identical (cosine {best:.3f}) to a face this subject already "
                        "has", box=_box(face), similarity=round(best, 4)))
                    continue
            known.append(emb[None, :])
            chosen.append(emb)
            hashes.append(_photo_hash(data))
            crops.append(_encode_png(face.crop) if self.store_crops else None)
            outcomes.append(PhotoOutcome(label, "enrolled", note, box=_box(face)))
        return outcomes, chosen, hashes, crops

    @staticmethod
    def _with_ids(outcomes: list[PhotoOutcome], ids: list[int]) -> list[PhotoOutcome]:
        it = iter(ids)
        return [PhotoOutcome(o.source, o.status, o.message, next(it), o.box, o.similarity)
                if o.status == "enrolled" else o for o in outcomes]

    def enroll(
        self, name: str, photos: Sequence[Photo], *, metadata: dict[str, Any] | None = None
    ) -> EnrollResult:
        """Create a new subject ``name`` from photos, in one transaction.

        Raises :class:`EnrollmentError` (a :class:`NoFaceError`, with per-photo reasons) and
        creates nothing when no photo can be enrolled.
        """
        if not photos:
            raise GalleryError("enrolment needs at least one photo")
        outcomes, chosen, hashes, crops = self._prepare(photos, np.zeros((0, 1), np.float32))
        if not chosen:
            reasons = "; ".join(f"{o.source}: {o.status.replace('_', ' ')}" for o in outcomes)
            raise EnrollmentError(f"no photo of {name!r} could be enrolled ({reasons})", outcomes)
        subject = self.gallery.create_subject(
            name, metadata, embeddings=np.vstack(chosen), source_hashes=hashes,
            crops=crops if self.store_crops else None)
        ids = [f.id for f in self.gallery.faces(subject.id)]
        return EnrollResult(subject=subject, photos=self._with_ids(outcomes, ids), created=True)

    def add_photos(self, subject_id: str, photos: Sequence[Photo]) -> EnrollResult:
        """Add photos to an existing subject (one transaction); per-photo outcomes. Photos that
        cannot be enrolled are reported, not raised."""
        self.gallery.get_subject(subject_id)
        if not photos:
            raise GalleryError("enrolment needs at least one photo")
        _, existing = self.gallery.subject_embeddings(subject_id)
        outcomes, chosen, hashes, crops = self._prepare(photos, existing)
        ids: list[int] = []
        if chosen:
            ids = self.gallery.add_faces(subject_id, np.vstack(chosen), source_hashes=hashes,
                                         crops=crops if self.store_crops else None)
        return EnrollResult(subject=self.gallery.get_subject(subject_id),
                            photos=self._with_ids(outcomes, ids), created=False)

    # -- identification -------------------------------------------------------------------------
    def identify(
        self,
        photo: Photo,
        *,
        threshold: float | None = None,
        k: int | None = None,
        source: str | None = None,
    ) -> list[RecognizedFace]:
        """Answer every face in the photo (largest first): match or unknown, score,
        candidates. An empty list means no face. With ``source`` (camera or door name) each
        answer is logged as a recognition event."""
        thr = self.threshold(threshold)
        faces = self.faces(photo)
        if not faces:
            return []
        embs = np.vstack([np.asarray(f.embedding, dtype=np.float32).ravel() for f in faces])
        answers = self.gallery.identify(embs, threshold=thr, k=k or self.k)
        out = []
        for face, ans in zip(faces, answers, strict=True):
            out.append(RecognizedFace(
                box=_box(face), detection_score=round(float(face.score), 4),
                landmarks=[[round(float(x), 2) for x in p] for p in np.asarray(face.landmarks)],
                identification=ans))
            if source is not None:
                self.gallery.log_event(
                    source, subject_id=ans.subject_id, score=ans.score,
                    decision="match" if ans.known else "unknown",
                    details={"box": _box(face)})
        return out

    # -- verification ---------------------------------------------------------------------------
    def _one_face(self, photo: Photo, which: str) -> tuple[FaceLike, int]:
        faces = self.faces(photo)
        if not faces:
            label, _ = _label(photo, 0)
            raise NoFaceError(f"no face found in {which} ({label})")
        return faces[0], len(faces)

    def verify(self, photo_a: Photo, photo_b: Photo, *,
               threshold: float | None = None) -> Verification:
        """Whether the (largest) faces of two photos are the same person."""
        thr = self.threshold(threshold)
        fa, na = self._one_face(photo_a, "the first photo")
        fb, nb = self._one_face(photo_b, "the second photo")
        a = np.asarray(fa.embedding, dtype=np.float64).ravel()
        b = np.asarray(fb.embedding, dtype=np.float64).ravel()
        score = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
        return Verification(score=score, threshold=thr, same=score >= thr, box_a=_box(fa),
                            box_b=_box(fb), faces_a=na, faces_b=nb)

    def verify_subject(self, photo: Photo, subject_id: str, *,
                       threshold: float | None = None) -> Verification:
        """Whether the photo's (largest) face is the enrolled subject: best cosine to any of
        the subject's faces against the threshold."""
        thr = self.threshold(threshold)
        _, mat = self.gallery.subject_embeddings(subject_id)  # raises for unknown subjects
        if len(mat) == 0:
            raise GalleryError(f"subject {subject_id!r} has no enrolled faces")
        face, n = self._one_face(photo, "the photo")
        emb = np.asarray(face.embedding, dtype=np.float32).ravel()
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        score = float((mat @ emb).max())
        return Verification(score=score, threshold=thr, same=score >= thr, box_a=_box(face),
                            subject_id=subject_id, faces_a=n, faces_b=len(mat))
