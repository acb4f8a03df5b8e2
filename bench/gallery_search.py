"""Gallery search benchmark: top-5 cosine search over N enrolled 512-d embeddings on 2 cores.

Baseline: exact numpy search (``marginface.gallery.ExactIndex``), one query at a time and in
batches of 64. Candidates: FAISS IVF (``FaissIndex(kind="ivf")``, several ``nprobe``) and FAISS
HNSW. Each is timed per single query and scored by recall@1 against exact search. Build time
and memory are reported. Target: <= 5 ms per single query with recall@1 >= 0.99.

Data (``--data clustered``, default): ``N / per`` synthetic identities, ``per`` faces each,
face = normalise(centre + noise) with same-identity cosine ~0.6 (like real face embeddings of
one person), centres uniformly random on the sphere; queries are new photos (fresh noise) of
enrolled identities. ``--data random``: uniform random unit vectors and queries (the worst case:
no neighbour structure at all).

    .venv/bin/python bench/gallery_search.py                 # 1,000,000 x 512, a few minutes
    .venv/bin/python bench/gallery_search.py --n 100000      # quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import argparse
import json
import resource
import time

import numpy as np


def rss_gib() -> float:
    """Current resident memory of this process in GiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_data(n: int, dim: int, n_queries: int, kind: str, per: int, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        data = rng.standard_normal((n, dim), dtype=np.float32)
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    else:
        n_id = max(1, n // per)
        centres = rng.standard_normal((n_id, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        noise = 0.8 / np.sqrt(dim)  # same-identity cosine ~ 1 / (1 + 0.8^2) = 0.61
        data = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            data[start:stop] = centres[np.arange(start, stop) % n_id]
            data[start:stop] += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        who = rng.integers(0, n_id, n_queries)
        queries = centres[who] + noise * rng.standard_normal((n_queries, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return data, queries


def time_single(index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median ms per query, one query at a time; and the top-k ids."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, got = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        ids[i] = got[0]
    return 1000 * float(np.median(times)), ids


def time_batched(index, queries: np.ndarray, k: int, batch: int) -> float:
    t = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search(queries[start:start + batch], k)
    return 1000 * (time.perf_counter() - t) / len(queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="enrolled embeddings")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--data", choices=["clustered", "random"], default="clustered")
    ap.add_argument("--per", type=int, default=5, help="faces per identity (clustered)")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~2*sqrt(N))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--hnsw", action="store_true", help="also build an HNSW index (slow)")
    ap.add_argument("--hnsw-ef", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()

    import faiss

    from marginface.gallery import ExactIndex, FaissIndex

    faiss.omp_set_num_threads(args.threads)
    print(f"data: {args.data}, N={args.n:,} x {args.dim}, {args.queries} queries, "
          f"top-{args.k}, {args.threads} threads")
    t = time.perf_counter()
    data, queries = make_data(args.n, args.dim, args.queries, args.data, args.per)
    ids = np.arange(args.n, dtype=np.int64)
    print(f"generated in {time.perf_counter() - t:.1f} s; data {data.nbytes / 2**30:.2f} GiB; "
          f"RSS {rss_gib():.2f} GiB")
    results: dict[str, dict] = {}

    # -- exact baseline --------------------------------------------------------------------
    rss0 = rss_gib()
    t = time.perf_counter()
    exact = ExactIndex(args.dim)
    exact.add(ids, data)
    build = time.perf_counter() - t
    single, truth = time_single(exact, queries, args.k)
    batched = time_batched(exact, queries, args.k, 64)
    results["exact"] = {"build_s": build, "single_ms": single, "batch64_ms": batched,
                        "recall@1": 1.0, "mem_gib": rss_gib() - rss0}
    print(f"exact numpy: build {build:.1f} s, single {single:.2f} ms/query, batched(64) "
          f"{batched:.2f} ms/query, +{rss_gib() - rss0:.2f} GiB")
    del exact

    # -- FAISS IVF ---------------------------------------------------------------------------
    rss0 = rss_gib()
    t = time.perf_counter()
    ivf = FaissIndex(args.dim, kind="ivf", nlist=args.nlist, train_min=1, threads=args.threads)
    ivf.build(ids, data)
    build = time.perf_counter() - t
    nlist = ivf.describe()["nlist"]
    mem = rss_gib() - rss0
    print(f"faiss IVF{nlist},Flat: build (train + add) {build:.1f} s, +{mem:.2f} GiB")
    for nprobe in args.nprobe:
        ivf._index.nprobe = nprobe
        single, got = time_single(ivf, queries, args.k)
        recall = float(np.mean(got[:, 0] == truth[:, 0]))
        recall5 = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, truth,
                                                                               strict=True)]))
        results[f"ivf{nlist}_nprobe{nprobe}"] = {
            "build_s": build, "single_ms": single, "recall@1": recall, "recall@5": recall5,
            "mem_gib": mem}
        print(f"  nprobe {nprobe:4d}: single {single:.2f} ms/query, recall@1 {recall:.4f}, "
              f"recall@5 {recall5:.4f}")
    # deletion cost (right to erasure) on the big index
    t = time.perf_counter()
    ivf.remove(ids[:100])
    print(f"  removing 100 ids: {1000 * (time.perf_counter() - t):.1f} ms")
    del ivf

    # -- FAISS HNSW ---------------------------------------------------------------------------
    if args.hnsw:
        rss0 = rss_gib()
        t = time.perf_counter()
        hnsw = FaissIndex(args.dim, kind="hnsw", M=32, ef_construction=80, threads=args.threads)
        hnsw.build(ids, data)
        build = time.perf_counter() - t
        mem = rss_gib() - rss0
        print(f"faiss HNSW32: build {build:.1f} s, +{mem:.2f} GiB")
        for ef in args.hnsw_ef:
            faiss.downcast_index(hnsw._index.index).hnsw.efSearch = ef
            single, got = time_single(hnsw, queries, args.k)
            recall = float(np.mean(got[:, 0] == truth[:, 0]))
            results[f"hnsw32_ef{ef}"] = {"build_s": build, "single_ms": single,
                                         "recall@1": recall, "mem_gib": mem}
            print(f"  efSearch {ef:4d}: single {single:.2f} ms/query, recall@1 {recall:.4f}")

    base = results["exact"]["single_ms"]
    print("\nsummary (single-query latency; speed-up vs exact numpy single / batched):")
    ok = []
    for name, r in results.items():
        ratio = base / r["single_ms"]
        ratio_b = results["exact"]["batch64_ms"] / r["single_ms"]
        meets = r["single_ms"] <= 5.0 and r["recall@1"] >= 0.99
        ok += [name] if meets else []
        print(f"  {name:22s} {r['single_ms']:8.2f} ms  recall@1 {r['recall@1']:.4f}  "
              f"x{ratio:6.1f} / x{ratio_b:5.1f}  {'meets target' if meets else ''}")
    print(f"peak RSS {peak_gib():.2f} GiB; configurations meeting <=5 ms & recall@1>=0.99: "
          f"{', '.join(ok) or 'none'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
