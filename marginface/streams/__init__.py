"""Video: faces followed across a camera's frames and decided once per visit.

* :mod:`~marginface.streams.sources` - files, webcams, RTSP, MJPEG and pushed snapshots through
  PyAV; live sources at their latest frame, reconnection with backoff;
* :mod:`~marginface.streams.tracking` - faces associated across frames into tracks
  (ByteTrack with buffered IoU, from the ``trackers`` package);
* :mod:`~marginface.streams.visits` - per-track evidence (the best faces, by quality), one
  open-set decision per track at the gallery's operating point, ``arrived`` / ``left`` events,
  and a person's re-appearance on the same camera continuing the same visit;
* :mod:`~marginface.streams.camera` - one camera's pipeline: detect, track, embed the faces
  worth it, decide, and hand every event to the sinks;
* :mod:`~marginface.streams.recorder`, :mod:`~marginface.streams.notify` - sinks: the gallery
  (attendance, strangers for review), signed webhooks, MQTT;
* :mod:`~marginface.streams.manager` - the service's cameras, one supervised worker each;
"""

from marginface.streams.camera import CameraSettings, CameraWorker, Sink, TrackedBox
from marginface.streams.tracking import FaceTracker
from marginface.streams.visits import Evidence, VisitEvent, VisitSettings, VisitTracker

__all__ = [
    "CameraSettings",
    "CameraWorker",
    "Evidence",
    "FaceTracker",
    "Sink",
    "TrackedBox",
    "VisitEvent",
    "VisitSettings",
    "VisitTracker",
]
