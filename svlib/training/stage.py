"""What every training stage shares, speaker verification (:mod:`svlib.training.sv`) and pruning
(:mod:`svlib.training.distill`): the stage-YAML reader, :class:`StageTrainer` (threads and seeds, atomic
checkpoints with the RNG state of every rank, exact resume, the metrics log, the epoch loop, DDP), and the run rules
of :func:`run_stage` (``--resume``, ``--reuse`` by fingerprint, ``done.json``, the run's ``train`` record).

Explained in the book chapter "Training the speaker model".
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors import safe_open
from torch import nn

from svlib.core.distributed import barrier, init_distributed as dist_init, local_device, rank_and_world_size
from svlib.core.paths import expand_env
from svlib.core.atomic import atomic_write
from svlib.core.progress import progress_bar
from svlib.core.results import default_results_dir, record_result

logger = logging.getLogger(__name__)

CLASSIFIER_NAME = "classifier.pt"


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
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
    (:mod:`svlib.core.distributed`: NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU)."""
    device = local_device()
    rank, world_size = dist_init(device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    device=device)


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
        # at most one redraw a second: in a notebook each redraw is a widget message, and a redraw per step queued
        # half a minute of them behind a demo chapter's training cell
        bar = progress_bar(total=total, initial=self.step, desc=c.name, enabled=self.dist.is_main, dynamic_ncols=True,
                   mininterval=1.0)
        self.net.train()
        while self.step < total:
            epoch, skip = divmod(self.step, steps_per_epoch)
            # resuming mid-epoch: the order is a function of (seed, epoch), so skipping the done batches is exact
            self.data.batch_sampler.set_epoch(epoch, skip_batches=skip)
            for i, (wavs, labels) in enumerate(self.data, start=skip):
                metrics = self._train_step(wavs, labels, epoch + i / steps_per_epoch, autocast)
                self.step += 1
                bar.update(1)
                # refresh=False: the postfix shows at the bar's next timed redraw instead of forcing one per step
                bar.set_postfix({k: f"{metrics[k]:.3f}" for k in self.progress_keys if k in metrics}, refresh=False)
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


def run_stage(config, trainer_cls, resume: bool = False, reuse: bool = False, *, profile: str = "custom",
              results_dir: str | Path | None = None, record: bool = True) -> Path:
    """Run ``trainer_cls(config).fit()`` with the resume / reuse rules of :func:`train`; write ``done.json`` and
    (with ``record``) the run's ``train`` record (:func:`record_stage`), also when a finished model is reused.

    Shared by the speaker-verification stages (:class:`Trainer`) and the pruning stages
    (:class:`svlib.training.distill.DistillTrainer`).
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


def read_metrics(exp_dir: str | Path) -> list[dict]:
    """The records of ``exp_dir/metrics.jsonl`` in order: one per optimiser step (``loss``, ``accuracy``, ``lr``,
    ``margin``, ``grad_norm``) and one per validation (``valid_eer_percent``, ``valid_min_dcf_0.01`` …)."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the stage first (svlib train --config ...)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


