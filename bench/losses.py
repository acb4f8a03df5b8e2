"""Benchmark: forward + backward time and extra peak memory of one loss step, on CPU.

For each head, at each class count, three implementations run interleaved in one process:

- ``floor``: what a plain implementation does, a normalised linear layer plus cross-entropy
  (``F.linear(F.normalize(x), F.normalize(W)) * s`` then ``F.cross_entropy``);
- ``ours``: the marginface head (fused, class-chunked margin cross-entropy);
- ``pml``: pytorch-metric-learning's equivalent loss, where it has one.

Times are medians over interleaved repetitions; ratios are to the floor measured in the same
run. Extra peak memory is measured in a fresh process per figure: the rise of the process's
peak resident set size (``ru_maxrss``) over one step, after the inputs and weights exist.

    python bench/losses.py                         # 20,000 and 200,000 classes
    python bench/losses.py --classes 20000 --reps 7 --no-memory
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

HEADS = ["softmax", "normface", "sphereface", "cosface", "arcface", "combined", "subcenter_arcface"]
PML = {
    "normface": "NormalizedSoftmaxLoss",
    "sphereface": "SphereFaceLoss",
    "cosface": "CosFaceLoss",
    "arcface": "ArcFaceLoss",
}
SCALE = 64.0


def _rows(head: str, classes: int) -> int:
    return classes * 3 if head == "subcenter_arcface" else classes


def make_step(impl: str, head: str, classes: int, batch: int, dim: int) -> Callable[[], None]:
    """A closure running one forward + backward step of ``impl`` for ``head``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=g, requires_grad=True)
    labels = torch.randint(0, classes, (batch,), generator=g)
    if impl == "floor":
        rows = _rows(head, classes)
        # initialised in place: a temporary here would raise the peak before the step
        w = torch.nn.Parameter(torch.empty(rows, dim).normal_(0.0, 0.01, generator=g))
        bias = torch.nn.Parameter(torch.zeros(rows)) if head == "softmax" else None
        params = [p for p in (w, bias) if p is not None]

        def step() -> None:
            if head == "softmax":
                logits = F.linear(x, w, bias)
            else:
                logits = F.linear(F.normalize(x), F.normalize(w)) * SCALE
            F.cross_entropy(logits, labels).backward()
    elif impl == "ours":
        from marginface.losses import create

        kwargs = {} if head in ("softmax", "sphereface") else {"scale": SCALE}
        module = create(head, num_classes=classes, embedding_dim=dim, validate=False, **kwargs)
        params = list(module.parameters())

        def step() -> None:
            module(x, labels).backward()
    elif impl == "pml":
        from pytorch_metric_learning import losses

        cls = getattr(losses, PML[head])
        kwargs = (
            {"temperature": 1 / SCALE}
            if head == "normface"
            else ({} if head == "sphereface" else {"scale": SCALE})
        )
        if head == "arcface":
            kwargs["margin"] = math.degrees(0.5)
        module = cls(num_classes=classes, embedding_size=dim, **kwargs)
        params = list(module.parameters())

        def step() -> None:
            module(x, labels).backward()
    else:
        raise ValueError(impl)

    def run() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        step()

    return run


def implementations(head: str) -> list[str]:
    return ["floor", "ours"] + (["pml"] if head in PML else [])


def time_all(
    classes: int,
    batch: int,
    dim: int,
    reps: int,
    heads: list[str],
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    results: dict[str, dict[str, float]] = {}
    for head in heads:
        impls = implementations(head)
        steps = {impl: make_step(impl, head, classes, batch, dim) for impl in impls}
        for fn in steps.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {impl: [] for impl in impls}
        for _ in range(reps):
            for impl in impls:  # interleaved
                t0 = clock()
                steps[impl]()
                samples[impl].append(clock() - t0)
        results[head] = {impl: statistics.median(v) for impl, v in samples.items()}
        del steps
    return results


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_child(impl: str, head: str, classes: int, batch: int, dim: int) -> None:
    """Run in a fresh process: print the rise of peak RSS (bytes) over one step."""
    step = make_step(impl, head, classes, batch, dim)
    try:  # reset the peak: a child's ru_maxrss starts at its parent's size on Linux
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    before = _peak_rss()
    step()
    after = _peak_rss()
    print(json.dumps({"extra_bytes": after - before}))


def peak(impl: str, head: str, classes: int, batch: int, dim: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, head, str(classes), str(batch), str(dim)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--reps", type=int, default=0, help="0: 7 at <=50k classes, else 3")
    parser.add_argument("--heads", nargs="+", default=HEADS, choices=HEADS)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, steadier on a shared machine",
    )
    parser.add_argument(
        "--memory-at", type=int, default=200_000, help="class count at which to measure memory"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, head, classes, batch, dim = args.child
        peak_child(impl, head, int(classes), int(batch), int(dim))
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"dim {args.dim}, scale {SCALE}, {args.clock} clock"
    )
    for classes in args.classes:
        reps = args.reps or (7 if classes <= 50_000 else 3)
        print(f"\n== {classes:,} classes, median of {reps} interleaved steps ==")
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        times = time_all(classes, args.batch, args.dim, reps, args.heads, clock)
        memory = {}
        if not args.no_memory and classes == args.memory_at:
            for head in args.heads:
                memory[head] = {
                    impl: peak(impl, head, classes, args.batch, args.dim)
                    for impl in implementations(head)
                }
        header = f"{'head':<18}{'floor ms':>10}{'ours ms':>10}{'ours/floor':>11}"
        header += f"{'pml ms':>9}{'pml/floor':>10}"
        if memory:
            header += f"{'floor MB':>10}{'ours MB':>9}{'ours/floor':>11}{'pml MB':>8}"
        print(header)
        for head, t in times.items():
            line = f"{head:<18}{t['floor'] * 1e3:>10.1f}{t['ours'] * 1e3:>10.1f}"
            line += f"{t['ours'] / t['floor']:>10.2f}x"
            if "pml" in t:
                line += f"{t['pml'] * 1e3:>9.1f}{t['pml'] / t['floor']:>9.2f}x"
            else:
                line += f"{'-':>9}{'-':>10}"
            if memory:
                m = memory[head]
                line += f"{m['floor'] / 1e6:>10.0f}{m['ours'] / 1e6:>9.0f}"
                line += f"{m['ours'] / max(m['floor'], 1.0):>10.2f}x"
                line += f"{m['pml'] / 1e6:>8.0f}" if "pml" in m else f"{'-':>8}"
            print(line)
        if "subcenter_arcface" in times:
            print("(subcenter_arcface: 3 sub-centres, its floor uses 3x as many rows)")


if __name__ == "__main__":
    main()
