"""The ``/v1`` REST API, one router per resource (FastAPI's "bigger applications" layout).

- ``subjects``: create, list, read, rename and erase subjects;
- ``faces``: enrol photos (a new subject, or more faces of one), erase a face, its crop;
- ``recognition``: identify every face in a photo, verify one face;
- ``events``: recognition events and attendance, as JSON or CSV;
- ``keys``: the caller's key (``/me``) and the admin's API-key management.
- ``cameras``: cameras (configure, start, stop, status, pushed frames, snapshot) and their
  visits (``/v1/visits``);
- ``unknowns``: the strangers' review queue (visitors: list, faces, assign, dismiss);
- ``nodes``: the nodes of the camera cluster (``/v1/nodes``).

Each module's ``router`` has the ``/v1`` prefix, its tag and the 401/403 responses; routers that
take photos parse uploads in memory (``serve/uploads.py``). Bounded parameter types and the
documented error responses are in ``serve/params.py``; helpers in ``common``. The app factory
(``serve/app.py``) includes every router.
"""

from __future__ import annotations
