"""The training engine: data, backbone, loss (with Partial FC), AMP, DDP, checkpoints, export.

``train(cfg)`` runs a whole training described by a :class:`TrainConfig` on one process or,
under ``torchrun``, on every rank of a DDP job (gloo on CPU, NCCL on GPUs):

* the backbone (and auxiliary losses such as the centre loss) are replicated with
  ``DistributedDataParallel``; the class centres of the margin head are sharded across ranks and
  sampled by :class:`~marginface.train.partial_fc.PartialFC`;
* each step's global batch is the same whatever the number of ranks (the samplers deal one
  seeded order), so 2 processes of batch B equal 1 process of batch 2B up to float rounding;
* the data comes through :func:`marginface.data.make_loader` over
  :class:`~marginface.data.SeededSamples` and :class:`~marginface.data.SeededBatches` (the path
  the data tests exercise), or from images preloaded on the device; augmentation is seeded per
  sample from ``(seed, epoch, index)``;
* where the run stands is one :class:`~marginface.train.checkpoint.RunState`; it is
  checkpointed with the RNG states, optimiser, scheduler and scaler, so ``resume=True``
  continues exactly where a run stopped;
* Ctrl-C finishes the current step, writes a checkpoint and exits;
* the run ends with ``weights.safetensors`` and a ``model.json`` card in the output folder.

This is the package's one training loop: the demo and the feature plots run it too, on images
they hold in memory (``Trainer(cfg, dataset=ArrayDataset(...))``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from marginface import backbones
from marginface.card import Preprocessing
from marginface.data import (
    FaceBatch,
    FaceDataset,
    PKSampler,
    ResumableSampler,
    SeededBatches,
    SeededSamples,
    SkipCounter,
    build_transform,
    make_loader,
    open_dataset,
)
from marginface.errors import ConfigError, DataError, ModelError
from marginface.extras import install_hint
from marginface.losses import CenterLoss, InterClassLoss, TripletLoss, check_labels
from marginface.train import checkpoint as ck
from marginface.train.checkpoint import RunState
from marginface.train.config import TrainConfig, check_model_kwargs
from marginface.train.distill import DistillHead, load_teacher
from marginface.train.distributed import DistEnv, all_reduce_max, barrier, cleanup, init_distributed
from marginface.train.export import export_model
from marginface.train.partial_fc import PartialFC
from marginface.train.preload import PreloadedImages, PreloadedLoader, preload_images
from marginface.train.schedule import build_scheduler
from marginface.train.verify import PairVerifier

__all__ = ["TrainData", "TrainModel", "TrainResult", "Trainer", "build_data", "train"]


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    steps: int
    epochs_done: float
    last_loss: float
    interrupted: bool
    skipped_samples: int
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_second: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)


# -- data ---------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """The training data as the loop reads it: one epoch at a time, from any batch on."""

    dataset: FaceDataset
    preprocessing: Preprocessing
    samples: SeededSamples
    batches: SeededBatches
    steps_per_epoch: int
    total_steps: int
    teacher: Tensor | None
    preloaded: PreloadedImages | None
    device_loader: PreloadedLoader | None
    loader_options: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def loader(self, epoch: int, batches_done: int = 0) -> Any:
        """The batches of ``epoch`` from its batch ``batches_done`` on (a resume in mid-epoch)."""
        self.batches.seek(epoch, batches_done)
        if self.device_loader is not None:
            return self.device_loader
        gen = torch.Generator().manual_seed(self.batches.seed * 1_000_003 + epoch)
        return make_loader(
            self.samples, batch_sampler=self.batches, generator=gen, **self.loader_options
        )


def build_data(
    cfg: TrainConfig,
    env: DistEnv,
    *,
    dataset: FaceDataset | None = None,
    preloaded: PreloadedImages | None = None,
) -> TrainData:
    """Open ``cfg.data.train`` (or use ``dataset``), its sampler, loader and teacher.

    ``preloaded`` images are reused when they come from the same data set (``data.preload``).
    """
    d = cfg.data
    pre = Preprocessing(input_size=tuple(d.input_size), color=d.color, mean=d.mean, std=d.std)
    transform = build_transform(d.augment, pre)
    base = open_dataset(d.train) if dataset is None else dataset
    if len(base) == 0:
        raise DataError(f"no training images in {d.train}")
    if base.num_classes < 2:
        raise DataError(
            f"{d.train}: training needs at least 2 identities, found {base.num_classes}"
        )
    B = cfg.batch_size
    sampler: PKSampler | ResumableSampler
    if d.sampler == "pk":
        sampler = PKSampler(
            base.labels,
            p=B // d.pk_k,
            k=d.pk_k,
            seed=cfg.seed,
            min_images=d.pk_min_images,
            batches_per_epoch=d.pk_batches_per_epoch,
            rank=env.rank,
            world_size=env.world_size,
        )
    else:
        sampler = ResumableSampler(
            len(base),
            shuffle=True,
            seed=cfg.seed,
            rank=env.rank,
            world_size=env.world_size,
            drop_last=True,
        )
    batches = SeededBatches(sampler, batch_size=B, seed=cfg.seed, drop_last=d.drop_last)
    steps_per_epoch = batches.per_epoch
    if steps_per_epoch < 1:
        raise DataError(
            f"{len(base)} images make no full batch of {B} on "
            f"{env.world_size} rank(s); lower batch_size"
        )
    teacher = None
    if cfg.distill is not None:
        teacher = load_teacher(cfg.distill.teacher, base).to(env.device)
    device_loader = None
    if d.preload == "device":
        if preloaded is None or not preloaded.matches(base, pre.input_size):
            preloaded = preload_images(
                base,
                pre.input_size,
                env.device,
                threads=max(1, d.workers),
                progress=env.is_main and cfg.log.console,
            )
        elif preloaded.images.device != env.device:
            raise DataError("the preloaded images are on another device")
        device_loader = PreloadedLoader(
            preloaded, batches, pre, transform.augment.hflip, sources=base.source
        )
    if cfg.steps is not None:
        total_steps = int(cfg.steps)
    else:
        assert cfg.epochs is not None  # TrainConfig requires epochs or steps
        total_steps = max(1, math.ceil(float(cfg.epochs) * steps_per_epoch))
    return TrainData(
        dataset=base,
        preprocessing=pre,
        samples=SeededSamples(base, transform, with_index=teacher is not None),
        batches=batches,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        teacher=teacher,
        preloaded=preloaded,
        device_loader=device_loader,
        loader_options={
            "num_workers": d.workers,
            "pin_memory": d.pin_memory and env.device.type == "cuda",
            "prefetch_factor": d.prefetch_factor if d.workers > 0 else None,
        },
    )


# -- the model ----------------------------------------------------------------------------------
class _Net(nn.Module):
    """Backbone plus the replicated auxiliary loss (centre loss); what DDP wraps."""

    _run: Callable[[Tensor], Tensor]  # the backbone, compiled or not (not a submodule)

    def __init__(
        self,
        backbone: nn.Module,
        center: CenterLoss | None,
        center_weight: float,
        compile_backbone: bool,
        distill: nn.Module | None = None,
        distill_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.center = center
        self.center_weight = center_weight
        self.distill = distill
        self.distill_weight = distill_weight
        fn = torch.compile(backbone) if compile_backbone else backbone
        object.__setattr__(self, "_run", fn)

    def forward(
        self, images: Tensor, labels: Tensor, teacher: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        emb = self._run(images)
        aux = None
        if self.center is not None:
            aux = self.center_weight * self.center(emb.float(), labels)
        if self.distill is not None and teacher is not None:
            term = self.distill_weight * self.distill(emb.float(), teacher)
            aux = term if aux is None else aux + term
        return emb, aux


@dataclass
class TrainModel:
    """The networks of a run: the backbone, what DDP wraps, and the loss heads."""

    backbone: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    net: _Net
    ddp: nn.Module
    pfc: PartialFC | None
    triplet: TripletLoss | None
    interclass: tuple[float, InterClassLoss] | None


def build_backbone(cfg: TrainConfig, env: DistEnv) -> nn.Module:
    """The backbone ``cfg`` describes, on the training device (it needs no data)."""
    backbone = backbones.create(
        cfg.backbone.name, embedding_dim=cfg.backbone.embedding_dim, **_architecture_kwargs(cfg)
    )
    if cfg.backbone.sync_bn and env.distributed and env.device.type == "cuda":
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    backbone = backbone.to(env.device)
    if cfg.channels_last:
        # Module.to takes memory_format at runtime; torch's overloads leave it out
        backbone = backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return backbone


def build_model(cfg: TrainConfig, env: DistEnv, backbone: nn.Module, data: TrainData) -> TrainModel:
    """The loss heads for ``data``'s classes around ``backbone``, and the DDP wrapper."""
    dev = env.device
    dim = cfg.backbone.embedding_dim
    center, center_w, interclass = None, 0.0, None
    for term in cfg.loss.extra:
        kw = dict(term.kwargs)
        if term.name.lower() == "center":
            try:
                center = CenterLoss(data.num_classes, dim, **kw).to(dev)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"loss.extra center: {exc}") from None
            center_w = term.weight
        else:
            interclass = (term.weight, InterClassLoss(**kw))
    distill = None
    if cfg.distill is not None and data.teacher is not None:
        distill = DistillHead(
            dim, int(data.teacher.shape[1]), projection=cfg.distill.projection
        ).to(dev)
    net = _Net(
        backbone,
        center,
        center_w,
        cfg.compile,
        distill,
        cfg.distill.weight if cfg.distill is not None else 0.0,
    )
    ddp: nn.Module = net
    if env.distributed:
        ddp = DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False
        )
    kwargs = dict(cfg.loss.kwargs)
    pfc: PartialFC | None = None
    triplet: TripletLoss | None = None
    try:
        if cfg.loss.is_triplet:
            triplet = TripletLoss(**kwargs).to(dev)
        else:
            pfc = PartialFC.create(
                cfg.loss.name,
                data.num_classes,
                dim,
                sample_rate=cfg.loss.sample_rate,
                rank=env.rank,
                world_size=env.world_size,
                group=torch.distributed.group.WORLD if env.distributed else None,
                seed=cfg.seed,
                **kwargs,
            ).to(dev)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss {cfg.loss.name!r}: {exc}") from None
    if pfc is not None and cfg.loss.init == "unit" and pfc.head.normalize_weight:
        with torch.no_grad():  # the seeded rows, scaled to unit length: the same on any ranks
            pfc.head.weight.copy_(nn.functional.normalize(pfc.head.weight, dim=-1))
    return TrainModel(
        backbone=backbone,
        arch=backbones.canonical_name(cfg.backbone.name),
        arch_kwargs=_architecture_kwargs(cfg),
        net=net,
        ddp=ddp,
        pfc=pfc,
        triplet=triplet,
        interclass=interclass,
    )


