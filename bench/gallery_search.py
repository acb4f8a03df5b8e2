"""Gallery search benchmark: top-5 cosine search over N enrolled 512-d embeddings on 2 cores.

Baseline: exact numpy search (``marginface.gallery.ExactIndex``), one query at a time and in
batches of 64, measured in the same run. Candidates (``--candidates``):

* ``binary`` - :class:`marginface.gallery.FaissBinaryIndex`, the gallery's ``index="faiss"``
  default: FAISS Hamming scan of 512-bit SimHash codes, shortlist of ``--rerank`` re-ranked
  exactly;
* ``ivf`` - ``FaissIndex(kind="ivf")`` at several ``--nprobe``;
* ``hnsw`` - ``FaissIndex(kind="hnsw")`` at several ``--hnsw-ef`` (build: tens of minutes at
  1M on 2 cores);
* ``milvus`` - :class:`marginface.gallery.MilvusIndex` on a Milvus Lite file (FLAT, inner
  product): what the gallery's ``index="milvus"`` costs a query through pymilvus, round trip
  included. Milvus Lite searches in a server process of its own, so this run's CPU time and
  memory do not include the search's: read the wall times (and the machine's load).

For each: build time (wall and CPU), memory (RSS increase), single-query median and p99 latency
(wall) and median CPU time, batched throughput (64 a batch), recall@1 and recall@5 against
exact search, and the speed-up over exact. Target: <= 5 ms a single query, recall@1 >= 0.99.
The machine load average is printed at start and end: on a shared machine, wall times inflate
and the CPU times (``time.process_time``, all threads of this process) are the steadier figure.

Then, end to end (unless ``--no-identify``): :meth:`marginface.gallery.Gallery.identify` on a
SQLite gallery of the same data with the ``faiss`` index: search, the SQL check of the owners,
the k-NN vote and the operating point (the threshold for the target FPIR, from the built-in
model card's impostor table, for the gallery's current size; the target is <= 5 ms a query
with it included).

Data (``--data clustered``, default): ``N / per`` synthetic identities, ``per`` faces each,
face = normalise(centre + noise) with same-identity cosine ~0.6 (like real face embeddings of
one person), centres uniformly random on the sphere; queries are new photos (fresh noise) of
enrolled identities. ``--data random``: uniform random unit vectors and queries (no neighbour
structure at all: the worst case for any approximate index, and not a face-search workload).

    .venv/bin/python bench/gallery_search.py                       # 1,000,000 x 512, ~3 min
    .venv/bin/python bench/gallery_search.py --n 100000            # quick look
    .venv/bin/python bench/gallery_search.py --candidates binary   # skip the IVF build
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import argparse
import json
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK = 65536


def rss_gib() -> float:
    """Current resident memory of this process in GiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _normalise_rows(x: np.ndarray) -> None:
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]


def make_data(
    n: int,
    dim: int,
    n_queries: int,
    kind: str,
    per: int,
    seed: int = 0,
    threads: int = 2,
    same_cos: float = 0.61,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit float32 gallery vectors and queries, generated in chunks on ``threads`` threads.

    Clustered: two photos of one identity have cosine ~``same_cos``."""
    seeds = np.random.SeedSequence(seed)
    head, *chunk_seeds = seeds.spawn(1 + -(-n // CHUNK))
    rng = np.random.default_rng(head)
    n_id = max(1, n // per)
    # same-identity cosine ~ 1 / (1 + s^2): s = 0.8 gives 0.61
    noise = np.float32(np.sqrt(1.0 / same_cos - 1.0) / np.sqrt(dim))
    if kind == "clustered":
        centres = rng.standard_normal((n_id, dim), dtype=np.float32)
        _normalise_rows(centres)
    data = np.empty((n, dim), dtype=np.float32)

    def fill(j: int) -> None:
        start, stop = j * CHUNK, min(n, (j + 1) * CHUNK)
        r = np.random.default_rng(chunk_seeds[j])
        part = data[start:stop]
        r.standard_normal(out=part, dtype=np.float32)
        if kind == "clustered":  # face i belongs to identity i % n_id
            part *= noise
            part += centres[np.arange(start, stop) % n_id]
        _normalise_rows(part)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill, range(len(chunk_seeds))))
    if kind == "clustered":
        who = rng.integers(0, n_id, n_queries)
        queries = centres[who] + noise * rng.standard_normal((n_queries, dim), dtype=np.float32)
    else:
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    _normalise_rows(queries)
    return data, queries


def time_single(index, queries: np.ndarray, k: int) -> dict:
    """One query at a time: wall median / p99 and CPU median (ms), and the top-k ids."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    wall, cpu = [], []
    index.search(queries[:1], k)  # warm-up (thread pool, caches)
    for i, q in enumerate(queries):
        t, c = time.perf_counter(), time.process_time()
        _, got = index.search(q[None, :], k)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
        ids[i] = got[0]
    return {
        "single_ms": 1000 * float(np.median(wall)),
        "single_p99_ms": 1000 * float(np.percentile(wall, 99)),
        "single_cpu_ms": 1000 * float(np.median(cpu)),
        "ids": ids,
    }


def time_batched(index, queries: np.ndarray, k: int, batch: int = 64) -> tuple[float, float]:
    """Wall and CPU ms per query, in batches."""
    t, c = time.perf_counter(), time.process_time()
    for start in range(0, len(queries), batch):
        index.search(queries[start : start + batch], k)
    n = len(queries)
    return 1000 * (time.perf_counter() - t) / n, 1000 * (time.process_time() - c) / n


def recalls(got: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    r1 = float(np.mean(got[:, 0] == truth[:, 0]))
    r5 = float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got, truth, strict=True)])
    )
    return r1, r5


