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
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from svlib.core.paths import profile_of_config
from svlib.data.lists import read_data_dir, read_trials
from svlib.data.loader import TrainData, build_train_loader
from svlib.model import SpeakerModel, load_model
from svlib.model.encoder import LoRAConfig
from svlib.model.losses import ArcMarginProduct
from svlib.scoring import cosine_scores, evaluate_scores, extract_embeddings
from svlib.training.stage import (
    CLASSIFIER_NAME,
    DistInfo,
    StageTrainer,
    check_stage_settings,
    read_stage_yaml,
    run_stage,
    save_atomic,
)

__all__ = ["ScheduleConfig", "StageConfig", "Trainer", "describe_stage", "train"]

logger = logging.getLogger(__name__)


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
    """:class:`~svlib.model.heads.HeadConfig` sizes other than the defaults, e.g. ``{ecapa_channels: 128}``."""
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


class _ClassifierNet(nn.Module):
    """Speaker model + ArcFace classifier as one module: what DDP wraps and one training step calls."""

    def __init__(self, model: SpeakerModel, classifier: ArcMarginProduct):
        super().__init__()
        self.model = model
        self.classifier = classifier

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.model(features, attention_mask)  # -> (B, E)
        return self.classifier(embeddings, labels)  # -> (B, num_classes)


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
            :func:`svlib.core.paths.default_results_dir`).
        record: write the ``train`` record of the run.
    """
    return run_stage(StageConfig.from_yaml(config_path, overrides), Trainer, resume=resume, reuse=reuse,
                     profile=profile or profile_of_config(config_path) or "custom", results_dir=results_dir,
                     record=record)


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
