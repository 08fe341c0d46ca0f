"""Stages under torchrun with 2 gloo processes, at the released config's structure (`tiny` shares every structural
switch of w2v-bert-2.0, mask_time_prob 0.05 included): every stage that trains the encoder runs, and a resumed
2-process run ends bitwise where an uninterrupted one does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from svlib.model import load_model
from svlib.training import train
from test_distill import distill_yaml
from test_train import stage_yaml, write_corpus

pytestmark = pytest.mark.slow


def torchrun(command: str, config: Path, *args: str) -> None:
    """``torchrun --standalone --nproc_per_node 2 -m svlib <command> --config <config> <args>``; fails with its log."""
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe), "--standalone", "--nproc_per_node", "2", "-m", "svlib", command, "--config", str(config),
           "--no-record", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr[-4000:]}"


def _steps(exp_dir: Path) -> list[int]:
    return [r["step"] for r in map(yaml.safe_load, (exp_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_every_stage_that_trains_the_encoder_runs_under_ddp(tmp_path):
    """Joint fine-tuning after a LoRA stage, LMFT, and distill + prune from that teacher: the stages that crashed
    at the second step under DDP while masked_spec_embed (never used, so never given a gradient) was trainable."""
    write_corpus(tmp_path / "data")
    s1 = train(stage_yaml(tmp_path, "s1", lora={"r": 4, "alpha": 8}, freeze_encoder=True, speed_perturb=True,
                          epochs=1))
    torchrun("train", stage_yaml(tmp_path, "s2", init_from=str(s1.parent), merge_lora=True, speed_perturb=True,
                                 epochs=1, batch_size=2))
    assert _steps(tmp_path / "exp" / "s2") == [1, 2, 3, 4]  # 16 utterances / (2 ranks × batch 2)
    torchrun("train", stage_yaml(tmp_path, "s3", init_from=str(tmp_path / "exp" / "s2"), margin=0.5, epochs=1,
                                 batch_size=2))
    assert load_model(tmp_path / "exp" / "s3" / "model").encoder.lora is None
    torchrun("prune", distill_yaml(tmp_path, "p1", teacher=str(tmp_path / "exp" / "s2" / "model"), epochs=1,
                                   batch_size=2))
    pruned = load_model(tmp_path / "exp" / "p1" / "model")
    teacher = load_model(tmp_path / "exp" / "s2" / "model")
    assert sum(p.numel() for p in pruned.encoder.parameters()) < sum(p.numel() for p in teacher.encoder.parameters())


def test_resumed_ddp_run_is_bitwise_exact(tmp_path):
    """2 processes: one epoch, then --resume to two epochs, equals two epochs in one go (each rank restores its own
    RNG state: the conv-module dropout of rank 1 draws from rank 1's generator)."""
    write_corpus(tmp_path / "data")
    settings = dict(epochs=2, batch_size=2, speed_perturb=True)
    torchrun("train", stage_yaml(tmp_path, "straight", **settings))
    resumed = stage_yaml(tmp_path, "resumed", **settings)
    torchrun("train", resumed, "-o", "epochs=1")
    torchrun("train", resumed, "--resume")
    a = load_model(tmp_path / "exp" / "straight" / "model").state_dict()
    b = load_model(tmp_path / "exp" / "resumed" / "model").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