@dataclass
class TrainOptim:
    """The optimiser, its learning-rate schedule and the fp16 gradient scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def build_optim(cfg: TrainConfig, env: DistEnv, model: TrainModel, data: TrainData) -> TrainOptim:
    """SGD or AdamW over the replicated parameters, plus the head's group Partial FC fills."""
    o = cfg.optim
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.net.parameters() if p.requires_grad]}
    ]
    if model.pfc is not None:
        wd = o.weight_decay if o.head_weight_decay is None else o.head_weight_decay
        groups.append({"params": [], "lr": o.lr * o.head_lr_scale, "weight_decay": wd})
    optimizer: torch.optim.Optimizer
    if o.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov and o.momentum > 0,
        )
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
    return TrainOptim(
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.schedule, data.total_steps, data.steps_per_epoch),
        scaler=torch.amp.GradScaler(env.device.type, enabled=cfg.amp == "fp16"),
    )


def _amp_dtype(mode: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)


# -- logging ------------------------------------------------------------------------------------
class _RunLog:
    """Console messages, progress bar, ``metrics.csv`` and TensorBoard of one session.

    Rank 0 writes; on the other ranks every call does nothing. ``log.console: false`` keeps the
    console quiet (errors still raise).
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg = cfg
        self.main = env.is_main
        self.console = env.is_main and cfg.log.console
        self.bar: Any = None
        self.csv_file: Any = None
        self.csv: Any = None
        self.tb: Any = None

    def open(self, *, append: bool, step: int, total: int) -> None:
        """Open ``metrics.csv`` (appended to on a resume), TensorBoard and the progress bar."""
        if not self.main:
            return
        out = Path(self.cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.csv"
        new = not path.exists() or not append
        self.csv_file = path.open("w" if new else "a", newline="", encoding="utf-8")
        self.csv = csv.writer(self.csv_file)
        if new:
            self.csv.writerow(["step", "epoch", "kind", "name", "value"])
        if self.cfg.log.tensorboard:
            try:  # optional: tensorboard (marginface[train]) is not a dependency
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(
                    log_dir=str(out / "tensorboard"), purge_step=step if append else None
                )
            except ImportError:
                self.say(
                    f"note: TensorBoard is not installed ({install_hint('train')}); "
                    "metrics go to metrics.csv only"
                )
        if self.cfg.log.progress and self.console:
            self.bar = tqdm(
                total=total,
                initial=step,
                unit="step",
                dynamic_ncols=True,
                desc="train",
                smoothing=0.05,
            )

    def say(self, text: str) -> None:
        if not self.console or not text:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def scalars(self, kind: str, values: dict[str, Any], step: int, epoch: float) -> None:
        for name, value in values.items():
            if value is None:
                continue
            if self.csv is not None:
                self.csv.writerow([step, f"{epoch:.4f}", kind, name, f"{value:.6g}"])
            if self.tb is not None:
                self.tb.add_scalar(f"{kind}/{name}", value, step)
        if self.csv is not None:
            self.csv_file.flush()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def postfix(self, **values: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.csv is not None:
            self.csv_file.close()
            self.csv = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class _Meter:
    """The loop's running loss sums, kept on the device and read (one synchronisation) only at
    log steps, epoch ends and checkpoints; and the clock of the samples-per-second figure."""

    def __init__(self, step: int) -> None:
        self.log_sum: Tensor | None = None
        self.log_steps = 0
        self.epoch_sum: Tensor | None = None  # float64: the same total whenever it is read
        self.epoch_samples = 0
        self.clock = time.perf_counter()
        self.clock_step = step

    def add(self, loss: Tensor, samples: int) -> None:
        self.log_sum = loss if self.log_sum is None else self.log_sum + loss
        self.log_steps += 1
        weighted = loss.double() * samples
        self.epoch_sum = weighted if self.epoch_sum is None else self.epoch_sum + weighted
        self.epoch_samples += samples

    def log_mean(self) -> float:
        """The mean step loss since the last call."""
        if self.log_sum is None:
            return math.nan
        value = float(self.log_sum.item()) / self.log_steps
        self.log_sum, self.log_steps = None, 0
        return value

    def rate(self, step: int, samples_per_step: int) -> float:
        """Samples per second since the last call."""
        now = time.perf_counter()
        value = (step - self.clock_step) * samples_per_step / max(now - self.clock, 1e-9)
        self.clock, self.clock_step = now, step
        return value

    def flush(self, state: RunState) -> None:
        """Move the epoch's sums into ``state`` (before it is saved or the epoch closed)."""
        if self.epoch_sum is not None:
            state.epoch_loss_sum += float(self.epoch_sum.item())
            state.epoch_samples += self.epoch_samples
        self.epoch_sum, self.epoch_samples = None, 0


