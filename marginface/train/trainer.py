"""The training engine: data, backbone, loss (with Partial FC), AMP, DDP, checkpoints, export.

``train(cfg)`` runs a whole training described by a :class:`TrainConfig` on one process or,
under ``torchrun``, on every rank of a DDP job (gloo on CPU, NCCL on GPUs):

* the backbone (and auxiliary losses such as the centre loss) are replicated with
  ``DistributedDataParallel``; the class centres of the margin head are sharded across ranks and
  sampled by :class:`~marginface.train.partial_fc.PartialFC`;
* each step's global batch is the same whatever the number of ranks (the samplers deal one
  seeded order), so 2 processes of batch B equal 1 process of batch 2B up to float rounding;
* augmentation is seeded per sample from ``(seed, epoch, index)``, and RNG states, sampler
  position, optimiser, scheduler and scaler are checkpointed, so ``resume=True`` continues
  exactly where a run stopped;
* Ctrl-C finishes the current step, writes a checkpoint and exits;
* the run ends with ``weights.safetensors`` and a ``model.json`` card in the output folder.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from marginface.card import Preprocessing
from marginface.errors import ConfigError, DataError, ImageError, ModelError
from marginface.train.config import TrainConfig
from marginface.train.distributed import DistEnv, all_reduce_max, barrier, cleanup, init_distributed

__all__ = ["TrainResult", "Trainer", "train"]


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


# -- data ---------------------------------------------------------------------------------------
class _TrainSet(torch.utils.data.Dataset):
    """A face data set whose samples are ``(index, epoch, seed)`` keys: seeded augmentation.

    Each sample's augmentation is drawn from ``(seed, epoch, index)`` alone, so it does not
    depend on which worker loads it, on the number of ranks, or on a resume in mid-epoch.
    """

    def __init__(self, base: Any, augment: Any, pre: Preprocessing) -> None:
        self.base = base
        self.augment = augment
        self.pre = pre
        self.with_index = False  # also return the sample index (for distillation)
        self._pipeline: Any = None

    def __len__(self) -> int:
        return len(self.base)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"] = None
        return state

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        from marginface.data import SkippedSample, to_tensor
        from marginface.data.augment import resize_to

        index, epoch, seed = key
        try:
            image = self.base.load_image(index)
        except (ImageError, DataError) as exc:
            return SkippedSample(index, self.base.source(index), str(exc).split(": ", 1)[-1])
        image = resize_to(image, self.pre.input_size)
        if not self.augment.is_identity:
            if self._pipeline is None:
                from marginface.data.augment import _build_albumentations

                self._pipeline = _build_albumentations(self.augment, seed=0)
            state = np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0]
            self._pipeline.set_random_seed(int(state))
            image = self._pipeline(image=image)["image"]
        if self.with_index:
            return to_tensor(image, self.pre), int(self.base.labels[index]), index
        return to_tensor(image, self.pre), int(self.base.labels[index])


def _collate_indexed(batch: list[Any]) -> Any:
    """``collate_faces`` that also keeps each sample's data set index (``batch.indices``)."""
    from torch.utils.data import default_collate

    from marginface.data import SkippedSample, collate_faces

    out = collate_faces([b[:2] if isinstance(b, tuple) else b for b in batch])
    good = [b[2] for b in batch if not isinstance(b, SkippedSample)]
    out.indices = default_collate(good) if good else torch.empty(0, dtype=torch.long)
    return out


class _KeyedBatches:
    """Turns a batch sampler of indices into batches of ``(index, epoch, seed)`` keys."""

    def __init__(self, batches: Any, seed: int) -> None:
        self.batches = batches
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for batch in self.batches:
            yield [(int(i), self.epoch, self.seed) for i in batch]


def _worker_init(worker_id: int) -> None:
    from marginface.data import worker_init

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    worker_init(worker_id)


