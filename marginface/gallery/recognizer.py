"""Photo-level enrolment, identification and verification over a :class:`Gallery` and a face
pipeline (``marginface.embed.Pipeline``): what the CLI and the service call."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from marginface.align.detection import Detection, select_faces
from marginface.align.image import describe_source
from marginface.decision import IdentificationPolicy, OperatingPoint
from marginface.embed import FaceLike, FacePipeline, Pipeline, l2_normalize
from marginface.errors import ConflictError, GalleryError, ImageError, NoFaceError, NotFoundError
from marginface.gallery.likeness import unlike
from marginface.gallery.store import Gallery
from marginface.gallery.subjects import Guard
from marginface.gallery.types import (
    EnrollResult,
    FaceRecord,
    Identification,
    PhotoConflict,
    PhotoOutcome,
    PhotoStatus,
    RecognizedFace,
    Subject,
    Verification,
)
from marginface.imaging import encode_png

__all__ = [
    "MULTIPLE_FACES",
    "EnrollmentError",
    "IdentityConflictError",
    "MismatchForceError",
    "MultipleFaces",
    "Photo",
    "Recognizer",
]

#: What enrolment does with a photo showing several faces: refuse it, take the largest face,
#: or the face nearest the photo's centre (``select_faces``'s ``central`` rule).
MultipleFaces = Literal["reject", "largest", "central"]
MULTIPLE_FACES: tuple[str, ...] = ("reject", "largest", "central")

#: A photo's data: a file path, encoded bytes or an RGB array.
PhotoData = str | Path | bytes | np.ndarray
#: A photo: its data, or ``(label, data)``.
Photo = PhotoData | tuple[str, PhotoData]


class EnrollmentError(NoFaceError):
    """No photo of a new subject could be enrolled; ``photos`` says why for each one."""

    def __init__(self, message: str, photos: list[PhotoOutcome]) -> None:
        super().__init__(message)
        self.photos = photos


class IdentityConflictError(ConflictError):
    """A new subject was not created: every photo showing a usable face belongs to someone
    enrolled already (identification names another subject, or the same photo is stored for
    one). ``photos`` gives each photo's outcome; enrolling with ``force`` stores them anyway.
    A conflict with what is stored, not bad input: the same request with ``force`` succeeds."""

    def __init__(self, message: str, photos: list[PhotoOutcome]) -> None:
        super().__init__(message)
        self.photos = photos


class MismatchForceError(GalleryError):
    """``force`` was asked for, but a photo does not look like the subject it is added to
    (``mismatch``) and this call may not override that (``force_mismatch=False``: the service
    leaves it to admin keys). Nothing was stored; ``photos`` are the refused photos' outcomes
    (the other photos were not stored either)."""

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


def _unit(face: FaceLike) -> np.ndarray:
    """A face's embedding as one float32 vector of unit length (:func:`l2_normalize`)."""
    return l2_normalize(np.asarray(face.embedding, dtype=np.float32).ravel())


def _box(face: FaceLike) -> list[float]:
    return [round(float(x), 2) for x in np.asarray(face.box).ravel()[:4]]


def _identified_as(other: PhotoConflict) -> str:
    return (
        f"identified as {other.name!r} ({other.subject_id}): score {other.score:.3f} >= "
        f"threshold {other.threshold:.3f}"
    )


def _held_reasons(held: Sequence[PhotoOutcome]) -> str:
    """One line naming each held-back photo and why (the subject it collides with)."""
    return "; ".join(f"{o.source}: {o.message}" for o in held)


