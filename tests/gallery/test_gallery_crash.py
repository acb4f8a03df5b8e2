"""SIGKILL during a batch enrolment: finished subjects survive whole, no half-subject, and the
restarted gallery gives the same answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gallery_helpers import make_store

PER = 6
DIM = 128

CHILD = (
    textwrap.dedent(
        """
    import sys, time
    import numpy as np
    from marginface.decision import IdentificationPolicy
    from marginface.gallery import Gallery
    from marginface.gallery.subjects import SubjectStore

    url, index = sys.argv[1], sys.argv[2]
    original = SubjectStore._insert_faces

    def slow_insert(self, *args, **kwargs):
        ids = original(self, *args, **kwargs)
        print("INSIDE", flush=True)  # faces inserted, transaction not committed yet
        time.sleep(0.02)
        return ids

    SubjectStore._insert_faces = slow_insert
    policy = IdentificationPolicy(threshold=0.5)
    g = Gallery.open(url, "crash-model", DIM, index=index, policy=policy)
    for i in range(100000):
        rng = np.random.default_rng(i)
        centre = rng.normal(size=DIM)
        faces = centre + 0.3 * rng.normal(size=(PER, DIM))
        s = g.subjects.create(f"person {i}", {"i": i}, embeddings=faces)
        print("DONE", i, s.id, flush=True)
    """
    )
    .replace("DIM", str(DIM))
    .replace("PER", str(PER))
)


def probe(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    centre = rng.normal(size=DIM)
    return (centre + 0.3 * np.random.default_rng(10_000 + i).normal(size=DIM))[None, :]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_batch_enrolment(backend, tmp_path, request):
    spec = make_store(backend, "exact", tmp_path, request)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, spec.url, "exact"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    done: dict[int, str] = {}
    killed_inside = False
    try:
        for line in proc.stdout:
            parts = line.split()
            if parts and parts[0] == "DONE":
                done[int(parts[1])] = parts[2]
            elif parts == ["INSIDE"] and len(done) >= 25:
                os.kill(proc.pid, signal.SIGKILL)  # in the middle of a subject's transaction
                killed_inside = True
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_inside, proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL

    g = spec.open(model="crash-model", dim=DIM)
    subjects = g.subjects.list()
    by_id = {s.id: s for s in subjects}
    # every finished subject is intact ...
    for i, sid in done.items():
        assert sid in by_id and by_id[sid].name == f"person {i}"
        assert by_id[sid].n_faces == PER
    # ... and nothing half-written: the killed subject is entirely absent
    assert all(s.n_faces == PER for s in subjects)
    assert len(subjects) == len(done)
    assert g.subjects.count_faces() == PER * len(done) == len(g.index)
    probes = np.vstack([probe(i) for i in sorted(done)])
    answers = [(a.subject_id, round(a.score, 5)) for a in g.identify(probes)]
    assert [a[0] for a in answers] == [done[i] for i in sorted(done)]
    g.close()
    g2 = spec.open(model="crash-model", dim=DIM)  # a second restart answers the same
    assert [(a.subject_id, round(a.score, 5)) for a in g2.identify(probes)] == answers
    # the store is writable again after the crash
    s = g2.subjects.create("after the crash", embeddings=probe(99_999))
    assert g2.subjects.get(s.id).n_faces == 1
    spec.close_all()
