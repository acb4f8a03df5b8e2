"""Video: faces followed across frames, decided once per visit (issue #15's core).

* :mod:`~marginface.streams.visits` - per-track evidence (the best faces, by quality), one
  open-set decision per track at the gallery's operating point, ``arrived`` / ``left`` events,
  and a person's re-appearance on the same camera continuing the same visit.
"""

from marginface.streams.visits import VisitEvent, VisitSettings, VisitTracker

__all__ = ["VisitEvent", "VisitSettings", "VisitTracker"]