def _finite(loss: float, where: str) -> float:
    if not math.isfinite(loss):
        raise ModelError(f"the loss became {loss} {where}: lower optim.lr or check the data")
    return loss


def _changed(saved: Any, mine: Any) -> bool:
    """Whether a setting stored in a checkpoint differs from this config's (keys the checkpoint
    lacks, options added since it was written, count as unchanged)."""
    if isinstance(saved, dict) and isinstance(mine, dict):
        return any(_changed(saved[k], mine[k]) for k in mine if k in saved)
    return bool(saved != mine)


# -- the run ------------------------------------------------------------------------------------
class Trainer:
    """One training run; :meth:`run` trains, checkpoints, verifies and exports.

    Where the run stands is :attr:`state` (a :class:`~marginface.train.checkpoint.RunState`),
    the one object checkpoints save and a resume restores. :attr:`data`, :attr:`model` and
    :attr:`optim` are built by :meth:`run` (None before).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        env: DistEnv | None = None,
        preloaded: PreloadedImages | None = None,
        dataset: FaceDataset | None = None,
    ) -> None:
        self.cfg = cfg
        self.resume = resume
        self.env = env or init_distributed(cfg.device)
        #: Images decoded on the device to reuse (``data.preload``); after :meth:`run`, the
        #: ones it used.
        self.preloaded = preloaded
        #: A data set to train on instead of opening ``cfg.data.train`` (images in memory).
        self.dataset = dataset
        #: Stop (checkpoint, as on Ctrl-C) once this many steps are done; ``None``: never.
        self.stop_after: int | None = None
        #: Called with the run state after each finished epoch (e.g. to report progress).
        self.on_epoch_end: Callable[[RunState], None] | None = None
        self.state = RunState()
        self.data: TrainData | None = None
        self.model: TrainModel | None = None
        self.optim: TrainOptim | None = None
        self.verifier: PairVerifier | None = None
        self.skips = SkipCounter()
        self.log = _RunLog(cfg, self.env)
        self._own_env = env is None
        self._stop = threading.Event()
        self._interrupts = 0
        self._session_start = time.perf_counter()
        self._checkpointed_at = -1

    def _parts(self) -> tuple[TrainData, TrainModel, TrainOptim]:
        if self.data is None or self.model is None or self.optim is None:
            raise RuntimeError("the trainer's parts are built by run()")
        return self.data, self.model, self.optim

    # -- set-up ---------------------------------------------------------------------------------
    def _seed_everything(self) -> None:
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _build(self) -> None:
        cfg, env = self.cfg, self.env
        # The constructors' arguments before any data (a config read from a file is checked
        # already; one changed in code with model_copy is not), and the backbone first: it needs
        # no data, and building the data draws no torch random numbers.
        check_model_kwargs(cfg)
        self._seed_everything()
        backbone = build_backbone(cfg, env)
        self.data = build_data(cfg, env, dataset=self.dataset, preloaded=self.preloaded)
        self.preloaded = self.data.preloaded
        self.model = build_model(cfg, env, backbone, self.data)
        self.optim = build_optim(cfg, env, self.model, self.data)

    # -- checkpoints ----------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        c = self.cfg
        data, _, _ = self._parts()
        return {
            "backbone": c.backbone.model_dump(mode="json"),
            "loss": c.loss.model_dump(mode="json"),
            "batch_size": c.batch_size,
            "world_size": self.env.world_size,
            "num_classes": data.num_classes,
            "sampler": c.data.sampler,
            "distill": None if c.distill is None else c.distill.model_dump(mode="json"),
        }

    def _seconds(self) -> float:
        return self.state.seconds + time.perf_counter() - self._session_start

    def save_checkpoint(self) -> Path:
        """Write a complete checkpoint of the current step (every rank must call this)."""
        data, model, optim = self._parts()
        env, st = self.env, self.state
        root = ck.checkpoint_dir(self.cfg.output)
        name = f"step_{st.step:08d}"
        final = root / name
        tmp = root / f".{name}.tmp"
        if env.is_main:
            root.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            tmp.mkdir(parents=True, exist_ok=True)
        barrier(env)
        rank_state = {
            "rng": ck.rng_state(),
            "rank": env.rank,
            "pfc": model.pfc.shard_state() if model.pfc is not None else None,
        }
        ck.atomic_save(rank_state, tmp / f"rank{env.rank:05d}.pt")
        if env.is_main:
            run = replace(st, seconds=self._seconds(), skipped=self.skips.total)
            ck.atomic_save(
                ck.trainer_state(
                    run,
                    sampler=data.batches.state_dict(st.batch_in_epoch),
                    net=model.net.state_dict(),
                    optimizer=optim.optimizer.state_dict(),
                    scheduler=optim.scheduler.state_dict(),
                    scaler=optim.scaler.state_dict(),
                    triplet=model.triplet.state_dict() if model.triplet is not None else None,
                    identity=self._identity(),
                    config=self.cfg.model_dump(mode="json"),
                ),
                tmp / "trainer.pt",
            )
        barrier(env)
        if env.is_main:
            os.replace(tmp, final)
            ck.write_text_atomic(root / ck.LATEST, name + "\n")
            ck.prune(self.cfg.output, self.cfg.checkpoint.keep)
        barrier(env)
        self._checkpointed_at = st.step
        return final

    def _restore(self) -> str:
        """Load the newest checkpoint into the parts and the run state; returns the message."""
        data, model, optim = self._parts()
        path = ck.find_latest(self.cfg.output)
        saved = ck.load_file(path / "trainer.pt", "trainer state")
        run = ck.read_run_state(saved, path)
        stored = saved.get("identity", {})
        mine = self._identity()
        diff = [k for k in mine if k in stored and _changed(stored[k], mine[k])]
        if diff:
            raise ConfigError(
                f"--resume: the checkpoint {path} was written with different "
                f"{', '.join(diff)} than this config; resume with the same "
                "settings (or start a new output folder)"
            )
        rank_state = ck.load_file(path / f"rank{self.env.rank:05d}.pt", "this rank's state")
        model.net.load_state_dict(saved["net"])
        optim.optimizer.load_state_dict(saved["optimizer"])
        optim.scheduler.load_state_dict(saved["scheduler"])
        optim.scaler.load_state_dict(saved["scaler"])
        if model.triplet is not None and saved.get("triplet") is not None:
            model.triplet.load_state_dict(saved["triplet"])
        if model.pfc is not None:
            model.pfc.load_shard_state(rank_state["pfc"])
        data.batches.load_state_dict({**saved["sampler"], "rank": self.env.rank})
        self.state = run
        self.skips.total = run.skipped
        ck.set_rng_state(rank_state["rng"])
        self._checkpointed_at = run.step
        return (
            f"resumed from {path} at step {run.step} (epoch {run.epoch}, "
            f"batch {run.batch_in_epoch})"
        )

    # -- the step -------------------------------------------------------------------------------
    def _train_step(self, images: Tensor, labels: Tensor, indices: Tensor | None) -> Tensor:
        data, model, optim = self._parts()
        cfg = self.cfg
        amp = _amp_dtype(cfg.amp)
        teacher = None
        if data.teacher is not None and indices is not None:
            teacher = data.teacher.index_select(0, indices).float()
        with torch.autocast(
            self.env.device.type, dtype=amp or torch.float32, enabled=amp is not None
        ):
            emb, aux = model.ddp(images, labels, teacher)
            if model.pfc is not None:
                loss = model.pfc(emb, labels)
                if model.interclass is not None:
                    w, term = model.interclass
                    loss = loss + w * term(model.pfc.sampled_weight())
            else:
                assert model.triplet is not None
                loss = model.triplet(emb.float(), labels)
            if aux is not None:
                loss = loss + aux
        optim.scaler.scale(loss).backward()
        if model.pfc is not None:
            model.pfc.attach(optim.optimizer)
        if cfg.optim.grad_clip is not None:
            optim.scaler.unscale_(optim.optimizer)
            nn.utils.clip_grad_norm_(model.backbone.parameters(), cfg.optim.grad_clip)
        optim.scaler.step(optim.optimizer)
        optim.scaler.update()
        if model.pfc is not None:
            model.pfc.detach(optim.optimizer)
        optim.optimizer.zero_grad(set_to_none=True)
        optim.scheduler.step()
        return loss.detach()

    def _fill(self, batch: FaceBatch) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """Keep the batch shape fixed: replace dropped (unreadable) samples by repeats.

        ``None`` when every sample of the batch was dropped."""
        n = len(batch)
        if n == 0:
            return None
        want = n + len(batch.skipped)
        images, labels, indices = batch.images, batch.labels, batch.indices
        if n < want:
            idx = torch.arange(want) % n
            images, labels = images[idx.to(images.device)], labels[idx.to(labels.device)]
            if indices is not None:
                indices = indices[idx.to(indices.device)]
        dev = self.env.device
        images = images.to(dev, non_blocking=True)
        labels = labels.to(dev, non_blocking=True)
        if indices is not None:
            indices = indices.to(dev, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels, indices

    def _validate_first(self, labels: Tensor, batch_size: int) -> None:
        """Check the first batch thoroughly, then let the loss heads skip validation."""
        data, model, _ = self._parts()
        check_labels(labels.cpu(), batch_size, data.num_classes)
        if model.pfc is not None:
            model.pfc.head.validate = False
        if model.net.center is not None:
            model.net.center.validate = False
        if model.triplet is not None:
            model.triplet.validate = False

    # -- logging and verification ---------------------------------------------------------------
    def _log(self, kind: str, values: dict[str, Any]) -> None:
        data, _, _ = self._parts()
        st = self.state
        self.log.scalars(kind, values, st.step, st.epoch + st.batch_in_epoch / data.steps_per_epoch)

    def _log_train(self, meter: _Meter) -> None:
        _, _, optim = self._parts()
        st = self.state
        st.last_loss = _finite(meter.log_mean(), f"at step {st.step}")
        st.samples_per_second = meter.rate(st.step, self.cfg.batch_size * self.env.world_size)
        lr = optim.optimizer.param_groups[0]["lr"]
        self._log("train", {"loss": st.last_loss, "lr": lr, "samples_per_s": st.samples_per_second})
        self.log.postfix(
            loss=f"{st.last_loss:.3f}", lr=f"{lr:.3g}", sps=f"{st.samples_per_second:.0f}"
        )

    def _setup_verify(self) -> None:
        data, _, _ = self._parts()
        v = self.cfg.verify
        if v.pairs is None or not self.env.is_main:
            return
        self.verifier = PairVerifier(
            v.pairs,
            root=v.root,
            aligned=v.aligned,
            preprocessing=data.preprocessing,
            flip=v.flip,
            batch_size=v.batch_size,
            name=v.name,
        )
        n_fail = len(self.verifier.failures)
        self.log.say(
            f"verification set {self.verifier.name}: {self.verifier.pairs.n_pairs} "
            f"pairs, {len(self.verifier.pairs.images)} images"
            f"{f', {n_fail} without a usable face' if n_fail else ''}"
            f" ({'aligned crops' if self.verifier.aligned else 'detected and aligned'})"
        )

    def verify(self) -> dict[str, Any] | None:
        """Score the pairs file with the current backbone (rank 0; others wait)."""
        _, model, _ = self._parts()
        st = self.state
        result = None
        if self.verifier is not None:
            res = self.verifier.evaluate(
                model.backbone,
                self.env.device,
                amp_dtype=_amp_dtype(self.cfg.amp),
                channels_last=self.cfg.channels_last,
            )
            result = res.to_dict()
            st.last_verify = result
            self.log.say(f"step {st.step}: {res}")
            self._log(
                "verify", {k: v for k, v in result.items() if isinstance(v, float) or v is None}
            )
        st.verified_at = st.step
        barrier(self.env)
        return result

    # -- signals --------------------------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        self._stop.set()
        if self.env.is_main:
            print(
                "\ninterrupted: finishing this step and writing a checkpoint "
                "(Ctrl-C again to abort at once)",
                flush=True,
            )

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train until ``epochs``/``steps`` are done or Ctrl-C; then checkpoint and export."""
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._run()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self._own_env:
                cleanup(self.env)

    def _run(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        self._build()
        data, model, _ = self._parts()
        self.state = RunState()
        self._session_start = time.perf_counter()
        resumed = self._restore() if self.resume else ""
        st = self.state
        self.log.open(append=self.resume, step=st.step, total=data.total_steps)
        try:
            self.log.say(resumed)
            self.log.say(
                f"training {model.arch} ({cfg.backbone.embedding_dim}-d) with "
                f"{cfg.loss.name} on {len(data.dataset)} images of {data.num_classes} "
                f"identities; {data.total_steps} steps of {cfg.batch_size}×"
                f"{env.world_size} on {env.device} ({cfg.amp})"
            )
            self._setup_verify()
            if cfg.verify.at_start and st.step == 0:
                self.verify()
            interrupted = self._loop()
            if st.step != self._checkpointed_at:
                self.save_checkpoint()
            if not interrupted and st.verified_at != st.step:
                self.verify()
            seconds = self._seconds()
            if env.is_main and not interrupted:
                self._export(seconds)
        finally:
            self.log.close()
        if self.skips.total:
            self.log.say(self.skips.summary())
        return TrainResult(
            output=Path(cfg.output),
            steps=st.step,
            epochs_done=st.step / data.steps_per_epoch,
            last_loss=st.last_loss,
            interrupted=interrupted,
            skipped_samples=self.skips.total,
            metrics=st.last_verify or {},
            seconds=seconds,
            samples_per_second=st.samples_per_second,
            epoch_losses=list(st.epoch_losses),
        )

    def _loop(self) -> bool:
        """Train until the last step, or until a stop is asked for (then checkpoint and return
        True). Everything that outlives a step is in :attr:`state`."""
        cfg, env, st = self.cfg, self.env, self.state
        data, _, _ = self._parts()
        meter = _Meter(st.step)
        first = True
        while st.step < data.total_steps:
            for batch in data.loader(st.epoch, st.batch_in_epoch):
                self.skips.update(batch)
                filled = self._fill(batch)
                if filled is None:  # never train a stale batch again in its place
                    raise DataError(
                        f"every image of a whole batch was unreadable:\n{self.skips.summary()}"
                    )
                images, labels, indices = filled
                if first:
                    self._validate_first(labels, images.shape[0])
                    first = False
                meter.add(self._train_step(images, labels, indices), images.shape[0])
                st.step += 1
                st.batch_in_epoch += 1
                self.log.advance()
                stop = self._stop.is_set() or (
                    self.stop_after is not None and st.step >= self.stop_after
                )
                at_log = st.step % cfg.log.every_steps == 0 or st.step == data.total_steps
                if at_log:
                    self._log_train(meter)
                if env.distributed:  # agree on stopping, at log steps only
                    stop = at_log and all_reduce_max(env, float(stop)) > 0
                if stop:
                    meter.flush(st)
                    self.save_checkpoint()
                    self.log.say(f"stopped at step {st.step}; continue with --resume")
                    return True
                if st.step % cfg.checkpoint.every_steps == 0:
                    meter.flush(st)
                    self.save_checkpoint()
                if cfg.verify.every_steps and st.step % cfg.verify.every_steps == 0:
                    self.verify()
                if st.step >= data.total_steps:
                    break
            else:
                self._end_epoch(meter)
                if st.step < data.total_steps:
                    if cfg.checkpoint.at_epoch_end and st.step != self._checkpointed_at:
                        self.save_checkpoint()
                    if cfg.verify.at_epoch_end and st.verified_at != st.step:
                        self.verify()
                continue
            if st.batch_in_epoch >= data.steps_per_epoch:
                self._end_epoch(meter)
        meter.flush(st)
        return False

    def _end_epoch(self, meter: _Meter) -> None:
        st = self.state
        meter.flush(st)
        if st.epoch_samples:
            loss = st.epoch_loss_sum / st.epoch_samples
            st.epoch_losses.append(_finite(loss, f"in epoch {st.epoch + 1}"))
        st.epoch_loss_sum, st.epoch_samples = 0.0, 0
        st.epoch += 1
        st.batch_in_epoch = 0
        if self.on_epoch_end is not None:
            self.on_epoch_end(st)

    def _export(self, seconds: float) -> None:
        data, model, _ = self._parts()
        cfg, st = self.cfg, self.state
        data_name = cfg.data.name or Path(cfg.data.train).name
        training = {
            "data": {
                "path": str(cfg.data.train),
                "name": data_name,
                "images": len(data.dataset),
                "identities": data.num_classes,
                "augment": cfg.data.augment,
                "sampler": cfg.data.sampler,
                "skipped_images": self.skips.total,
            },
            "backbone": {"name": model.arch, "kwargs": model.arch_kwargs},
            "loss": cfg.loss.model_dump(mode="json"),
            "optim": cfg.optim.model_dump(mode="json"),
            "schedule": cfg.schedule.model_dump(mode="json"),
            "amp": cfg.amp,
            "batch_size": cfg.batch_size,
            "world_size": self.env.world_size,
            "global_batch": cfg.batch_size * self.env.world_size,
            "steps": st.step,
            "epochs": round(st.step / data.steps_per_epoch, 4),
            "seed": cfg.seed,
            "wall_seconds": round(seconds, 1),
            "device": _device_name(self.env.device),
            "preload": cfg.data.preload,
            "distill": None
            if cfg.distill is None
            else {
                **cfg.distill.model_dump(mode="json"),
                "note": "knowledge distillation: weight·(1 − cos(P·student, teacher)) with the "
                "teacher's embeddings of the training crops",
            },
            "command": "marginface train " + json.dumps(str(cfg.output)),
        }
        metrics = {}
        if st.last_verify is not None and self.verifier is not None:
            metrics[self.verifier.name] = {
                **st.last_verify,
                "protocol": (
                    "10-fold accuracy, flip TTA" if self.verifier.pairs.n_folds >= 2 else ""
                ),
            }
        name = cfg.name or Path(cfg.output).name
        export_model(
            cfg.output,
            model.backbone,
            name=name,
            architecture=model.arch,
            embedding_dim=cfg.backbone.embedding_dim,
            preprocessing=data.preprocessing,
            training=training,
            metrics=metrics,
            architecture_kwargs=dict(model.arch_kwargs),
        )
        self.log.say(f"wrote {Path(cfg.output) / 'weights.safetensors'} and model.json")


def _architecture_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The backbone's constructor arguments, with ``input_size`` taken from ``data.input_size``
    (a network whose head depends on the input size must be built for the crops it gets)."""
    if not backbones.takes_input_size(cfg.backbone.name):
        return dict(cfg.backbone.kwargs)
    return {**cfg.backbone.kwargs, "input_size": [int(v) for v in cfg.data.input_size]}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    preloaded: PreloadedImages | None = None,
    dataset: FaceDataset | None = None,
) -> TrainResult:
    """Run the training ``cfg`` describes (one process, or one rank under torchrun).

    ``preloaded``: images already decoded on the device (``data.preload: device``), reused
    when they come from the same data set (e.g. by the loss comparison). ``dataset``: train on
    it instead of opening ``cfg.data.train`` (images in memory).
    """
    return Trainer(cfg, resume=resume, preloaded=preloaded, dataset=dataset).run()
