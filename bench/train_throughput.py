"""Training throughput: samples/s of full steps (backbone + margin head + optimiser).

Synthetic 112×112 batches already on the device, ArcFace (s = 64, m = 0.5) through
:class:`marginface.train.PartialFC`, SGD with momentum, gradient clipping, a per-step LR
schedule: the same step the trainer runs. bf16 autocast, channels_last and ``torch.compile``
on a GPU; no host synchronisation inside the timed loop (heads are built with
``validate=False``; the first batch is validated once).

    python bench/train_throughput.py                 # the full table on a GPU, reduced on CPU
    python bench/train_throughput.py --cases mbf:128 r50:512:2000000:0.2 --steps 30

On a GPU it prints each case's samples/s, its peak memory and the ratio to insightface
arcface_torch's figures on one H100 80GB (torch 2.11, fp16 AMP, single process), as given in
issue 3. On a CPU it runs a reduced case (mbf, batch 16, a few steps) and reports mbf samples/s.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn

MS1MV3_CLASSES = 93_431

#: insightface arcface_torch on one H100 80GB (samples/s), keyed by (model, batch, classes, r).
INSIGHTFACE_H100 = {
    ("r50", 128, MS1MV3_CLASSES, 1.0): 1956,
    ("r50", 512, MS1MV3_CLASSES, 1.0): 2422,
    ("r100", 128, MS1MV3_CLASSES, 1.0): 1285,
    ("mbf", 128, MS1MV3_CLASSES, 1.0): 3679,
    ("mbf", 512, MS1MV3_CLASSES, 1.0): 5240,
    ("r50", 512, 2_000_000, 0.2): 1886,
}

GPU_CASES = [
    ("r50", 128, MS1MV3_CLASSES, 1.0),
    ("r50", 512, MS1MV3_CLASSES, 1.0),
    ("r100", 128, MS1MV3_CLASSES, 1.0),
    ("r100", 512, MS1MV3_CLASSES, 1.0),
    ("mbf", 128, MS1MV3_CLASSES, 1.0),
    ("mbf", 512, MS1MV3_CLASSES, 1.0),
    ("r50", 512, 2_000_000, 0.2),
]
CPU_CASES = [("mbf", 16, MS1MV3_CLASSES, 1.0)]


@dataclass
class Result:
    model: str
    batch: int
    classes: int
    rate: float
    samples_per_s: float
    peak_mem_gib: float | None
    loss: float


def run_case(
    model: str,
    batch: int,
    classes: int,
    rate: float,
    *,
    device: torch.device,
    steps: int,
    warmup: int,
    amp: str,
    compile_: bool,
    channels_last: bool,
) -> Result:
    from marginface import backbones
    from marginface.train.partial_fc import PartialFC

    torch.manual_seed(0)
    backbone = backbones.create(model, embedding_dim=512).to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    with device:
        pfc = PartialFC.create("arcface", classes, 512, sample_rate=rate, seed=None, validate=False)
    run = torch.compile(backbone) if compile_ else backbone
    opt = torch.optim.SGD(
        [{"params": list(backbone.parameters())}, {"params": []}],
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / 10_000) ** 2)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    n_batches = 4
    images = [torch.randn(batch, 3, 112, 112, device=device) for _ in range(n_batches)]
    if channels_last:
        images = [x.contiguous(memory_format=torch.channels_last) for x in images]
    labels = [torch.randint(0, classes, (batch,), device=device) for _ in range(n_batches)]
    from marginface.losses import check_labels

    check_labels(labels[0].cpu(), batch, classes)  # the one validation, outside the loop

    def step(i: int) -> torch.Tensor:
        x, y = images[i % n_batches], labels[i % n_batches]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = pfc(run(x), y)
        scaler.scale(loss).backward()
        pfc.attach(opt)
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()
        pfc.detach(opt)
        opt.zero_grad(set_to_none=True)
        sched.step()
        return loss.detach()

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    total = torch.zeros((), device=device)
    t0 = time.perf_counter()
    for i in range(steps):
        total += step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Result(model, batch, classes, rate, steps * batch / seconds, peak, float(total) / steps)


def parse_case(text: str) -> tuple[str, int, int, float]:
    parts = text.split(":")
    model, batch = parts[0], int(parts[1]) if len(parts) > 1 else 128
    classes = int(parts[2]) if len(parts) > 2 else MS1MV3_CLASSES
    rate = float(parts[3]) if len(parts) > 3 else 1.0
    return model, batch, classes, rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--cases", nargs="*", help="model:batch[:classes[:rate]] ...")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--amp", default=None, choices=["bf16", "fp16", "none"])
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cases = (
        [parse_case(c) for c in args.cases] if args.cases else (GPU_CASES if cuda else CPU_CASES)
    )
    steps = args.steps or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    amp = args.amp or ("bf16" if cuda else "none")
    compile_ = cuda and not args.no_compile
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; torch {torch.__version__}; amp={amp}, compile={compile_}, "
        f"channels_last=True; {steps} timed steps after {warmup} warm-up"
    )
    print(
        f"{'model':6} {'batch':>5} {'classes':>9} {'PFC r':>5} {'samples/s':>10} "
        f"{'peak GiB':>8} {'insightface H100':>16} {'ratio':>6}"
    )
    for model, batch, classes, rate in cases:
        try:
            r = run_case(
                model,
                batch,
                classes,
                rate,
                device=device,
                steps=steps,
                warmup=warmup,
                amp=amp,
                compile_=compile_,
                channels_last=True,
            )
        except torch.OutOfMemoryError:
            print(f"{model:6} {batch:5d} {classes:9d} {rate:5.2f} {'out of memory':>10}")
            torch.cuda.empty_cache()
            continue
        ref = INSIGHTFACE_H100.get((model, batch, classes, rate))
        ratio = f"{r.samples_per_s / ref:6.2f}" if ref and cuda else "     -"
        peak = f"{r.peak_mem_gib:8.1f}" if r.peak_mem_gib is not None else "       -"
        print(
            f"{model:6} {batch:5d} {classes:9d} {rate:5.2f} {r.samples_per_s:10.1f} {peak} "
            f"{ref or '-':>16} {ratio}",
            flush=True,
        )
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
