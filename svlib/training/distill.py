"""The pruning stages of §2.6 / §3.4: distillation-guided structured pruning, then distillation of the pruned model.

A stage is one YAML file (``configs/paper/prune_distill.yaml`` …), read into :class:`DistillConfig`, and run by
:class:`DistillTrainer` under the same rules as the speaker-verification stages of :mod:`svlib.training` (torchrun DDP,
bf16 autocast on GPU, atomic checkpoints with exact ``--resume``, ``--reuse``, ``metrics.jsonl``):

1. **Distill + prune** (``prune: true``). The teacher is the encoder of the joint-fine-tuned speaker model
   (``teacher``), frozen. The student is a copy with Hard Concrete gates
   (:class:`~svlib.pruning.gated.GatedW2VBertEncoder`). Each step minimises Eq. (9),
   ``L_distill + λ1 (s − t) + λ2 (s − t)²``, with ``L_distill`` of Eq. (5) over all hidden states, ``s`` the
   expected sparsity from the gates (Eq. 8) and ``t`` the target, which rises linearly to its final value; λ1, λ2
   ascend. Three AdamW groups: student weights, ``log α``, λ. At the end the deterministic masks are applied: the
   HF modules are resized in place and the kept mask values folded into the next weights.
2. **Distill** (``prune: false``, ``init_from`` = stage 1). The pruned student is distilled further from the same
   teacher, without the regulariser.

The output of each stage, ``exp_dir/model``, is a speaker model: the (pruned) student encoder with the teacher's
head and classifier, so the SV stages of :mod:`svlib.training` continue from it with ``init_from`` (§3.4: "the pruned
student model replaces the initial joint fine-tuned w2v-BERT 2.0 model"). The pruned structure is also written to
``exp_dir/structure.json`` in the authors' format.

Explained in the book chapter "Lagrangian pruning".
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from svlib.data.loader import TrainData, build_train_loader
from svlib.model import load_model
from svlib.core.paths import profile_of_config
from svlib.pruning import (
    AugmentedLagrangian,
    GatedW2VBertEncoder,
    PruningConfig,
    distill_loss,
    pruning_param_groups,
    structure_sparsity,
    target_sparsity,
)
from svlib.model.structure import PrunedStructure
from svlib.training.stage import (
    CLASSIFIER_NAME,
    DistInfo,
    StageTrainer,
    check_stage_settings,
    read_stage_yaml,
    run_stage,
)

logger = logging.getLogger(__name__)

STRUCTURE_NAME = "structure.json"


@dataclass
class DistillConfig:
    """One pruning stage. Every field can be set in the stage's YAML file; paths are relative to the YAML."""

    name: str
    """stage name, e.g. ``prune_distill`` (used in logs)."""
    exp_dir: str
    """where checkpoints, metrics, the structure and the final model go."""
    train_dir: str
    """Kaldi data directory (wav.scp, utt2spk) of the training audio (labels are not used)."""
    teacher: str
    """saved speaker-model directory whose encoder is the frozen teacher (the joint-fine-tuned model)."""
    init_from: str | None = None
    """exp_dir of the previous pruning stage: its (pruned) model is the student (stage 2)."""
    prune: bool = True
    """gate the student and add Eq. (9)'s regulariser; prune physically at the end (stage 1)."""
    pruning: PruningConfig = field(default_factory=PruningConfig)
    """target sparsity, its warm-up, gate initialisation and the three learning rates (the paper's by default)."""
    epochs: int = 20
    batch_size: int = 16
    """utterances per GPU and step."""
    min_frames: int = 400
    """crop length in 10 ms fbank frames (4 s crops in the authors' recipe)."""
    max_frames: int = 400
    speed_perturb: bool = False
    augment: dict | None = None
    """augmentation of the student's and teacher's (same) input; off in the authors' recipe."""
    grad_clip: float = 1.0
    """clip the student weights' and ``log α``'s gradient norm (0: no clipping); the authors clip at 1.0 (DPHuBERT
    at 10)."""
    seed: int = 42
    precision: str = "bf16"
    """``bf16`` autocast on CUDA (the CPU always runs float32) or ``fp32``."""
    num_workers: int = 4
    checkpoint_every: int = 0
    """also checkpoint every N optimiser steps (0: only at epoch ends)."""
    keep_checkpoints: int = 2
    cache_size: int = 0
    """decoded utterances kept in memory per data worker."""

    def __post_init__(self):
        if isinstance(self.pruning, dict):
            self.pruning = PruningConfig(**self.pruning)
        check_stage_settings(self)
        if not self.prune and not self.init_from:
            raise ValueError("prune: false continues distilling a pruned student: set init_from to the pruning stage")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "DistillConfig":
        """Read a pruning-stage YAML; ``overrides`` (``{"pruning.target_sparsity": 0.5}``) replace keys."""
        return cls(**read_stage_yaml(cls, Path(path), overrides, ("exp_dir", "train_dir", "teacher", "init_from")))

    def to_dict(self) -> dict:
        return asdict(self)