class Recognizer:
    """Enrol subjects from photos, identify every face in a photo, verify photos.

    ``multiple_faces``: what enrolment does with a photo showing several faces by default
    (each enrolment may choose otherwise) - ``"reject"`` it (reported as ``multiple_faces``),
    take the ``"largest"`` or the ``"central"`` one. ``near_duplicate``: a photo whose face has
    cosine >= this to a face the subject already has (or to an earlier photo of the same batch)
    is not stored. ``store_crops`` keeps each enrolled face's aligned crop (PNG) in the
    gallery; photos themselves are never stored.

    Enrolment keeps identities apart: a photo whose face is identified as another subject
    (``matches_other``), a photo whose exact bytes are stored already (``duplicate_photo``) and,
    when adding to a subject, a face unlike the subject's own faces (``mismatch``) are held
    back unless the enrolment is forced.

    ``policy``: how identification and verification decide (target FPIR or threshold, ``k``,
    verification's FAR); default: the gallery's (:attr:`Gallery.policy`).
    """

    def __init__(
        self,
        gallery: Gallery,
        pipeline: FacePipeline,
        *,
        multiple_faces: MultipleFaces = "reject",
        near_duplicate: float = 0.95,
        store_crops: bool = False,
        policy: IdentificationPolicy | None = None,
    ) -> None:
        self.multiple_faces: MultipleFaces = self._policy(multiple_faces)
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
        self.near_duplicate = float(near_duplicate)
        self.store_crops = bool(store_crops)
        self.policy = policy if policy is not None else gallery.policy

    @staticmethod
    def _all_faces(pipeline: FacePipeline) -> FacePipeline:
        """The pipeline, answering every face (selection "all")."""
        if pipeline.selection == "all":
            return pipeline
        if isinstance(pipeline, Pipeline):  # the same detector and embedder, every face
            return type(pipeline)(
                pipeline.detector,
                pipeline.embedder,
                selection="all",
                min_face_size=pipeline.min_face_size,
                score_threshold=pipeline.score_threshold,
                flip=pipeline.flip,
                max_pixels=pipeline.aligner.max_pixels,
            )
        other = copy.copy(pipeline)  # a stand-in whose selection is a plain attribute
        setattr(other, "selection", "all")  # noqa: B010 (FacePipeline.selection is read-only)
        return other

    def threshold(self, threshold: float | None = None) -> float:
        """The 1:1 (verification) threshold: explicit, else the policy's, else the model card's
        calibrated one at the policy's FAR
        (:meth:`IdentificationPolicy.verification_threshold`)."""
        return self.policy.verification_threshold(self.card, threshold)

    def operating_point(
        self, threshold: float | None = None, fpir: str | float | None = None
    ) -> OperatingPoint:
        """Identification's operating point for the gallery as it is now, for a request's
        ``threshold`` or target ``fpir`` under this recogniser's policy
        (:meth:`Gallery.operating_point`)."""
        return self.gallery.operating_point(threshold, fpir, policy=self.policy)

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
                raise ImageError(label + message[len(described) :]) from None
            raise
        return sorted(faces, key=_area, reverse=True)

    # -- enrolment ------------------------------------------------------------------------------
    @staticmethod
    def _policy(multiple_faces: str) -> MultipleFaces:
        """A multiple-faces policy, checked (:class:`GalleryError` for an unknown one)."""
        if multiple_faces not in MULTIPLE_FACES:
            raise GalleryError(
                f"multiple_faces must be 'reject', 'largest' or 'central', got {multiple_faces!r}"
            )
        return cast(MultipleFaces, multiple_faces)

    @staticmethod
    def _central(faces: Sequence[FaceLike]) -> FaceLike:
        """The face whose box centre is nearest the photo's centre: the ``central`` rule of
        :func:`marginface.align.detection.select_faces` (what ``eval --face central`` and the
        pipeline's ``selection="central"`` use), applied to the faces the pipeline found."""
        detections = [
            Detection(
                box=np.asarray(f.box, np.float32),
                score=float(f.score),
                landmarks=np.asarray(f.landmarks, np.float32),
            )
            for f in faces
        ]
        chosen = select_faces(detections, faces[0].image_shape, selection="central")[0]
        return faces[next(i for i, d in enumerate(detections) if d is chosen)]

    def _identify_embeddings(self, embeddings: np.ndarray) -> list[Identification]:
        """The gallery's answer for each embedding, decided as identification decides: the one
        place enrolment asks who a face already is (change it with :meth:`identify`)."""
        return self.gallery.identify(embeddings, self.policy, point=self.operating_point())

    def _meanwhile(
        self,
        since: int,
        outcomes: list[PhotoOutcome],
        chosen: list[np.ndarray],
        hashes: list[str | None],
        own_id: str | None,
        name: str,
    ) -> Guard:
        """The check an enrolment's write runs in its transaction, serialised with every other
        enrolment: a face stored since face id ``since`` (by a concurrent request, in this or
        another process) of another subject, from the same photo or identified as the photo's
        face (at the threshold of the operating point), refuses the write, as ``_prepare``
        would have refused the photo had it come first. :class:`IdentityConflictError`."""
        threshold = self.operating_point().threshold
        enrolled = [i for i, o in enumerate(outcomes) if o.status == "enrolled"]

        def check() -> None:
            recent = [
                (rec, who, emb)
                for rec, who, emb in self.gallery.subjects.faces_after(since)
                if rec.subject_id != own_id
            ]
            if not recent:
                return
            mat = np.vstack([emb for _, _, emb in recent])
            changed = list(outcomes)
            for slot, emb, digest in zip(enrolled, chosen, hashes, strict=True):
                sims = mat @ emb
                same = [
                    j
                    for j, (rec, _, _) in enumerate(recent)
                    if digest is not None and rec.source_hash == digest
                ]
                j = same[0] if same else int(sims.argmax())
                if not same and sims[j] < threshold:
                    continue
                rec, who, _ = recent[j]
                conflict = PhotoConflict(
                    rec.subject_id, who, round(float(sims[j]), 4), round(threshold, 4)
                )
                status: PhotoStatus = "duplicate_photo" if same else "matches_other"
                text = (
                    f"this photo was enrolled for {who!r} ({rec.subject_id}) meanwhile"
                    if same
                    else f"{_identified_as(conflict)} (enrolled meanwhile)"
                )
                changed[slot] = dataclasses.replace(
                    outcomes[slot], status=status, message=text, conflict=conflict, forceable=True
                )
            if changed != outcomes:
                held = [o for o in changed if o.forceable]
                raise IdentityConflictError(
                    f"nothing was stored for {name!r}: "
                    + _held_reasons(held)
                    + "; enrol with force (API force=true, CLI --force) to store them anyway",
                    changed,
                )

        return check

    def _stored_for(self, faces: Sequence[FaceRecord]) -> PhotoConflict | None:
        """The first subject that still exists among the owners of these stored faces."""
        for face in faces:
            try:
                subject = self.gallery.subjects.get(face.subject_id)
            except NotFoundError:  # erased since the lookup
                continue
            return PhotoConflict(subject.id, subject.name)
        return None

    def _prepare(
        self,
        photos: Sequence[Photo],
        existing: np.ndarray,
        *,
        subject: Subject | None,
        multiple_faces: MultipleFaces,
        force: bool,
        force_mismatch: bool,
    ) -> tuple[list[PhotoOutcome], list[np.ndarray], list[str | None], list[bytes | None]]:
        """Each photo's outcome, and the embeddings, photo hashes and crops to store.

        In order, a photo is held back as: ``duplicate_photo`` (its bytes are stored already:
        for ``subject``, always; for another subject, unless ``force``), ``unreadable``,
        ``no_face``, ``multiple_faces`` (policy ``reject``), ``near_duplicate`` (of a face
        ``subject`` has or of an earlier photo of the batch), ``mismatch`` (best cosine to
        ``existing``, the subject's stored faces, below the 1:1 threshold; unless
        ``force_mismatch``) or ``matches_other`` (identified as another subject; unless
        ``force``). A forced photo is enrolled with a message naming what was overridden.
        """
        outcomes: list[PhotoOutcome] = []
        chosen: list[np.ndarray] = []
        hashes: list[str | None] = []
        crops: list[bytes | None] = []
        known = [existing] if len(existing) else []
        labelled = [_label(photo, i) for i, photo in enumerate(photos)]
        digests = [_photo_hash(data) for _, data in labelled]
        stored = self.gallery.subjects.faces_with_source_hashes(
            [d for d in digests if d is not None]
        )
        own_id = subject.id if subject is not None else None
        for (label, data), digest in zip(labelled, digests, strict=True):
            holders = stored.get(digest, []) if digest is not None else []
            own = next((f for f in holders if f.subject_id == own_id), None)
            if subject is not None and own is not None:
                outcomes.append(
                    PhotoOutcome(
                        label,
                        "duplicate_photo",
                        f"this photo is already enrolled for {subject.name!r} (face {own.id})",
                        conflict=PhotoConflict(subject.id, subject.name),
                    )
                )
                continue
            overridden: list[str] = []
            conflict = self._stored_for(holders)
            if conflict is not None:
                text = (
                    f"this photo is already enrolled for {conflict.name!r} ({conflict.subject_id})"
                )
                if not force:
                    outcomes.append(
                        PhotoOutcome(
                            label, "duplicate_photo", text, conflict=conflict, forceable=True
                        )
                    )
                    continue
                overridden.append(text)
            try:
                faces = self.faces((label, data))
            except ImageError as exc:
                outcomes.append(PhotoOutcome(label, "unreadable", str(exc)))
                continue
            if not faces:
                outcomes.append(PhotoOutcome(label, "no_face", "no face found"))
                continue
            note = ""
            face = faces[0]
            if len(faces) > 1:
                if multiple_faces == "reject":
                    outcomes.append(
                        PhotoOutcome(
                            label,
                            "multiple_faces",
                            f"{len(faces)} faces found; enrol photos showing only this person",
                            box=_box(faces[0]),
                        )
                    )
                    continue
                if multiple_faces == "central":
                    face = self._central(faces)
                    note = f"{len(faces)} faces found; the one nearest the centre was enrolled"
                else:
                    note = f"{len(faces)} faces found; the largest was enrolled"
            emb = _unit(face)
            if known:
                sims = np.vstack(known) @ emb
                best = float(sims.max())
                if best >= self.near_duplicate:
                    outcomes.append(
                        PhotoOutcome(
                            label,
                            "near_duplicate",
                            f"nearly identical (cosine {best:.3f}) to a face this subject already "
                            "has",
                            box=_box(face),
                            similarity=round(best, 4),
                        )
                    )
                    continue
            mismatch = None
            if subject is not None:  # the one rule for faces added to a subject
                for unlike_it in unlike(existing, emb, self.threshold()):
                    mismatch = PhotoConflict(
                        subject.id, subject.name, unlike_it.score, unlike_it.threshold
                    )
            other = None
            if self.gallery.dim is not None:
                answer = self._identify_embeddings(emb[None, :])[0]
                if answer.match is not None and answer.match.subject_id != own_id:
                    other = PhotoConflict(
                        answer.match.subject_id,
                        answer.match.name,
                        round(answer.score, 4),
                        round(answer.threshold, 4),
                    )
            if mismatch is not None:
                text = (
                    f"does not look like {mismatch.name!r}: best cosine "
                    f"{mismatch.score:.3f} to its faces is below the 1:1 threshold "
                    f"{mismatch.threshold:.3f}"
                )
                if other is not None:
                    text += f"; {_identified_as(other)}"
                if not force_mismatch:
                    outcomes.append(
                        PhotoOutcome(
                            label,
                            "mismatch",
                            text,
                            box=_box(face),
                            conflict=mismatch,
                            forceable=True,
                        )
                    )
                    continue
                overridden.append(text)
                conflict = conflict or mismatch
            elif other is not None and (
                conflict is None or other.subject_id != conflict.subject_id
            ):
                if not force:
                    outcomes.append(
                        PhotoOutcome(
                            label,
                            "matches_other",
                            _identified_as(other),
                            box=_box(face),
                            conflict=other,
                            forceable=True,
                        )
                    )
                    continue
                overridden.append(_identified_as(other))
                conflict = conflict or other
            if overridden:
                note = "; ".join(
                    [
                        *([note] if note else []),
                        *(f"enrolled anyway (force): {t}" for t in overridden),
                    ]
                )
            known.append(emb[None, :])
            chosen.append(emb)
            hashes.append(digest)
            crops.append(encode_png(face.crop) if self.store_crops else None)
            outcomes.append(
                PhotoOutcome(
                    label,
                    "enrolled",
                    note,
                    box=_box(face),
                    conflict=conflict,
                    forced=bool(overridden),
                )
            )
        return outcomes, chosen, hashes, crops

    @staticmethod
    def _with_ids(outcomes: list[PhotoOutcome], ids: list[int]) -> list[PhotoOutcome]:
        it = iter(ids)
        return [
            dataclasses.replace(o, face_id=next(it)) if o.status == "enrolled" else o
            for o in outcomes
        ]

    def enroll(
        self,
        name: str,
        photos: Sequence[Photo],
        *,
        metadata: dict[str, Any] | None = None,
        multiple_faces: MultipleFaces | None = None,
        force: bool = False,
    ) -> EnrollResult:
        """Create a new subject ``name`` from photos, in one transaction.

        ``multiple_faces`` overrides the recogniser's policy for this enrolment; ``force``
        enrols photos held back because they belong to someone enrolled already (see
        :meth:`_prepare`), each outcome then carrying a warning. Creates nothing and raises
        :class:`IdentityConflictError` (a :class:`ConflictError`) when every photo with a
        usable face was held back that way, else :class:`EnrollmentError` (a
        :class:`NoFaceError`) when no photo can be enrolled; both carry per-photo reasons.
        """
        if not photos:
            raise GalleryError("enrolment needs at least one photo")
        policy = self._policy(multiple_faces if multiple_faces is not None else self.multiple_faces)
        since = self.gallery.subjects.max_face_id()
        outcomes, chosen, hashes, crops = self._prepare(
            photos,
            np.zeros((0, 1), np.float32),
            subject=None,
            multiple_faces=policy,
            force=force,
            force_mismatch=force,
        )
        if not chosen:
            held = [o for o in outcomes if o.forceable]
            if held:
                raise IdentityConflictError(
                    f"{name!r} was not enrolled: "
                    + _held_reasons(held)
                    + "; enrol with force (API force=true, CLI --force) to store them anyway",
                    outcomes,
                )
            reasons = "; ".join(f"{o.source}: {o.status.replace('_', ' ')}" for o in outcomes)
            raise EnrollmentError(f"no photo of {name!r} could be enrolled ({reasons})", outcomes)
        subject = self.gallery.subjects.create(
            name,
            metadata,
            embeddings=np.vstack(chosen),
            source_hashes=hashes,
            crops=crops if self.store_crops else None,
            guard=None if force else self._meanwhile(since, outcomes, chosen, hashes, None, name),
        )
        ids = [f.id for f in self.gallery.subjects.faces(subject.id)]
        return EnrollResult(subject=subject, photos=self._with_ids(outcomes, ids), created=True)

    def add_photos(
        self,
        subject_id: str,
        photos: Sequence[Photo],
        *,
        multiple_faces: MultipleFaces | None = None,
        force: bool = False,
        force_mismatch: bool | None = None,
    ) -> EnrollResult:
        """Add photos to an existing subject (one transaction); per-photo outcomes. Photos that
        cannot be enrolled are reported, not raised.

        A photo whose face is unlike the subject's own faces (best cosine below the 1:1
        threshold of :meth:`verify_subject`) is held back as ``mismatch``: probably another
        person. ``force`` enrols photos held back as someone else's (``matches_other``, a
        ``duplicate_photo`` of another subject) and, unless ``force_mismatch`` says otherwise,
        mismatches. When ``force`` is asked for but a mismatch may not be forced
        (``force_mismatch=False``), nothing is stored: :class:`MismatchForceError`.
        """
        subject = self.gallery.subjects.get(subject_id)
        if not photos:
            raise GalleryError("enrolment needs at least one photo")
        policy = self._policy(multiple_faces if multiple_faces is not None else self.multiple_faces)
        may_force_mismatch = force if force_mismatch is None else bool(force_mismatch)
        since = self.gallery.subjects.max_face_id()
        _, existing = self.gallery.subjects.embeddings(subject_id)
        outcomes, chosen, hashes, crops = self._prepare(
            photos,
            existing,
            subject=subject,
            multiple_faces=policy,
            force=force,
            force_mismatch=may_force_mismatch,
        )
        refused = [o for o in outcomes if o.status == "mismatch"]
        if force and refused:
            raise MismatchForceError(
                f"nothing was added to {subject.name!r}: "
                + _held_reasons(refused)
                + "; forcing a photo that does not look like the subject is not allowed here",
                refused,
            )
        ids: list[int] = []
        if chosen:
            ids = self.gallery.subjects.add_faces(
                subject_id,
                np.vstack(chosen),
                source_hashes=hashes,
                crops=crops if self.store_crops else None,
                guard=None
                if force
                else self._meanwhile(since, outcomes, chosen, hashes, subject.id, subject.name),
            )
        return EnrollResult(
            subject=self.gallery.subjects.get(subject_id),
            photos=self._with_ids(outcomes, ids),
            created=False,
        )

    def assign_visitor(
        self,
        visitor_id: str,
        *,
        subject_id: str | None = None,
        name: str | None = None,
        faces: Sequence[int] | None = None,
        force: bool = False,
        force_mismatch: bool | None = None,
    ) -> Subject:
        """:meth:`Gallery.assign_visitor` held to the rule of :meth:`add_photos`: faces unlike
        the subject's own (below the 1:1 threshold, :meth:`threshold`) are refused
        (:class:`~marginface.gallery.likeness.FacesUnlikeError`) unless ``force`` and
        ``force_mismatch`` (default: ``force``; the service gives it to admin keys only),
        and a visitor whose chosen faces do not look like each other is refused until the
        faces of one person are chosen (``faces``)."""
        may_force_mismatch = force if force_mismatch is None else bool(force_mismatch)
        return self.gallery.assign_visitor(
            visitor_id,
            subject_id=subject_id,
            name=name,
            faces=faces,
            force=force,
            force_mismatch=force and may_force_mismatch,
            threshold=self.threshold(),
        )

    # -- identification -------------------------------------------------------------------------
    def identify(
        self,
        photo: Photo,
        *,
        threshold: float | None = None,
        source: str | None = None,
        fpir: str | float | None = None,
    ) -> list[RecognizedFace]:
        """Answer every face in the photo (largest first): match or unknown, score,
        candidates. An empty list means no face. ``threshold`` and ``fpir`` are this request's
        (:meth:`operating_point`). With ``source`` (camera or door name) each answer is logged
        as a recognition event."""
        point = self.operating_point(threshold, fpir)  # before the photo: a bad target fails fast
        faces = self.faces(photo)
        if not faces:
            return []
        embs = np.vstack([np.asarray(f.embedding, dtype=np.float32).ravel() for f in faces])
        answers = self.gallery.identify(embs, self.policy, point=point)
        out = []
        for face, ans in zip(faces, answers, strict=True):
            out.append(
                RecognizedFace(
                    box=_box(face),
                    detection_score=round(float(face.score), 4),
                    landmarks=[[round(float(x), 2) for x in p] for p in np.asarray(face.landmarks)],
                    identification=ans,
                )
            )
            if source is not None:
                self.gallery.events.log(
                    source,
                    subject_id=ans.subject_id,
                    score=ans.score,
                    decision="match" if ans.known else "unknown",
                    details={
                        "box": _box(face),
                        "threshold": point.threshold,
                        "target_fpir": point.target_fpir,
                        "gallery_subjects": point.gallery_subjects,
                    },
                )
        return out

    # -- verification ---------------------------------------------------------------------------
    def _one_face(self, photo: Photo, which: str) -> tuple[FaceLike, int]:
        faces = self.faces(photo)
        if not faces:
            label, _ = _label(photo, 0)
            raise NoFaceError(f"no face found in {which} ({label})")
        return faces[0], len(faces)

    def verify(
        self, photo_a: Photo, photo_b: Photo, *, threshold: float | None = None
    ) -> Verification:
        """Whether the (largest) faces of two photos are the same person."""
        thr = self.threshold(threshold)
        fa, na = self._one_face(photo_a, "the first photo")
        fb, nb = self._one_face(photo_b, "the second photo")
        score = float(_unit(fa) @ _unit(fb))
        return Verification(
            score=score,
            threshold=thr,
            same=score >= thr,
            box_a=_box(fa),
            box_b=_box(fb),
            faces_a=na,
            faces_b=nb,
        )

    def verify_subject(
        self, photo: Photo, subject_id: str, *, threshold: float | None = None
    ) -> Verification:
        """Whether the photo's (largest) face is the enrolled subject: best cosine to any of
        the subject's faces against the threshold."""
        thr = self.threshold(threshold)
        _, mat = self.gallery.subjects.embeddings(subject_id)  # raises for unknown subjects
        if len(mat) == 0:
            raise GalleryError(f"subject {subject_id!r} has no enrolled faces")
        face, n = self._one_face(photo, "the photo")
        score = float((mat @ _unit(face)).max())
        return Verification(
            score=score,
            threshold=thr,
            same=score >= thr,
            box_a=_box(face),
            subject_id=subject_id,
            faces_a=n,
            faces_b=len(mat),
        )
