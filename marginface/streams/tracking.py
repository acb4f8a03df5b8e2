"""Faces followed across a camera's frames: a thin wrapper over a maintained tracker.

The tracker is the ``trackers`` package's ``ByteTrackTracker`` (Roboflow's tracker library,
the successor of the ByteTrack that supervision shipped until 0.30 and removed in 0.31) with
**buffered IoU** (``BIoU``, boxes grown by their own size before the overlap is measured).
Chosen by measurement (``bench/tracker_choice.py``): YuNet's detections of rendered 1280x720
scenes processed at 5 frames/s, where a walking face moves about its own width between two processed
frames, so boxes of consecutive frames often do not overlap at all:

==============================  =======================  ==========  =========  =========
tracker                         scene                    fragments   switches   us/update
==============================  =======================  ==========  =========  =========
trackers ByteTrack, BIoU 1.0    occlusion (0.6 s)        0           0          290
trackers ByteTrack, BIoU 1.0    crossing of two people   0           0          330
trackers ByteTrack, BIoU 1.0    two side by side         0           0          350
trackers ByteTrack (plain IoU)  crossing / two           0 (22 / 30 detections never tracked)
supervision 0.30 ByteTrack      every scene              no detection ever tracked (IoU 0)
trackers OC-SORT                every scene              no detection ever tracked
norfair 2.3, IoU                occlusion / crossing     5 / 21      0 / 1      150-200
norfair 2.3, centre/width 2.5   every scene              0           0          90-180
boxmot                          not measured: needs torchvision, timm, pandas, pyarrow,
                                opencv-python<5 and model downloads
==============================  =======================  ==========  =========  =========

(fragments: track ids per person beyond the first; switches: a track id given to two
people; the first detection of a track has no id yet, ByteTrack's one-frame warm-up.)

ByteTrack with BIoU and norfair with a size-normalised centre distance both follow every face
without a fragment or switch; ``trackers`` wins because it is maintained (monthly releases),
installs with numpy 2 (norfair 2.3 pins ``numpy<2``, which OpenCV 5 cannot use) and needs no
distance function of ours. Either costs well under a millisecond per frame, nothing beside
the ~20-30 ms of detection. ``trackers`` declares ``opencv-python``; marginface uses
``opencv-python-headless``, so it is installed without dependencies beside supervision, scipy
and pydeprecate, which marginface already has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marginface.align.detection import Detection

__all__ = ["FaceTracker"]


class FaceTracker:
    """Assigns track ids to each frame's face detections.

    ``fps``: the processing rate (frames given to :meth:`update` per second);
    ``track_buffer_s``: how long a lost face's track survives (a short occlusion, a missed
    detection) before it ends; ``buffer_ratio``: how far (in box sizes) a face may move
    between two processed frames and still be matched; ``activation_threshold``: the
    detection score that starts a track (lower-scored detections only continue tracks, as
    ByteTrack does).

    Track ids are this object's own (1, 2, ...) and never reused: a track id the tracker
    revives after :meth:`ended` reported it gets a new id. Not thread-safe: one per camera.
    """

    def __init__(
        self,
        fps: float = 5.0,
        track_buffer_s: float = 1.0,
        *,
        buffer_ratio: float = 1.0,
        activation_threshold: float = 0.6,
        min_iou: float = 0.1,
    ) -> None:
        import trackers  # heavy: trackers (supervision, scipy)

        self.fps = float(fps)
        self.track_buffer_s = float(track_buffer_s)
        self._tracker = trackers.ByteTrackTracker(
            lost_track_buffer=max(1, round(30 * self.track_buffer_s)),
            frame_rate=self.fps,
            track_activation_threshold=activation_threshold,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=min_iou,
            high_conf_det_threshold=activation_threshold,
            iou=trackers.BIoU(buffer_ratio=buffer_ratio) if buffer_ratio > 0 else None,
        )
        self._ids: dict[int, int] = {}  # the tracker's id -> ours
        self._last_seen: dict[int, float] = {}  # ours -> last time a detection matched
        self._next = 1
        self._last_t: float | None = None

    def update(self, detections: list[Detection], t: float) -> list[tuple[int, Detection]]:
        """The tracked faces of the frame at ``t`` (seconds): (track id, detection) for each
        detection the tracker associated with a track; detections it did not (a new face's
        first frame, a low-score detection matching no track) are left out."""
        import supervision as sv  # heavy: supervision

        if self._last_t is not None and t <= self._last_t:
            t = self._last_t + 1e-3  # the tracker skips non-increasing timestamps
        self._last_t = t
        n = len(detections)
        boxes = (
            np.stack([d.box for d in detections]).astype(np.float32)
            if n
            else np.zeros((0, 4), dtype=np.float32)
        )
        scores = np.asarray([d.score for d in detections], dtype=np.float32)
        out: Any = self._tracker.update(
            sv.Detections(xyxy=boxes, confidence=scores, data={"index": np.arange(n)}), timestamp=t
        )
        tracked = []
        if len(out):
            for index, tid in zip(out.data["index"], out.tracker_id, strict=True):
                if tid < 0:
                    continue
                ours = self._ids.get(int(tid))
                if ours is None:
                    ours = self._ids[int(tid)] = self._next
                    self._next += 1
                self._last_seen[ours] = t
                tracked.append((ours, detections[int(index)]))
        return tracked

    def open_tracks(self) -> int:
        """How many tracks are open (seen, not yet reported by :meth:`ended`)."""
        return len(self._last_seen)

    def ended(self, t: float) -> list[int]:
        """Tracks that ended by ``t`` (reported once): those the tracker dropped (lost longer
        than ``track_buffer_s`` at its last update), and those not seen for longer than
        ``track_buffer_s`` when no update came since."""
        alive = {int(tr.tracker_id) for tr in self._tracker.tracks if tr.tracker_id >= 0}
        gone = []
        for theirs, ours in list(self._ids.items()):
            if theirs not in alive or t - self._last_seen[ours] > self.track_buffer_s + 1e-6:
                gone.append(ours)
                del self._ids[theirs]
                del self._last_seen[ours]
        return sorted(gone)

    def split(self, track_id: int) -> int:
        """Give the motion track behind ``track_id`` a new id of ours from now on: its latest
        detection was another person (appearance said so); ``track_id`` is over, and is not
        reported by :meth:`ended`. Returns the new id (``track_id`` itself when unknown)."""
        theirs = next((k for k, v in self._ids.items() if v == track_id), None)
        if theirs is None:
            return track_id
        new = self._ids[theirs] = self._next
        self._next += 1
        self._last_seen[new] = self._last_seen.pop(track_id)
        return new

    def close_all(self) -> list[int]:
        """End every open track (the end of a file, the camera stopping); the tracker starts
        afresh."""
        gone = sorted(self._last_seen)
        self._ids.clear()
        self._last_seen.clear()
        self._tracker.reset()
        self._last_t = None
        return gone
