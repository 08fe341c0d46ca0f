"""One trainer for every speaker-verification stage of the paper (§3.3), runnable under ``torchrun``.

A stage is one YAML file (``configs/paper/s1_freeze.yaml`` …), read into :class:`StageConfig`:

1. **PTM freeze training** — encoder frozen, LoRA + head trained; linear warm-up for 5 epochs to 1e-4, then StepLR
   ×0.1 every 5 epochs; ArcFace margin 0.2; 2–3 s crops; augmentation and speed perturbation on.
2. **Joint fine-tuning** — LoRA merged (``merge_lora: true``), everything trained; cosine 1e-5 → 5e-6 over 2 epochs,
   then 5e-6.
3. **Large-margin fine-tuning** (LMFT) — margin 0.5, 5–6 s crops, no augmentation, speed-perturbed classes dropped.

The loop: per optimiser step the learning rate and margin follow the schedules (as functions of the fractional
epoch), the forward runs under bf16 autocast on GPU, gradients are clipped, a non-finite loss stops the run with a
clear message. Progress shows on rank 0 with tqdm, metrics go to ``metrics.jsonl``. Checkpoints hold one state dict
(model, classifier, optimiser, step, epoch, RNG states) written atomically every ``checkpoint_every`` steps and at
each epoch end; ``resume`` continues exactly where the last checkpoint left off: the data order is a function of
(seed, epoch), so the resumed run sees the same batches and ends with the same weights.

Explained in the book chapter "Training the speaker model".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from svlib.data.lists import read_data_dir, read_trials
from svlib.distributed import init_distributed as dist_init
from svlib.distributed import barrier, local_device, rank_and_world_size
from svlib.data.loader import TrainData, build_train_loader
from svlib.encoder import LoRAConfig
from svlib.losses import ArcMarginProduct
from svlib.model import SpeakerModel, load_model
from svlib.profiles import expand_env, profile_of_config
from svlib.scoring import cosine_scores, evaluate_scores, extract_embeddings
from svlib.atomic import atomic_write

logger = logging.getLogger(__name__)

CLASSIFIER_NAME = "classifier.pt"


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ScheduleConfig:
    """Learning-rate schedule as a function of the fractional epoch ``e``.

    ``warmup_step`` (stage 1): ``lr·e/warmup_epochs`` during warm-up, then ``lr·gamma^⌊(e − warmup)/step_epochs⌋``.
    ``cosine`` (stages 2–3): ``final_lr + (lr − final_lr)·½(1 + cos(π·min(e/decay_epochs, 1)))``.
    ``constant``: ``lr``.
    """

    type: str = "constant"
    lr: float = 1e-4
    warmup_epochs: float = 0.0
    step_epochs: float = 5.0
    gamma: float = 0.1
    final_lr: float = 0.0
    decay_epochs: float = 1.0

    def __post_init__(self):
        if self.type not in ("constant", "warmup_step", "cosine"):
            raise ValueError(f"schedule.type must be constant, warmup_step or cosine, got {self.type!r}")
        if self.lr <= 0:
            raise ValueError(f"schedule.lr must be positive, got {self.lr!r}")

    def lr_at(self, epoch: float) -> float:
        if self.type == "warmup_step":
            if epoch < self.warmup_epochs:
                return self.lr * epoch / self.warmup_epochs
            return self.lr * self.gamma ** math.floor((epoch - self.warmup_epochs) / self.step_epochs)
        if self.type == "cosine":
            progress = min(epoch / self.decay_epochs, 1.0)
            return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr


def read_stage_yaml(cls, path: Path, overrides: dict | None, path_keys: tuple[str, ...]) -> dict:
    """The settings of a stage YAML for the dataclass ``cls``: ``overrides`` (dotted keys) applied, ``${VAR}``
    read from the environment, unknown keys refused, and the ``path_keys`` made absolute relative to the YAML."""
    if not path.is_file():
        raise FileNotFoundError(f"stage config {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():  # before expand_env: an override can replace a ${VAR}
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    data = expand_env(data, f"stage config {path}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    for key in path_keys:
        if data.get(key) and not os.path.isabs(str(data[key])):
            data[key] = str((path.parent / str(data[key])).resolve())
    return data


def check_stage_settings(config, positive: tuple[str, ...] = ("batch_size", "epochs")) -> None:
    """The checks every stage config shares: ``precision``, the crop range, and the ``positive`` integer fields."""
    if config.precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be bf16 or fp32, got {config.precision!r}")
    if not 0 < config.min_frames <= config.max_frames:
        raise ValueError(f"need 0 < min_frames <= max_frames, got {config.min_frames}, {config.max_frames}")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)!r}")


@dataclass
class StageConfig:
    """One training stage. Every field can be set in the stage's YAML file; paths are relative to the YAML."""

    name: str
    """stage name, e.g. ``s1_freeze`` (used in logs)."""
    exp_dir: str
    """where checkpoints, metrics and the final model go."""
    train_dir: str
    """Kaldi data directory (wav.scp, utt2spk) of the training set."""
    encoder: str = "tiny"
    """named encoder config or local w2v-bert-2.0 checkpoint directory (ignored with ``init_from``)."""
    head: str = "adapter_mfa"
    """head type: wavg_ecapa, mfa or adapter_mfa (ignored with ``init_from``)."""
    head_options: dict | None = None
    """:class:`~svlib.heads.HeadConfig` sizes other than the defaults, e.g. ``{ecapa_channels: 128}``."""
    lora: dict | None = None
    """LoRA settings ``{r, alpha}`` to attach before training (stage 1 of LoRA_Adapter_MFA)."""
    init_from: str | None = None
    """exp_dir of the previous stage: its final model and classifier start this stage."""
    merge_lora: bool = False
    """merge LoRA into the encoder before training (stage 2)."""
    freeze_encoder: bool = False
    """freeze the pre-trained encoder weights (stage 1); LoRA stays trainable."""
    speed_perturb: bool = True
    """speed perturbation 0.9/1.1 as new speakers (×3 classes)."""
    speed_perturb_speakers: str | None = None
    """Kaldi data directory whose speakers (its ``utt2spk``) get speed perturbation; ``None``: every speaker. §3.3
    perturbs VoxCeleb2 only, never VoxBlink2: the paper's configs name the VoxCeleb2-dev directory here, so a
    VoxCeleb2 + VoxBlink2 training set has 3 × 5,994 + (VoxBlink2 speakers) classes."""
    augment: dict | None = None
    """augmentation sources: ``{musan: DIR, rirs: DIR}`` or ``{demo: true}``; ``None`` disables it (LMFT)."""
    min_frames: int = 200
    """shortest crop in 10 ms fbank frames (200 = 2 s)."""
    max_frames: int = 300
    """longest crop in 10 ms fbank frames; the crop length is drawn once per batch."""
    batch_size: int = 64
    """utterances per GPU and step."""
    epochs: int = 15
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weight_decay: float = 1e-4
    scale: float = 32.0
    """ArcFace scale s."""
    margin: float = 0.2
    """ArcFace margin m."""
    grad_clip: float = 1.0
    seed: int = 42
    precision: str = "bf16"
    """``bf16`` autocast on CUDA (the CPU always runs float32) or ``fp32``."""
    num_workers: int = 4
    checkpoint_every: int = 0
    """also checkpoint every N optimiser steps (0: only at epoch ends)."""
    keep_checkpoints: int = 2
    cache_size: int = 0
    """decoded utterances kept in memory per data worker (useful for the small demo corpus)."""
    gradient_checkpointing: bool = False
    valid_dir: str | None = None
    """Kaldi data directory of validation utterances (e.g. the demo test split); ``None``: no validation."""
    valid_trials: str | None = None
    """trial list over ``valid_dir``'s utterances: the periodic validation EER / minDCF (cosine scoring)."""
    valid_every: int = 1
    """validate every N epochs (and after the last)."""

    def __post_init__(self):
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig(**self.schedule)
        check_stage_settings(self, positive=("batch_size", "epochs", "valid_every"))
        if (self.valid_dir is None) != (self.valid_trials is None):
            raise ValueError("valid_dir and valid_trials go together: set both or neither")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "StageConfig":
        """Read a stage YAML; ``overrides`` (``{"schedule.lr": 1e-3, "epochs": 2}``) replace keys."""
        path = Path(path)
        data = read_stage_yaml(cls, path, overrides, ("exp_dir", "train_dir", "init_from", "valid_dir", "valid_trials",
                                                      "speed_perturb_speakers"))
        augment = data.get("augment")
        if isinstance(augment, dict):
            data["augment"] = {
                k: str((path.parent / v).resolve()) if k in ("musan", "rirs") and not os.path.isabs(str(v)) else v
                for k, v in augment.items()
            }
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (``WORLD_SIZE`` > 1), else a single process
    (:mod:`svlib.distributed`: NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU)."""
    device = local_device()
    rank, world_size = dist_init(device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    device=device)


class _ClassifierNet(nn.Module):
    """Speaker model + ArcFace classifier as one module: what DDP wraps and one training step calls."""

    def __init__(self, model: SpeakerModel, classifier: ArcMarginProduct):
        super().__init__()
        self.model = model
        self.classifier = classifier

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model(features, attention_mask)  # -> (B, E)
        return self.classifier(embeddings, labels)  # -> (B, num_classes)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename: a crash never leaves half a file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def latest_checkpoint(exp_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/step-XXXXXXXX.pt`` (zero-padded, so sorting by name finds it)."""
    ckpts = sorted((Path(exp_dir) / "checkpoints").glob("step-*.pt"))
    return ckpts[-1] if ckpts else None


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------
class StageTrainer:
    """What the trainers of every stage share: CPU threads and seeds, atomic checkpoints with exact resume, the
    metrics log, and the epoch loop (a batch order that is a function of (seed, epoch), so resuming mid-epoch skips
    exactly the batches done). Subclasses build their modules and optimizer and define :meth:`_train_step`,
    :meth:`save_model`, and which modules a checkpoint holds (:meth:`_checkpoint_modules`).

    Args:
        config: the stage (``seed``, ``num_workers``, ``exp_dir``, ``epochs``, ``precision``, ``checkpoint_every``,
            ``keep_checkpoints`` are read).
        dist_info: rank, world size and device (default: :func:`init_distributed`).
    """

    progress_keys: tuple[str, ...] = ("loss",)
    """metrics shown next to the progress bar."""

    def __init__(self, config, dist_info: DistInfo | None = None):
        self.config = config
        self.dist = dist_info or init_distributed()
        self.exp_dir = Path(config.exp_dir)
        if self.dist.device.type == "cpu":
            # one compute thread per core of this rank: the OpenMP threads of several ranks on the same cores wait on
            # each other at every op (~10x slower CPU steps here), so under DDP the data workers get their own cores
            # too; a single process shares its cores with its workers, which sleep most of a step (2 cores, 1 worker:
            # 2 threads train two epochs of the demo's stage 2 in 13.2 s where 1 thread takes 17.2 s)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            workers = config.num_workers if self.dist.world_size > 1 else 0
            torch.set_num_threads(max(1, cores // self.dist.world_size - workers))
        seed = config.seed + self.dist.rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.step = 0

    def _wrap_ddp(self, net: nn.Module) -> nn.Module:
        """``net`` under DDP when there are several processes (every trained parameter of ``net`` is all-reduced)."""
        if self.dist.world_size == 1:
            return net
        device_ids = [self.dist.local_rank] if self.dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=False)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        """The modules whose state a checkpoint holds, by name."""
        raise NotImplementedError

    def _rng_states(self) -> list[dict]:
        """The RNG states of every rank, in rank order (each rank draws its own dropout and gate noise)."""
        states = [None] * self.dist.world_size
        if self.dist.world_size > 1:
            dist.all_gather_object(states, _rng_state())
        else:
            states[0] = _rng_state()
        return states

    def state_dict(self, rng: list[dict] | None = None) -> dict:
        """Modules, optimiser, step, config and ``rng``: the RNG states of all ranks (default: gathered now)."""
        return {
            **{name: module.state_dict() for name, module in self._checkpoint_modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": rng if rng is not None else self._rng_states(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint; each rank takes its own RNG state, so the run continues exactly."""
        modules = self._checkpoint_modules()
        expected = {*modules, "optimizer", "step", "rng", "config"}
        if set(state) != expected:
            raise ValueError(f"checkpoint keys {sorted(state)} differ from the expected {sorted(expected)}")
        rng = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # svlib 0.1 kept rank 0's only
        if len(rng) != self.dist.world_size:
            raise ValueError(
                f"the checkpoint was written by {len(rng)} process(es) and this run has {self.dist.world_size}: "
                f"the data shards and random draws of each rank differ, so resume with torchrun --nproc_per_node "
                f"{len(rng)} (or start the stage again)"
            )
        for name, module in modules.items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        _set_rng_state(rng[self.dist.rank])

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step-XXXXXXXX.pt`` (rank 0) with the RNG states gathered from every rank."""
        rng = self._rng_states()  # a collective: every rank takes part
        if not self.dist.is_main:
            return
        save_atomic(self.state_dict(rng), self.exp_dir / "checkpoints" / f"step-{self.step:08d}.pt")
        for old in sorted((self.exp_dir / "checkpoints").glob("step-*.pt"))[: -self.config.keep_checkpoints]:
            old.unlink()

    def resume(self) -> bool:
        """Load the latest checkpoint of ``exp_dir`` if there is one; return whether one was loaded."""
        ckpt = latest_checkpoint(self.exp_dir)
        if ckpt is None:
            logger.info("no checkpoint in %s: starting from scratch", self.exp_dir)
            return False
        self.load_state_dict(torch.load(ckpt, map_location=self.dist.device, weights_only=False))
        logger.info("resumed from %s (step %d)", ckpt, self.step)
        return True

    # -- training -------------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train all epochs (continuing from ``self.step``) and write the final model to ``exp_dir/model``."""
        c = self.config
        steps_per_epoch = self.data.batch_sampler.num_batches()
        total = steps_per_epoch * c.epochs
        if self.dist.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            (self.exp_dir / "config.yaml").write_text(yaml.safe_dump(c.to_dict(), sort_keys=False))
        autocast = self.dist.device.type == "cuda" and c.precision == "bf16"
        bar = tqdm(total=total, initial=self.step, desc=c.name, disable=not self.dist.is_main, dynamic_ncols=True)
        self.net.train()
        while self.step < total:
            epoch, skip = divmod(self.step, steps_per_epoch)
            # resuming mid-epoch: the order is a function of (seed, epoch), so skipping the done batches is exact
            self.data.batch_sampler.set_epoch(epoch, skip_batches=skip)
            for i, (wavs, labels) in enumerate(self.data, start=skip):
                metrics = self._train_step(wavs, labels, epoch + i / steps_per_epoch, autocast)
                self.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{metrics[k]:.3f}" for k in self.progress_keys if k in metrics})
                self._log({"step": self.step, "epoch": epoch + (i + 1) / steps_per_epoch, **metrics})
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
            self._end_of_epoch(epoch + 1, last=self.step == total)
            self.save_checkpoint()
        bar.close()
        return self.save_model()

    def _train_step(self, wavs: torch.Tensor, labels: torch.Tensor, epoch: float, autocast: bool) -> dict:
        """One optimiser step on a batch; returns the metrics to log."""
        raise NotImplementedError

    def _end_of_epoch(self, epoch: int, last: bool) -> None:
        """Called after each epoch, before its checkpoint (validation)."""

    def save_model(self) -> Path:
        raise NotImplementedError

    def _barrier(self) -> None:
        barrier()

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.exp_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")


class Trainer(StageTrainer):
    """Builds the model, data and optimiser of a :class:`StageConfig` and runs it (see the module docstring).

    Args:
        config: the stage.
        dist_info: rank, world size and device (default: :func:`init_distributed`).
    """

    progress_keys = ("loss", "accuracy")

    def __init__(self, config: StageConfig, dist_info: DistInfo | None = None):
        super().__init__(config, dist_info)
        self.data = self._build_data()
        self.model, self.classifier = self._build_model()
        params = [p for p in [*self.model.parameters(), *self.classifier.parameters()] if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.schedule.lr_at(0.0), weight_decay=config.weight_decay)
        self.net = self._wrap_ddp(_ClassifierNet(self.model, self.classifier))  # the classifier is all-reduced too

    # -- construction ---------------------------------------------------------------------------------------------
    def _build_data(self) -> TrainData:
        return build_train_loader(self.config, rank=self.dist.rank, world_size=self.dist.world_size)

    def _build_model(self) -> tuple[SpeakerModel, ArcMarginProduct]:
        c = self.config
        num_classes = self.data.num_classes
        if c.init_from:
            model = load_model(Path(c.init_from) / "model")
            classifier = ArcMarginProduct(model.head.output_size, num_classes, scale=c.scale, margin=c.margin)
            source = Path(c.init_from) / "model" / CLASSIFIER_NAME
            previous = torch.load(source, map_location="cpu", weights_only=True)
            _load_classifier_rows(classifier, previous["weight"], previous["classes"], self.data.classes, source)
            model.train()
        else:
            model = SpeakerModel.build(c.encoder, head=c.head, **(c.head_options or {}))
            classifier = ArcMarginProduct(model.head.output_size, num_classes, scale=c.scale, margin=c.margin)
        if c.merge_lora and model.encoder.lora is not None:
            model.encoder.merge_lora()
        if c.lora is not None and model.encoder.lora is None:
            model.encoder.add_lora(LoRAConfig(**c.lora))
        model.encoder.freeze(c.freeze_encoder)
        if c.gradient_checkpointing:
            model.encoder.gradient_checkpointing(True)
        model.to(self.dist.device)
        classifier.to(self.dist.device)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("%s: %d trainable model parameters, %d classes", c.name, n_train, num_classes)
        return model, classifier

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "classifier": self.classifier}

    def _end_of_epoch(self, epoch: int, last: bool) -> None:
        if epoch % self.config.valid_every == 0 or last:
            self.validate(epoch)

    def _train_step(self, wavs: torch.Tensor, labels: torch.Tensor, epoch: float, autocast: bool) -> dict:
        c = self.config
        lr = c.schedule.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        wavs, labels = wavs.to(self.dist.device), labels.to(self.dist.device)
        with torch.no_grad():
            features, attention_mask = self.model.frontend(wavs)
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = self.net(features, attention_mask, labels)  # ArcFace logits, computed in float32
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{c.name}: non-finite loss {loss.item()} at step {self.step + 1} (epoch {epoch:.3f}); "
                f"lower schedule.lr (now {lr:g}) or check the data (NaN audio?) and resume from the last checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip) if c.grad_clip > 0 else torch.tensor(0.0)
        self.optimizer.step()
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {
            "loss": loss.item(),
            "accuracy": accuracy.item(),
            "lr": lr,
            "margin": self.classifier.margin,
            "grad_norm": float(grad_norm),
        }

    def validate(self, epoch: int) -> dict | None:
        """Cosine-scoring EER and minDCF of the validation trials (rank 0), logged as ``valid_*`` metrics.

        Runs without randomness (eval mode), so it does not change what an exactly resumed run computes.
        """
        c = self.config
        if c.valid_dir is None or not self.dist.is_main:
            self._barrier()
            return None
        data, trials = read_data_dir(c.valid_dir), read_trials(c.valid_trials)
        trials.check(set(data.wav_scp))
        embeddings = extract_embeddings(self.model, data.wav_scp, device=self.dist.device, progress=False)
        result = evaluate_scores(cosine_scores(embeddings, trials), trials.labels())
        record = {"step": self.step, "epoch": epoch, **{f"valid_{k}": v for k, v in result.items()}}
        self._log(record)
        logger.info("%s epoch %d: validation EER %.2f %%", c.name, epoch, result["eer_percent"])
        self._barrier()
        return record

    def save_model(self) -> Path:
        """Write the trained speaker model and classifier to ``exp_dir/model`` (rank 0)."""
        out = self.exp_dir / "model"
        if self.dist.is_main:
            self.model.save(out)
            state = {"weight": self.classifier.weight.detach().cpu(), "classes": self.data.classes}
            save_atomic(state, out / CLASSIFIER_NAME)
        self._barrier()
        return out


def _load_classifier_rows(
    classifier: ArcMarginProduct, weight: torch.Tensor, old: list[str], new: list[str], source: Path
) -> None:
    """Start this stage's classifier from the previous stage's, row by class name.

    LMFT drops the speed-perturbed classes (``<spk>@sp0.9``, ``<spk>@sp1.1``) and may train on a subset of the
    speakers (VoxCeleb2 without VoxBlink2): each remaining class keeps its trained row. A class the previous stage
    did not have is an error naming it.
    """
    index = {name: i for i, name in enumerate(old)}
    missing = [name for name in new if name not in index]
    if missing or weight.shape[1] != classifier.weight.shape[1]:
        raise ValueError(
            f"the classifier of {source} (shape {tuple(weight.shape)}) lacks {len(missing)} of this stage's "
            f"classes (first: {missing[:5]}) or has another embedding size than {classifier.weight.shape[1]}"
        )
    with torch.no_grad():
        classifier.weight.copy_(weight[[index[name] for name in new]])


DONE_NAME = "done.json"
"""Written to ``exp_dir`` after the final model: the stage's fingerprint (see :func:`stage_fingerprint`)."""


def find_done(path: str | Path) -> Path | None:
    """The ``done.json`` of the stage at ``path``: an ``exp_dir`` or its ``model`` folder (``None`` if absent)."""
    return next((d / DONE_NAME for d in (Path(path), Path(path).parent) if (d / DONE_NAME).is_file()), None)


def stage_fingerprint(config) -> str:
    """SHA-256 of what a stage's result depends on: its configuration, its training list (``wav.scp`` and
    ``utt2spk`` contents) and the fingerprints of the stages it starts from (``init_from``, and a pruning stage's
    ``teacher``)."""
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name in ("wav.scp", "utt2spk"):
        path = Path(config.train_dir) / name
        h.update(path.read_bytes() if path.is_file() else b"")
    for upstream in (getattr(config, "init_from", None), getattr(config, "teacher", None)):
        if upstream:
            done = find_done(upstream)
            h.update(done.read_bytes() if done is not None else b"no fingerprint")
    return h.hexdigest()


def finished_model(config) -> Path | None:
    """``exp_dir/model`` if it was trained from exactly this configuration (same fingerprint), else ``None``."""
    done = Path(config.exp_dir) / DONE_NAME
    model = Path(config.exp_dir) / "model"
    if not (done.is_file() and model.is_dir()):
        return None
    try:
        recorded = json.loads(done.read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return None
    return model if recorded == stage_fingerprint(config) else None


def train(config_path: str | Path, resume: bool = False, overrides: dict | None = None, reuse: bool = False, *,
          profile: str | None = None, results_dir: str | Path | None = None, record: bool = True) -> Path:
    """Run one stage from its YAML file (the body of ``svlib train``); returns the final model directory.

    Args:
        config_path: the stage YAML.
        resume: continue from the latest checkpoint in ``exp_dir``.
        overrides: ``{"key.sub": value}`` replacing YAML keys.
        reuse: return ``exp_dir/model`` without training when it was trained from the same configuration, data
            and upstream stage (:func:`finished_model`); otherwise train, replacing this stage's earlier outputs
            (checkpoints, model, metrics) in ``exp_dir``. The book chapters share trained models this way.
        profile: the profile the run belongs to (default: ``<name>`` for a config under ``configs/<name>/``, else
            ``custom``); written to ``done.json`` and to the results record.
        results_dir: where the run is recorded (:func:`record_stage`; default
            :func:`svlib.results.default_results_dir`).
        record: write the ``train`` record of the run.
    """
    return run_stage(StageConfig.from_yaml(config_path, overrides), Trainer, resume=resume, reuse=reuse,
                     profile=profile or profile_of_config(config_path) or "custom", results_dir=results_dir,
                     record=record)


def run_stage(config, trainer_cls, resume: bool = False, reuse: bool = False, *, profile: str = "custom",
              results_dir: str | Path | None = None, record: bool = True) -> Path:
    """Run ``trainer_cls(config).fit()`` with the resume / reuse rules of :func:`train`; write ``done.json`` and
    (with ``record``) the run's ``train`` record (:func:`record_stage`), also when a finished model is reused.

    Shared by the speaker-verification stages (:class:`Trainer`) and the pruning stages
    (:class:`svlib.distill.DistillTrainer`).
    """
    exp_dir = Path(config.exp_dir)
    is_main = rank_and_world_size()[0] == 0  # read before the process group exists
    model = finished_model(config) if reuse else None
    if model is not None:
        logger.info("%s: reusing %s (same configuration, data and upstream stage)", config.name, model)
    else:
        if reuse:
            stale = [exp_dir / n for n in ("checkpoints", "model", "metrics.jsonl", DONE_NAME) if (exp_dir / n).exists()]
            if stale and is_main:
                logger.info("%s: replacing outputs of another configuration in %s", config.name, exp_dir)
                for path in stale:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            resume = False
        trainer = trainer_cls(config)
        if resume:
            trainer.resume()
        elif latest_checkpoint(config.exp_dir) is not None:
            raise FileExistsError(
                f"{config.exp_dir} already holds checkpoints: pass --resume to continue, or choose another exp_dir"
            )
        model = trainer.fit()
        if trainer.dist.is_main:
            payload = {"fingerprint": stage_fingerprint(config), "stage": config.name, "steps": trainer.step,
                       "profile": profile}
            atomic_write(exp_dir / DONE_NAME, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))
    if record and is_main:
        record_stage(config, profile=profile, results_dir=results_dir)
    return model


def stage_summary(exp_dir: str | Path) -> dict:
    """What a finished stage's ``metrics.jsonl`` says at its end, as one flat dict of numbers.

    ``steps`` and ``epochs``; ``loss``, ``accuracy`` and ``distill`` averaged over the steps of the last epoch (one
    step is noisy); the last value of every other per-step number (``lr``, ``margin``, ``sparsity``, ``lambda1`` …);
    the last value of each non-step number (``valid_eer_percent``, ``valid_min_dcf_0.01``, ``final_sparsity`` …);
    ``train_seconds`` from the first to the last record (idle time between a stop and its resume included).
    """
    records = read_metrics(exp_dir)
    if not records:
        raise ValueError(f"{Path(exp_dir) / 'metrics.jsonl'} is empty: the stage recorded no step")
    steps = [r for r in records if "loss" in r]
    summary: dict = {"steps": max(int(r.get("step", 0)) for r in records)}
    if steps:
        epochs = max(float(r.get("epoch", 0.0)) for r in steps)
        summary["epochs"] = epochs
        last_epoch = [r for r in steps if float(r.get("epoch", 0.0)) > math.ceil(epochs) - 1] or steps[-1:]
        for key in ("loss", "accuracy", "distill"):
            values = [r[key] for r in last_epoch if isinstance(r.get(key), (int, float))]
            if values:
                summary[key] = sum(values) / len(values)
    skip = {"time", "step", "epoch", "loss", "accuracy", "distill", "grad_norm"}
    for r in records:
        summary.update({k: v for k, v in r.items() if k not in skip and isinstance(v, (int, float))
                        and not isinstance(v, bool) and math.isfinite(v)})
    times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]
    if times:
        summary["train_seconds"] = max(times) - min(times)
    return summary


def record_stage(config, *, profile: str, results_dir: str | Path | None = None) -> Path:
    """Record a finished stage in the results store: ``kind="train"``, ``name=config.name``, the
    :func:`stage_summary` of its ``exp_dir`` and the parameter count of its model (``model_params``: every tensor
    of ``model/model.safetensors``, the speaker classifier excluded). Returns the record's path.
    """
    from safetensors import safe_open

    from svlib.results import default_results_dir, record_result

    exp_dir = Path(config.exp_dir)
    metrics = stage_summary(exp_dir)
    weights = exp_dir / "model" / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            metrics["model_params"] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    done = exp_dir / DONE_NAME
    fingerprint = json.loads(done.read_text()).get("fingerprint") if done.is_file() else None
    return record_result(results_dir if results_dir is not None else default_results_dir(), kind="train",
                         name=config.name, profile=profile, config=config.to_dict(), metrics=metrics,
                         extra={"exp_dir": str(exp_dir), "fingerprint": fingerprint})


def describe_stage(path: str | Path) -> dict:
    """The recipe of a stage YAML as one table row (read as written: ``${VAR}`` paths are not needed).

    Returns:
        ``{stage, encoder, head, epochs, batch, lr, margin, crop_s, augmentation, speed_perturb}`` as text.
    """
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    base = {f.name: f.default for f in fields(StageConfig) if f.default is not dataclasses.MISSING}
    c = {**base, **raw}
    sch = ScheduleConfig(**(c.get("schedule") or {}))
    if sch.type == "warmup_step":
        lr = (f"warm-up {sch.warmup_epochs:g} ep to {sch.lr:g}, ×{sch.gamma:g} every {sch.step_epochs:g} ep")
    elif sch.type == "cosine":
        lr = f"cosine {sch.lr:g} → {sch.final_lr:g} over {sch.decay_epochs:g} ep"
    else:
        lr = f"constant {sch.lr:g}"
    encoder = "frozen" + (f" + LoRA r={c['lora']['r']}" if c.get("lora") else "") if c["freeze_encoder"] else "trained"
    if c.get("merge_lora"):
        encoder = "LoRA merged, trained"
    augment = c.get("augment")
    return {
        "stage": c["name"],
        "encoder": encoder,
        "head": c.get("head", "") if not c.get("init_from") else "from previous stage",
        "epochs": c["epochs"],
        "batch": c["batch_size"],
        "lr": lr,
        "margin": c["margin"],
        "crop_s": f"{c['min_frames'] / 100:g}–{c['max_frames'] / 100:g}",
        "augmentation": "off" if not augment else ("demo noise + rooms" if augment.get("demo") else "MUSAN + RIRs"),
        "speed_perturb": bool(c["speed_perturb"]),
    }


def read_metrics(exp_dir: str | Path) -> list[dict]:
    """The records of ``exp_dir/metrics.jsonl`` in order: one per optimiser step (``loss``, ``accuracy``, ``lr``,
    ``margin``, ``grad_norm``) and one per validation (``valid_eer_percent``, ``valid_min_dcf_0.01`` …)."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the stage first (svlib train --config ...)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