# -- the replicated part of the model -----------------------------------------------------------
class _Net(nn.Module):
    """Backbone plus the replicated auxiliary loss (centre loss); what DDP wraps."""

    def __init__(self, backbone: nn.Module, center: nn.Module | None, center_weight: float,
                 compile_backbone: bool, distill: nn.Module | None = None,
                 distill_weight: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.center = center
        self.center_weight = center_weight
        self.distill = distill
        self.distill_weight = distill_weight
        fn = torch.compile(backbone) if compile_backbone else backbone
        object.__setattr__(self, "_run", fn)

    def forward(self, images: Tensor, labels: Tensor,
                teacher: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        emb = self._run(images)
        aux = None
        if self.center is not None:
            aux = self.center_weight * self.center(emb.float(), labels)
        if self.distill is not None and teacher is not None:
            term = self.distill_weight * self.distill(emb.float(), teacher)
            aux = term if aux is None else aux + term
        return emb, aux


def _amp_dtype(mode: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)


class Trainer:
    """One training run; :meth:`run` trains, checkpoints, verifies and exports."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False,
                 env: DistEnv | None = None, preloaded: Any = None) -> None:
        self.cfg = cfg
        #: A :class:`~marginface.train.preload.PreloadedImages` to reuse (``data.preload``).
        self.preloaded = preloaded
        self.resume = resume
        self.env = env or init_distributed(cfg.device)
        self._own_env = env is None
        self._stop = threading.Event()
        self._interrupts = 0
        #: Stop (checkpoint, as on Ctrl-C) once this many steps are done; ``None``: never.
        self.stop_after: int | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _seed_everything(self) -> None:
        import random

        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _build_data(self) -> None:
        from torch.utils.data import BatchSampler, DataLoader

        from marginface.data import PKSampler, ResumableSampler, collate_faces, open_dataset
        from marginface.data.augment import resolve_augment

        cfg, env = self.cfg, self.env
        self.pre = Preprocessing(input_size=tuple(cfg.data.input_size), color=cfg.data.color,
                                 mean=cfg.data.mean, std=cfg.data.std)
        augment = resolve_augment(cfg.data.augment)
        base = open_dataset(cfg.data.train)
        if len(base) == 0:
            raise DataError(f"no training images in {cfg.data.train}")
        self.dataset = _TrainSet(base, augment, self.pre)
        self.num_classes = base.num_classes
        if self.num_classes < 2:
            raise DataError(f"{cfg.data.train}: training needs at least 2 identities, found "
                            f"{self.num_classes}")
        B = cfg.batch_size
        if cfg.data.sampler == "pk":
            self.sampler = PKSampler(base.labels, p=B // cfg.data.pk_k, k=cfg.data.pk_k,
                                     seed=cfg.seed, min_images=cfg.data.pk_min_images,
                                     rank=env.rank, world_size=env.world_size)
            batches: Any = self.sampler
            self.steps_per_epoch = self.sampler.batches_per_rank
        else:
            self.sampler = ResumableSampler(len(base), shuffle=True, seed=cfg.seed,
                                            rank=env.rank, world_size=env.world_size,
                                            drop_last=True)
            batches = BatchSampler(self.sampler, B, drop_last=True)
            self.steps_per_epoch = self.sampler.per_rank // B
        if self.steps_per_epoch < 1:
            raise DataError(f"{len(base)} images make no full batch of {B} on "
                            f"{env.world_size} rank(s); lower batch_size")
        self.keyed = _KeyedBatches(batches, cfg.seed)
        self.teacher: Tensor | None = None
        if cfg.distill is not None:
            from marginface.train.distill import load_teacher

            self.teacher = load_teacher(cfg.distill.teacher, base).to(env.device)
            self.dataset.with_index = True
        self._preloaded_loader = None
        if cfg.data.preload == "device":
            from marginface.train.preload import PreloadedLoader, preload_images

            data = self.preloaded
            if data is None or not data.matches(base, self.pre.input_size):
                data = preload_images(base, self.pre.input_size, env.device,
                                      threads=max(1, cfg.data.workers),
                                      progress=env.is_main)
                self.preloaded = data
            else:
                data = data if data.images.device == env.device else None
                if data is None:
                    raise DataError("the preloaded images are on another device")
            self._preloaded_loader = PreloadedLoader(data, self.keyed, self.pre, augment.hflip,
                                                     cfg.seed, sources=base.source)
        workers = cfg.data.workers
        self.loader_kwargs: dict[str, Any] = dict(
            dataset=self.dataset, batch_sampler=self.keyed, num_workers=workers,
            collate_fn=_collate_indexed if self.dataset.with_index else collate_faces,
            pin_memory=cfg.data.pin_memory and env.device.type == "cuda",
            worker_init_fn=_worker_init if workers > 0 else None)
        if workers > 0:
            self.loader_kwargs["prefetch_factor"] = cfg.data.prefetch_factor
        self._loader_cls = DataLoader
        if cfg.steps is not None:
            self.total_steps = int(cfg.steps)
        else:
            self.total_steps = max(1, math.ceil(float(cfg.epochs) * self.steps_per_epoch))

    def _loader(self, epoch: int) -> Any:
        self.sampler.set_epoch(epoch)
        self.keyed.epoch = epoch
        if self._preloaded_loader is not None:
            return self._preloaded_loader
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return self._loader_cls(generator=gen, **self.loader_kwargs)

    def _build_model(self) -> None:
        from marginface import backbones
        from marginface.losses import TripletLoss, create
        from marginface.train.partial_fc import PartialFC

        cfg, env = self.cfg, self.env
        dev = env.device
        self.arch = backbones.canonical_name(cfg.backbone.name)
        self.arch_kwargs = _architecture_kwargs(cfg)
        backbone = backbones.create(cfg.backbone.name, embedding_dim=cfg.backbone.embedding_dim,
                                    **self.arch_kwargs)
        if cfg.backbone.sync_bn and env.distributed and dev.type == "cuda":
            backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
        backbone = backbone.to(dev)
        if cfg.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        self.backbone = backbone
        center, center_w, self.interclass = None, 0.0, None
        for term in cfg.loss.extra:
            kw = dict(term.kwargs)
            if term.name.lower() == "center":
                try:
                    center = create("center", num_classes=self.num_classes,
                                    embedding_dim=cfg.backbone.embedding_dim, **kw).to(dev)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"loss.extra center: {exc}") from None
                center_w = term.weight
            else:
                self.interclass = (term.weight, create("interclass", **kw))
        distill = None
        if cfg.distill is not None:
            from marginface.train.distill import DistillHead

            distill = DistillHead(cfg.backbone.embedding_dim, int(self.teacher.shape[1]),
                                  projection=cfg.distill.projection).to(dev)
        self.net = _Net(backbone, center, center_w, cfg.compile, distill,
                        cfg.distill.weight if cfg.distill is not None else 0.0)
        self.ddp: nn.Module = self.net
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.net, device_ids=[dev.index] if dev.type == "cuda" else None,
                broadcast_buffers=False)
        kwargs = dict(cfg.loss.kwargs)
        self.pfc: PartialFC | None = None
        self.triplet: nn.Module | None = None
        try:
            if cfg.loss.is_triplet:
                self.triplet = TripletLoss(**kwargs).to(dev)
            else:
                import torch.distributed as dist

                self.pfc = PartialFC.create(
                    cfg.loss.name, self.num_classes, cfg.backbone.embedding_dim,
                    sample_rate=cfg.loss.sample_rate, rank=env.rank,
                    world_size=env.world_size,
                    group=dist.group.WORLD if env.distributed else None, seed=cfg.seed,
                    **kwargs).to(dev)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"loss {cfg.loss.name!r}: {exc}") from None

    def _build_optim(self) -> None:
        from marginface.train.schedule import build_scheduler

        o = self.cfg.optim
        groups: list[dict[str, Any]] = [{"params": [p for p in self.net.parameters()
                                                    if p.requires_grad]}]
        if self.pfc is not None:
            wd = o.weight_decay if o.head_weight_decay is None else o.head_weight_decay
            groups.append({"params": [], "lr": o.lr * o.head_lr_scale, "weight_decay": wd})
        if o.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                nesterov=o.nesterov and o.momentum > 0)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps,
                                               weight_decay=o.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.schedule, self.total_steps,
                                         self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.env.device.type,
                                           enabled=self.cfg.amp == "fp16")

    # -- checkpoints ----------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        c = self.cfg
        return {"backbone": c.backbone.model_dump(mode="json"),
                "loss": c.loss.model_dump(mode="json"), "batch_size": c.batch_size,
                "world_size": self.env.world_size, "num_classes": self.num_classes,
                "sampler": c.data.sampler,
                "distill": None if c.distill is None else c.distill.model_dump(mode="json")}

    def save_checkpoint(self) -> Path:
        """Write a complete checkpoint of the current step (every rank must call this)."""
        from marginface.train import checkpoint as ck

        env = self.env
        root = ck.checkpoint_dir(self.cfg.output)
        name = f"step_{self.step:08d}"
        final = root / name
        tmp = root / f".{name}.tmp"
        if env.is_main:
            root.mkdir(parents=True, exist_ok=True)
            if final.exists():
                import shutil

                shutil.rmtree(final)
            tmp.mkdir(parents=True, exist_ok=True)
        barrier(env)
        consumed = self.batch_in_epoch * (self.cfg.batch_size if self.cfg.data.sampler ==
                                          "random" else 1)
        rank_state = {"rng": ck.rng_state(), "rank": env.rank,
                      "pfc": self.pfc.shard_state() if self.pfc is not None else None}
        ck.atomic_save(rank_state, tmp / f"rank{env.rank:05d}.pt")
        if env.is_main:
            state = {
                "format": "marginface-checkpoint/1",
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "sampler": self.sampler.state_dict(consumed=consumed),
                "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "triplet": self.triplet.state_dict() if self.triplet is not None else None,
                "identity": self._identity(),
                "config": self.cfg.model_dump(mode="json"),
                "skipped": self.skips.total, "seconds": self.seconds_before + self._elapsed(),
            }
            ck.atomic_save(state, tmp / "trainer.pt")
        barrier(env)
        if env.is_main:
            import os

            os.replace(tmp, final)
            ck.write_text_atomic(root / ck.LATEST, name + "\n")
            ck.prune(self.cfg.output, self.cfg.checkpoint.keep)
        barrier(env)
        self.last_checkpoint_step = self.step
        return final

    def _load_checkpoint(self) -> None:
        from marginface.train import checkpoint as ck

        path = ck.find_latest(self.cfg.output)
        state = ck.load_file(path / "trainer.pt", "trainer state")
        saved = state.get("identity", {})
        mine = self._identity()
        diff = [k for k in mine if k in saved and saved[k] != mine[k]]
        if diff:
            raise ConfigError(f"--resume: the checkpoint {path} was written with different "
                              f"{', '.join(diff)} than this config; resume with the same "
                              "settings (or start a new output folder)")
        rank_state = ck.load_file(path / f"rank{self.env.rank:05d}.pt", "this rank's state")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.triplet is not None and state.get("triplet") is not None:
            self.triplet.load_state_dict(state["triplet"])
        if self.pfc is not None:
            self.pfc.load_shard_state(rank_state["pfc"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        sampler_state = dict(state["sampler"])
        sampler_state["rank"] = self.env.rank
        self.sampler.load_state_dict(sampler_state)
        self._resume_position = True
        self.skips.total = int(state.get("skipped", 0))
        self.seconds_before = float(state.get("seconds", 0.0))
        ck.set_rng_state(rank_state["rng"])
        self.last_checkpoint_step = self.step
        self._say(f"resumed from {path} at step {self.step} (epoch {self.epoch}, "
                  f"batch {self.batch_in_epoch})")

    # -- the step -------------------------------------------------------------------------------
    def _train_step(self, images: Tensor, labels: Tensor) -> Tensor:
        cfg = self.cfg
        dev = self.env.device
        amp = _amp_dtype(cfg.amp)
        teacher = None
        if self.teacher is not None:
            teacher = self.teacher.index_select(0, self._last_indices).float()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            emb, aux = self.ddp(images, labels, teacher)
            if self.pfc is not None:
                loss = self.pfc(emb, labels)
                if self.interclass is not None:
                    w, term = self.interclass
                    loss = loss + w * term(self.pfc.sampled_weight())
            else:
                loss = self.triplet(emb.float(), labels)
            if aux is not None:
                loss = loss + aux
        self.scaler.scale(loss).backward()
        if self.pfc is not None:
            self.pfc.attach(self.optimizer)
        if cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.backbone.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.pfc is not None:
            self.pfc.detach(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss.detach()

    def _fill(self, batch: Any) -> tuple[Tensor, Tensor] | None:
        """Keep the batch shape fixed: replace dropped (unreadable) samples by repeats."""
        n = len(batch)
        want = self.cfg.batch_size
        if n == 0:
            return self._last_batch
        images, labels = batch.images, batch.labels
        indices = getattr(batch, "indices", None)
        if n < want:
            idx = torch.arange(want) % n
            images, labels = images[idx.to(images.device)], labels[idx.to(labels.device)]
            if indices is not None:
                indices = indices[idx.to(indices.device)]
        dev = self.env.device
        images = images.to(dev, non_blocking=True)
        labels = labels.to(dev, non_blocking=True)
        if indices is not None:
            self._last_indices = indices.to(dev, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self._last_batch = (images, labels)
        return images, labels

    # -- logging --------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.env.is_main:
            if self._bar is not None:
                self._bar.write(text)
            else:
                print(text, flush=True)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _open_logs(self) -> None:
        self._bar = None
        self._csv = None
        self._tb = None
        if not self.env.is_main:
            return
        out = Path(self.cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.csv"
        new = not path.exists() or not self.resume
        fh = path.open("w" if new else "a", newline="", encoding="utf-8")
        self._csv_fh = fh
        self._csv = csv.writer(fh)
        if new:
            self._csv.writerow(["step", "epoch", "kind", "name", "value"])
        if self.cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out / "tensorboard"),
                                         purge_step=self.step if self.resume else None)
            except ImportError:
                print("note: TensorBoard is not installed (pip install tensorboard); metrics "
                      "go to metrics.csv only", flush=True)
        if self.cfg.log.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total_steps, initial=self.step, unit="step",
                             dynamic_ncols=True, desc="train", smoothing=0.05)

    def _log(self, kind: str, values: dict[str, float]) -> None:
        if not self.env.is_main:
            return
        epoch = self.epoch + self.batch_in_epoch / self.steps_per_epoch
        for name, value in values.items():
            if value is None:
                continue
            if self._csv is not None:
                self._csv.writerow([self.step, f"{epoch:.4f}", kind, name, f"{value:.6g}"])
            if self._tb is not None:
                self._tb.add_scalar(f"{kind}/{name}", value, self.step)
        if self._csv is not None:
            self._csv_fh.flush()

    def _close_logs(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._csv is not None:
            self._csv_fh.close()
            self._csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- verification ---------------------------------------------------------------------------
    def _setup_verify(self) -> None:
        self.verifier = None
        v = self.cfg.verify
        if v.pairs is None or not self.env.is_main:
            return
        from marginface.train.verify import PairVerifier

        self.verifier = PairVerifier(v.pairs, root=v.root, aligned=v.aligned,
                                     preprocessing=self.pre, flip=v.flip,
                                     batch_size=v.batch_size, name=v.name)
        n_fail = len(self.verifier.failures)
        self._say(f"verification set {self.verifier.name}: {self.verifier.pairs.n_pairs} pairs, "
                  f"{len(self.verifier.pairs.images)} images"
                  f"{f', {n_fail} without a usable face' if n_fail else ''}"
                  f" ({'aligned crops' if self.verifier.aligned else 'detected and aligned'})")

    def verify(self) -> dict[str, Any] | None:
        """Score the pairs file with the current backbone (rank 0; others wait)."""
        result = None
        if self.verifier is not None:
            res = self.verifier.evaluate(self.backbone, self.env.device,
                                         amp_dtype=_amp_dtype(self.cfg.amp),
                                         channels_last=self.cfg.channels_last)
            result = res.to_dict()
            self.last_verify = result
            self._say(f"step {self.step}: {res}")
            self._log("verify", {k: v for k, v in result.items()
                                 if isinstance(v, float) or v is None})
        barrier(self.env)
        return result

    # -- signals --------------------------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        self._stop.set()
        if self.env.is_main:
            print("\ninterrupted: finishing this step and writing a checkpoint "
                  "(Ctrl-C again to abort at once)", flush=True)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train until ``epochs``/``steps`` are done or Ctrl-C; then checkpoint and export."""
        from marginface.data import SkipCounter

        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._run(SkipCounter)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self._own_env:
                cleanup(self.env)

    def _run(self, skip_counter_cls: Any) -> TrainResult:
        cfg, env = self.cfg, self.env
        self._seed_everything()
        self._build_data()
        self._build_model()
        self._build_optim()
        self.skips = skip_counter_cls()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.seconds_before = 0.0
        self.last_checkpoint_step = -1
        self.last_verify: dict[str, Any] | None = None
        self._resume_position = False
        self._last_batch: tuple[Tensor, Tensor] | None = None
        self._bar = None
        self._t0 = time.perf_counter()
        if self.resume:
            self._load_checkpoint()
        self._open_logs()
        try:
            self._say(f"training {self.arch} ({cfg.backbone.embedding_dim}-d) with "
                      f"{cfg.loss.name} on {len(self.dataset)} images of {self.num_classes} "
                      f"identities; {self.total_steps} steps of {cfg.batch_size}×"
                      f"{env.world_size} on {env.device} ({cfg.amp})")
            self._setup_verify()
            if cfg.verify.at_start and self.step == 0:
                self.verify()
            interrupted = self._loop()
            if self.step != self.last_checkpoint_step:
                self.save_checkpoint()
            if not interrupted and (self.last_verify is None or
                                    self._verified_at != self.step):
                self.verify()
            seconds = self.seconds_before + self._elapsed()
            if env.is_main and not interrupted:
                self._export(seconds)
        finally:
            self._close_logs()
        if self.skips.total and env.is_main:
            print(self.skips.summary(), flush=True)
        done = self.step / self.steps_per_epoch
        return TrainResult(
            output=Path(cfg.output), steps=self.step, epochs_done=done,
            last_loss=self._last_loss, interrupted=interrupted,
            skipped_samples=self.skips.total, metrics=self.last_verify or {},
            seconds=seconds, samples_per_second=self._sps)

    def _loop(self) -> bool:
        cfg, env = self.cfg, self.env
        self._last_loss = float("nan")
        self._sps = 0.0
        self._verified_at = -1
        loss_sum: Tensor | None = None
        n_sum = 0
        t_log, step_log = time.perf_counter(), self.step
        first = True
        while self.step < self.total_steps:
            if not self._resume_position:
                self.batch_in_epoch = 0
            self._resume_position = False
            loader = self._loader(self.epoch)
            if self.batch_in_epoch:
                self.sampler.load_state_dict(self.sampler.state_dict(
                    consumed=self.batch_in_epoch * (cfg.batch_size if cfg.data.sampler ==
                                                    "random" else 1)))
            for batch in loader:
                self.skips.update(batch)
                filled = self._fill(batch)
                if filled is None:
                    raise DataError(f"every image of a whole batch was unreadable:\n"
                                    f"{self.skips.summary()}")
                images, labels = filled
                if first:
                    self._validate_first(images, labels)
                    first = False
                loss = self._train_step(images, labels)
                loss_sum = loss if loss_sum is None else loss_sum + loss
                n_sum += 1
                self.step += 1
                self.batch_in_epoch += 1
                if self._bar is not None:
                    self._bar.update(1)
                stop = self._stop.is_set() or (self.stop_after is not None
                                               and self.step >= self.stop_after)
                at_log = self.step % cfg.log.every_steps == 0 or self.step == self.total_steps
                if at_log:
                    self._last_loss = float(loss_sum.item()) / n_sum
                    if not math.isfinite(self._last_loss):
                        raise ModelError(f"the loss became {self._last_loss} at step "
                                         f"{self.step}: lower optim.lr or check the data")
                    now = time.perf_counter()
                    self._sps = (self.step - step_log) * cfg.batch_size * env.world_size / max(
                        now - t_log, 1e-9)
                    t_log, step_log = now, self.step
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._log("train", {"loss": self._last_loss, "lr": lr,
                                        "samples_per_s": self._sps})
                    if self._bar is not None:
                        self._bar.set_postfix(loss=f"{self._last_loss:.3f}", lr=f"{lr:.3g}",
                                              sps=f"{self._sps:.0f}", refresh=False)
                    loss_sum, n_sum = None, 0
                if env.distributed and (at_log or self.step == self.total_steps):
                    stop = all_reduce_max(env, float(stop)) > 0
                elif env.distributed:
                    stop = False  # agree on stopping only at log steps
                if stop:
                    self.save_checkpoint()
                    self._say(f"stopped at step {self.step}; continue with --resume")
                    return True
                if self.step % cfg.checkpoint.every_steps == 0:
                    self.save_checkpoint()
                if cfg.verify.every_steps and self.step % cfg.verify.every_steps == 0:
                    self.verify()
                    self._verified_at = self.step
                if self.step >= self.total_steps:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                if self.step < self.total_steps:
                    if cfg.checkpoint.at_epoch_end and self.step != self.last_checkpoint_step:
                        self.save_checkpoint()
                    if cfg.verify.at_epoch_end and self._verified_at != self.step:
                        self.verify()
                        self._verified_at = self.step
                continue
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
        return False

    def _validate_first(self, images: Tensor, labels: Tensor) -> None:
        """Check the first batch thoroughly, then let the loss heads skip validation."""
        from marginface.losses import check_labels

        check_labels(labels.cpu(), images.shape[0], self.num_classes)
        if self.pfc is not None:
            self.pfc.head.validate = False
        if self.net.center is not None:
            self.net.center.validate = False
        if self.triplet is not None:
            self.triplet.validate = False

    def _export(self, seconds: float) -> None:
        from marginface.train.export import export_model

        cfg = self.cfg
        data_name = cfg.data.name or Path(cfg.data.train).name
        training = {
            "data": {"path": str(cfg.data.train), "name": data_name,
                     "images": len(self.dataset), "identities": self.num_classes,
                     "augment": cfg.data.augment, "sampler": cfg.data.sampler,
                     "skipped_images": self.skips.total},
            "backbone": {"name": self.arch, "kwargs": self.arch_kwargs},
            "loss": cfg.loss.model_dump(mode="json"),
            "optim": cfg.optim.model_dump(mode="json"),
            "schedule": cfg.schedule.model_dump(mode="json"),
            "amp": cfg.amp, "batch_size": cfg.batch_size, "world_size": self.env.world_size,
            "global_batch": cfg.batch_size * self.env.world_size, "steps": self.step,
            "epochs": round(self.step / self.steps_per_epoch, 4), "seed": cfg.seed,
            "wall_seconds": round(seconds, 1), "device": _device_name(self.env.device),
            "preload": cfg.data.preload,
            "distill": None if cfg.distill is None else {
                **cfg.distill.model_dump(mode="json"),
                "note": "knowledge distillation: weight·(1 − cos(P·student, teacher)) with the "
                        "teacher's embeddings of the training crops"},
            "command": "marginface train " + json.dumps(str(cfg.output)),
        }
        metrics = {}
        if self.last_verify is not None and self.verifier is not None:
            metrics[self.verifier.name] = {**self.last_verify, "protocol": (
                "10-fold accuracy, flip TTA" if self.verifier.pairs.n_folds >= 2 else "")}
        name = cfg.name or Path(cfg.output).name
        export_model(cfg.output, self.backbone, name=name, architecture=self.arch,
                     embedding_dim=cfg.backbone.embedding_dim, preprocessing=self.pre,
                     training=training, metrics=metrics,
                     architecture_kwargs=dict(self.arch_kwargs))
        self._say(f"wrote {Path(cfg.output) / 'weights.safetensors'} and model.json")


def _architecture_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The backbone's constructor arguments, with ``input_size`` taken from ``data.input_size``
    (a network whose head depends on the input size must be built for the crops it gets)."""
    from marginface.backbones import takes_input_size

    if not takes_input_size(cfg.backbone.name):
        return dict(cfg.backbone.kwargs)
    return {**cfg.backbone.kwargs, "input_size": [int(v) for v in cfg.data.input_size]}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train(cfg: TrainConfig, *, resume: bool = False, preloaded: Any = None) -> TrainResult:
    """Run the training ``cfg`` describes (one process, or one rank under torchrun).

    ``preloaded``: images already decoded on the device (``data.preload: device``), reused
    when they come from the same data set (e.g. by the loss comparison).
    """
    return Trainer(cfg, resume=resume, preloaded=preloaded).run()