class DistillTrainer(StageTrainer):
    """Builds teacher, student, data and optimiser of a :class:`DistillConfig` and runs it (module docstring).

    Args:
        config: the stage.
        dist_info: rank, world size and device (default: :func:`svlib.training.stage.init_distributed`).
    """

    progress_keys = ("distill", "sparsity")

    def __init__(self, config: DistillConfig, dist_info: DistInfo | None = None):
        super().__init__(config, dist_info)
        self.data: TrainData = build_train_loader(config, rank=self.dist.rank, world_size=self.dist.world_size)

        teacher_model = load_model(config.teacher)
        if teacher_model.encoder.lora is not None:
            teacher_model.encoder.merge_lora()
        if config.init_from:
            self.model = load_model(Path(config.init_from) / "model")  # the pruned student with the teacher's head
        else:
            self.model = copy.deepcopy(teacher_model)  # the student starts as the teacher (one checkpoint read)
        self.teacher = teacher_model.encoder.to(self.dist.device).eval().requires_grad_(False)
        self.classifier_source = Path(config.init_from) / "model" if config.init_from else Path(config.teacher)
        self.model.encoder.config.layerdrop = 0.0  # Eq. (5) compares every layer: none may be skipped at random
        if config.prune:  # gate the student's own copy in place
            self.model.encoder = GatedW2VBertEncoder(self.model.encoder.hf_model, config.pruning)
        self.model.to(self.dist.device)
        self.model.head.requires_grad_(False)  # only the encoder is distilled
        # every student weight is distilled: a teacher saved with LoRA comes back from peft's merge with its encoder
        # weights frozen (requires_grad=False), which would leave only the gates to train
        self.student = self.model.encoder.train().requires_grad_(True)
        self.lagrangian = AugmentedLagrangian().to(self.dist.device)
        if config.prune:
            groups = pruning_param_groups(self.student, self.lagrangian, config.pruning)
        else:
            params = [p for p in self.student.parameters() if p.requires_grad]
            groups = [{"name": "weights", "params": params, "lr": config.pruning.lr_weights, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups)
        self.net = self._wrap_ddp(self.student)

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "lagrangian": self.lagrangian}

    def _train_step(self, wavs: torch.Tensor, labels: torch.Tensor, epoch: float, autocast: bool) -> dict:
        c = self.config
        wavs = wavs.to(self.dist.device)
        with torch.no_grad():
            features, mask = self.model.frontend(wavs)
            with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=autocast):
                teacher_states = self.teacher(features, mask)
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=autocast):
            student_states = self.net(features, mask)
        loss_distill = distill_loss(student_states.float(), teacher_states.float(), mask)  # Eq. (5)
        record = {"distill": loss_distill.item()}
        loss = loss_distill
        if c.prune:
            target = target_sparsity(self.step, c.pruning.target_sparsity, c.pruning.warmup_steps)
            sparsity = self.student.expected_sparsity()  # Eq. (8) through the gates
            loss = loss + self.lagrangian(sparsity, target)  # Eq. (9)
            record.update({
                "sparsity": sparsity.item(),
                "target": target,
                "lambda1": self.lagrangian.lambda1.item(),
                "lambda2": self.lagrangian.lambda2.item(),
            })
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{c.name}: non-finite loss {loss.item()} at step {self.step + 1}; lower the learning rates in "
                "pruning: {...} or check the data, and resume from the last checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            params = [p for g in self.optimizer.param_groups if g.get("name") != "lambda" for p in g["params"]]
            record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, c.grad_clip))
        self.optimizer.step()
        record["loss"] = loss.item()
        return record

    def save_model(self) -> Path:
        """Prune the gated student (stage 1), write the speaker model, classifier and structure (rank 0)."""
        out = self.exp_dir / "model"
        self.student.eval()
        if self.config.prune:
            expected = self.student.expected_sparsity().item()
            self.model.encoder = self.student.prune_()
        # the pruned encoder's config carries its structure (stage 1 just pruned it, stage 2 loaded it pruned)
        structure = PrunedStructure.from_dict(self.model.encoder.config.to_dict(), source="pruned student")
        structure.gates = self.config.pruning.gate_settings()
        if self.config.prune:
            sparsity = structure_sparsity(structure)
            self._log({"step": self.step, "final_sparsity": sparsity, "expected_sparsity": expected,
                       "target": self.config.pruning.target_sparsity})
            logger.info("%s: pruned to sparsity %.3f (target %.3f)", self.config.name, sparsity,
                        self.config.pruning.target_sparsity)
        if self.dist.is_main:
            self.model.save(out)
            classifier = self.classifier_source / CLASSIFIER_NAME
            if classifier.is_file():
                shutil.copyfile(classifier, out / CLASSIFIER_NAME)
            structure.save(self.exp_dir / STRUCTURE_NAME)
        self._barrier()
        return out


def prune(config_path: str | Path, resume: bool = False, overrides: dict | None = None, reuse: bool = False, *,
          profile: str | None = None, results_dir: str | Path | None = None, record: bool = True) -> Path:
    """Run one pruning stage from its YAML file (the body of ``svlib prune``); returns the final model directory.

    Args:
        config_path: the stage YAML.
        resume: continue from the latest checkpoint in ``exp_dir``.
        overrides: ``{"key.sub": value}`` replacing YAML keys.
        reuse: skip the stage when ``exp_dir/model`` was made from the same configuration, data and upstream
            stages (see :func:`svlib.training.sv.train`).
        profile, results_dir, record: the run's ``train`` record, as in :func:`svlib.training.sv.train`.
    """
    return run_stage(DistillConfig.from_yaml(config_path, overrides), DistillTrainer, resume=resume, reuse=reuse,
                     profile=profile or profile_of_config(config_path) or "custom", results_dir=results_dir,
                     record=record)