def measure(
    name: str, index, queries: np.ndarray, truth: np.ndarray, k: int, build: dict, results: dict
) -> None:
    single = time_single(index, queries, k)
    batched, batched_cpu = time_batched(index, queries, k)
    r1, r5 = recalls(single.pop("ids"), truth)
    results[name] = {
        **build,
        **single,
        "batch64_ms": batched,
        "batch64_cpu_ms": batched_cpu,
        "recall@1": r1,
        "recall@5": r5,
    }
    print(
        f"  {name}: single {single['single_ms']:.2f} ms (p99 {single['single_p99_ms']:.2f}, "
        f"cpu {single['single_cpu_ms']:.2f}), batched {batched:.2f} ms/query, "
        f"recall@1 {r1:.4f}, recall@5 {r5:.4f}",
        flush=True,
    )


def timed_build(make) -> tuple[object, dict]:
    rss0 = rss_gib()
    t, c = time.perf_counter(), time.process_time()
    index = make()
    info = {
        "build_s": time.perf_counter() - t,
        "build_cpu_s": time.process_time() - c,
        "mem_gib": rss_gib() - rss0,
    }
    return index, info


def bench_identify(data: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict:
    """End to end: ``Gallery.identify`` over a SQLite gallery of ``data`` (``args.per`` faces a
    subject) with the ``faiss`` index, the SQL owner check, the k-NN vote and the operating
    point for a target FPIR from the built-in model's impostor table (cached per change of
    faces; its first computation after a change is timed apart)."""
    import tempfile

    from marginface.card import ModelCard
    from marginface.embed.loader import BUILTIN_DIR
    from marginface.gallery import Gallery

    card = ModelCard.load(BUILTIN_DIR / "sface.json")
    n = len(data)
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        url = args.gallery_db or f"{tmp}/g.db"
        t = time.perf_counter()
        fill = 0.0
        if not os.path.exists(url):
            g = Gallery.open(url, model_name="bench", dim=args.dim, index="faiss", card=card)
            for start in range(0, n, args.per):
                g.subjects.create(
                    f"s{start // args.per}", embeddings=data[start : start + args.per]
                )
            g.close()
            fill = time.perf_counter() - t
        t = time.perf_counter()
        g = Gallery.open(url, model_name="bench", dim=args.dim, index="faiss", card=card)
        reopen = time.perf_counter() - t
        if g.subjects.count_faces() != n:
            raise SystemExit(
                f"{url} holds {g.subjects.count_faces():,} faces, not {n:,}: remove it"
            )
        t = time.perf_counter()
        point = g.operating_point()
        cold = time.perf_counter() - t
        lat, cpu, point_s = [], [], []
        for q in queries:
            t, c = time.perf_counter(), time.process_time()
            g.identify(q[None, :])
            lat.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            t = time.perf_counter()
            g.operating_point()
            point_s.append(time.perf_counter() - t)
        g.close()
    print(
        f"Gallery.identify: filled {n:,} faces in {fill:.0f} s (0: reused), reopened (index "
        f"rebuilt from SQL) in {reopen:.1f} s; threshold {point.threshold:.4f} for target FPIR "
        f"{point.target_fpir:g} at {point.gallery_subjects:,} subjects",
        flush=True,
    )
    return {
        "single_ms": 1000 * float(np.median(lat)),
        "single_p99_ms": 1000 * float(np.percentile(lat, 99)),
        "single_cpu_ms": 1000 * float(np.median(cpu)),
        "point_us": 1e6 * float(np.median(point_s)),
        "point_cold_ms": 1000 * cold,
        "fill_s": fill,
        "reopen_s": reopen,
        "threshold": point.threshold,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="enrolled embeddings")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--data", choices=["clustered", "random"], default="clustered")
    ap.add_argument("--per", type=int, default=5, help="faces per identity (clustered)")
    ap.add_argument(
        "--same-cos",
        type=float,
        default=0.61,
        help="clustered: typical cosine of two faces of one identity",
    )
    ap.add_argument(
        "--candidates", default="binary,ivf", help="comma-separated: binary, ivf, hnsw, milvus"
    )
    ap.add_argument("--bits", type=int, default=None, help="binary: code bits (default 512)")
    ap.add_argument(
        "--rerank", type=int, nargs="+", default=[256, 64], help="binary: shortlist sizes to try"
    )
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~2*sqrt(N))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-efc", type=int, default=40)
    ap.add_argument("--hnsw-ef", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-identify",
        action="store_true",
        help="skip the end-to-end Gallery.identify stage (SQLite + faiss index)",
    )
    ap.add_argument(
        "--gallery-db",
        default=None,
        help="identify stage: keep the filled SQLite gallery here and reuse it on "
        "the next run (the fill takes ~10 min at 1M faces on 2 cores)",
    )
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]

    import faiss

    from marginface.gallery import ExactIndex, FaissBinaryIndex, FaissIndex

    faiss.omp_set_num_threads(args.threads)
    same = f" (same-identity cosine ~{args.same_cos})" if args.data == "clustered" else ""
    print(
        f"data: {args.data}{same}, N={args.n:,} x {args.dim}, {args.queries} queries, "
        f"top-{args.k}, {args.threads} threads, {os.cpu_count()} CPUs; load average {load()}"
    )
    t = time.perf_counter()
    data, queries = make_data(
        args.n,
        args.dim,
        args.queries,
        args.data,
        args.per,
        threads=args.threads,
        same_cos=args.same_cos,
    )
    ids = np.arange(args.n, dtype=np.int64)
    print(
        f"generated in {time.perf_counter() - t:.1f} s; data {data.nbytes / 2**30:.2f} GiB; "
        f"RSS {rss_gib():.2f} GiB",
        flush=True,
    )
    results: dict[str, dict] = {}

    # -- exact baseline and ground truth ---------------------------------------------------------
    def make_exact():
        ix = ExactIndex(args.dim)
        ix.add(ids, data)
        return ix

    exact, build = timed_build(make_exact)
    print(f"exact numpy: build {build['build_s']:.1f} s, +{build['mem_gib']:.2f} GiB", flush=True)
    _, truth = exact.search(queries, args.k)
    measure("exact", exact, queries, truth, args.k, build, results)
    del exact

    # -- FAISS binary shortlist + exact re-rank (the gallery's "faiss" default) --------------------
    if "binary" in candidates:

        def make_binary():
            ix = FaissBinaryIndex(args.dim, bits=args.bits, threads=args.threads)
            ix.build(ids, data)
            return ix

        binary, build = timed_build(make_binary)
        print(
            f"faiss binary {binary.bits}-bit + exact re-rank: build {build['build_s']:.1f} s "
            f"(cpu {build['build_cpu_s']:.1f} s), +{build['mem_gib']:.2f} GiB",
            flush=True,
        )
        for rerank in args.rerank:
            binary.rerank = rerank
            measure(
                f"binary{binary.bits}_rerank{rerank}",
                binary,
                queries,
                truth,
                args.k,
                build,
                results,
            )
        t = time.perf_counter()
        binary.remove(ids[:100])
        print(f"  removing 100 ids: {1000 * (time.perf_counter() - t):.1f} ms", flush=True)
        binary.close()
        del binary

    # -- FAISS IVF ---------------------------------------------------------------------------
    if "ivf" in candidates:

        def make_ivf():
            ix = FaissIndex(
                args.dim, kind="ivf", nlist=args.nlist, train_min=1, threads=args.threads
            )
            ix.build(ids, data)
            return ix

        ivf, build = timed_build(make_ivf)
        nlist = ivf.describe()["nlist"]
        print(
            f"faiss IVF{nlist},Flat: build (train + add) {build['build_s']:.1f} s "
            f"(cpu {build['build_cpu_s']:.1f} s), +{build['mem_gib']:.2f} GiB",
            flush=True,
        )
        for nprobe in args.nprobe:
            ivf._index.nprobe = nprobe
            measure(f"ivf{nlist}_nprobe{nprobe}", ivf, queries, truth, args.k, build, results)
        del ivf

    # -- FAISS HNSW ---------------------------------------------------------------------------
    if "hnsw" in candidates:

        def make_hnsw():
            ix = FaissIndex(
                args.dim,
                kind="hnsw",
                M=args.hnsw_m,
                ef_construction=args.hnsw_efc,
                threads=args.threads,
            )
            ix.build(ids, data)
            return ix

        hnsw, build = timed_build(make_hnsw)
        print(
            f"faiss HNSW{args.hnsw_m} efConstruction {args.hnsw_efc}: build "
            f"{build['build_s']:.1f} s (cpu {build['build_cpu_s']:.1f} s), "
            f"+{build['mem_gib']:.2f} GiB",
            flush=True,
        )
        for ef in args.hnsw_ef:
            faiss.downcast_index(hnsw._index.index).hnsw.efSearch = ef
            measure(f"hnsw{args.hnsw_m}_ef{ef}", hnsw, queries, truth, args.k, build, results)
        del hnsw

    # -- Milvus Lite ---------------------------------------------------------------------------
    if "milvus" in candidates:
        from marginface.gallery import MilvusIndex

        workdir = tempfile.mkdtemp(prefix="mf-milvus-bench-")

        def make_milvus():
            ix = MilvusIndex(args.dim, uri=os.path.join(workdir, "bench.db"))
            ix.add(ids, data)
            return ix

        try:
            milvus, build = timed_build(make_milvus)
            print(
                f"milvus lite FLAT: build (upsert) {build['build_s']:.1f} s "
                f"(cpu here {build['build_cpu_s']:.1f} s)",
                flush=True,
            )
            measure("milvus_lite_flat", milvus, queries, truth, args.k, build, results)
            milvus.close()
            del milvus
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    if not args.no_identify:
        results["identify"] = bench_identify(data, queries, args)

    ex = results["exact"]
    print(
        f"\nsummary: N={args.n:,} x {args.dim} {args.data}, top-{args.k}, {args.threads} "
        f"threads; load average at the end {load()}"
    )
    head = (
        f"{'index':22s} {'build s':>8s} {'mem GiB':>8s} {'single ms':>10s} {'p99 ms':>8s} "
        f"{'cpu ms':>7s} {'batch ms/q':>10s} {'recall@1':>8s} {'recall@5':>8s} "
        f"{'x single':>8s} {'x batch':>8s}"
    )
    print(head)
    ok = []
    for name, r in results.items():
        if name == "identify":
            continue
        meets = r["single_ms"] <= 5.0 and r["recall@1"] >= 0.99
        ok += [name] if meets and name != "exact" else []
        print(
            f"{name:22s} {r['build_s']:8.1f} {r['mem_gib']:8.2f} {r['single_ms']:10.2f} "
            f"{r['single_p99_ms']:8.2f} {r['single_cpu_ms']:7.2f} {r['batch64_ms']:10.2f} "
            f"{r['recall@1']:8.4f} {r['recall@5']:8.4f} "
            f"{ex['single_ms'] / r['single_ms']:8.1f} {ex['batch64_ms'] / r['single_ms']:8.1f}"
            f"{'  meets target' if meets else ''}"
        )
    print(
        "x single / x batch: exact single-query / exact batched ms per query, over this "
        "index's single-query ms"
    )
    if "identify" in results:
        r = results["identify"]
        meets = r["single_ms"] <= 5.0
        print(
            f"Gallery.identify (faiss, SQLite, k-NN vote, FPIR operating point): single "
            f"{r['single_ms']:.2f} ms median, {r['single_p99_ms']:.2f} ms p99, of which the "
            f"operating point {r['point_us']:.0f} us; after a change of faces the first "
            f"lookup takes {r['point_cold_ms']:.1f} ms{'  meets target' if meets else ''}"
        )
    print(
        f"peak RSS {peak_gib():.2f} GiB; meeting <= 5 ms single & recall@1 >= 0.99: "
        f"{', '.join(ok) or 'none'}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "load_end": load(), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
