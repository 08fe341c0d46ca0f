"""The trainer: schedules, config errors, exact resume after a kill, the stage chain (LoRA merge, LMFT), NaN stop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from svlib.model import load_model
from svlib.core.paths import default_results_dir
from svlib.core.results import load_record
from svlib.training import ScheduleConfig, StageConfig, Trainer, latest_checkpoint, train


def write_corpus(root: Path, speakers=4, utts=4, seconds=1.2):
    """A Kaldi data dir of synthetic 'speakers': each a distinct tone plus noise, so training has something to learn."""
    root.mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk = [], []
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(16_000 * seconds)) / 16_000
    for s in range(speakers):
        for u in range(utts):
            wav = 0.3 * torch.sin(2 * torch.pi * (200 + 150 * s) * t) + 0.05 * torch.randn(len(t), generator=g)
            path = root / f"spk{s}_utt{u}.wav"
            sf.write(path, wav.numpy(), 16_000)
            wav_scp.append(f"spk{s}-utt{u} {path}")
            utt2spk.append(f"spk{s}-utt{u} spk{s}")
    (root / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (root / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    spk2utt = {}
    for line in utt2spk:
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (root / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in spk2utt.items()))
    return root


def stage_yaml(tmp_path: Path, name: str, **settings) -> Path:
    config = {
        "name": name,
        "exp_dir": str(tmp_path / "exp" / name),
        "train_dir": str(tmp_path / "data"),
        "encoder": "tiny",
        "head": "adapter_mfa",
        "min_frames": 60,
        "max_frames": 90,
        "batch_size": 4,
        "epochs": 2,
        "schedule": {"type": "constant", "lr": 1e-3},
        "precision": "fp32",
        "num_workers": 0,
        "augment": None,
        "speed_perturb": False,
        **settings,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "data")


def test_schedules_follow_the_recipe():
    s1 = ScheduleConfig(type="warmup_step", lr=1e-4, warmup_epochs=5, step_epochs=5, gamma=0.1)
    assert s1.lr_at(0) == 0 and s1.lr_at(2.5) == pytest.approx(5e-5) and s1.lr_at(5) == pytest.approx(1e-4)
    assert s1.lr_at(9.99) == pytest.approx(1e-4) and s1.lr_at(10) == pytest.approx(1e-5)
    assert s1.lr_at(14.9) == pytest.approx(1e-5)
    s2 = ScheduleConfig(type="cosine", lr=1e-5, final_lr=5e-6, decay_epochs=2)
    assert s2.lr_at(0) == pytest.approx(1e-5) and s2.lr_at(1) == pytest.approx(7.5e-6)
    assert s2.lr_at(2) == pytest.approx(5e-6) and s2.lr_at(3.5) == pytest.approx(5e-6)


def test_paper_configs_hold_the_papers_hyper_parameters(monkeypatch):
    for var in ("VOX_TRAIN_DIR", "VOX2_TRAIN_DIR", "W2V_BERT_2_0", "MUSAN_DIR", "RIRS_NOISES_DIR"):
        monkeypatch.setenv(var, f"/data/{var}")
    root = Path(__file__).resolve().parents[1] / "configs" / "paper"
    s1, s2, s3 = (StageConfig.from_yaml(root / f) for f in ("s1_freeze.yaml", "s2_joint.yaml", "s3_lmft.yaml"))
    assert (s1.lora, s1.freeze_encoder, s1.epochs, s1.batch_size) == ({"r": 64, "alpha": 128}, True, 15, 64)
    assert [s1.schedule.lr_at(e) for e in (5, 10)] == pytest.approx([1e-4, 1e-5])
    assert (s1.scale, s1.margin, s1.min_frames, s1.max_frames) == (32, 0.2, 200, 300)
    assert s2.merge_lora and not s2.freeze_encoder and s2.epochs == 4
    assert [s2.schedule.lr_at(e) for e in (0, 2, 3)] == pytest.approx([1e-5, 5e-6, 5e-6])
    assert (s3.margin, s3.min_frames, s3.max_frames, s3.augment, s3.speed_perturb) == (0.5, 500, 600, None, False)
    assert s3.batch_size == 32 and s3.epochs == 2 and s3.schedule.lr_at(1) == pytest.approx(5e-6)


def test_config_errors_name_the_problem(tmp_path, monkeypatch):
    path = stage_yaml(tmp_path, "bad", learning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\]"):
        StageConfig.from_yaml(path)
    monkeypatch.delenv("W2V_BERT_2_0", raising=False)
    path = stage_yaml(tmp_path, "env", encoder="${W2V_BERT_2_0}")
    with pytest.raises(ValueError, match="W2V_BERT_2_0"):
        StageConfig.from_yaml(path)
    assert StageConfig.from_yaml(path, {"encoder": "tiny"}).encoder == "tiny"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        StageConfig.from_yaml(tmp_path / "nope.yaml")


def _final_state(exp_dir: Path) -> dict:
    return load_model(exp_dir / "model").state_dict()


def test_killed_run_resumes_to_the_same_weights(tmp_path, corpus):
    """Kill a `svlib train` process mid-way with SIGKILL, resume it, and compare with an uninterrupted run."""
    settings = dict(epochs=2, checkpoint_every=1, speed_perturb=True)
    reference = train(stage_yaml(tmp_path, "reference", **settings))

    config = stage_yaml(tmp_path, "killed", **settings)
    exp = tmp_path / "exp" / "killed"
    cmd = [sys.executable, "-m", "svlib", "train", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (exp / "checkpoints" / "step-00000003.pt").exists():
        assert proc.poll() is None, "the training process ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(exp)
    assert killed_at is not None and not (exp / "model").exists(), "the run must have been killed mid-way"
    total_steps = 2 * 4  # 16 utterances / batch 4, 2 epochs
    assert int(killed_at.stem.split("-")[1]) < total_steps

    with pytest.raises(FileExistsError, match="--resume"):
        train(config)
    subprocess.run(cmd + ["--resume"], env=env, check=True, capture_output=True)
    resumed, expected = _final_state(exp), _final_state(Path(reference).parent)
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)
    lines = (exp / "metrics.jsonl").read_text().splitlines()
    assert {"loss", "accuracy", "lr", "margin"} <= set(yaml.safe_load(lines[-1]))


def test_stage_chain_lora_merge_and_lmft(tmp_path, corpus):
    s1 = train(stage_yaml(tmp_path, "s1", lora={"r": 4, "alpha": 8}, freeze_encoder=True, speed_perturb=True, epochs=1))
    m1 = load_model(s1)
    assert m1.encoder.lora is not None
    trained = {k: v for k, v in m1.state_dict().items() if "lora_B" in k}
    assert any(v.abs().max() > 0 for v in trained.values()), "stage 1 must train LoRA"
    frozen_before = Trainer(StageConfig.from_yaml(stage_yaml(tmp_path, "probe", lora={"r": 4, "alpha": 8},
                                                            freeze_encoder=True)))
    assert not any(p.requires_grad for n, p in frozen_before.model.encoder.named_parameters() if "lora_" not in n)

    s2 = train(stage_yaml(tmp_path, "s2", init_from=str(Path(s1).parent), merge_lora=True, speed_perturb=True, epochs=1))
    m2 = load_model(s2)
    assert m2.encoder.lora is None, "stage 2 merges LoRA"

    s3 = train(stage_yaml(tmp_path, "s3", init_from=str(Path(s2).parent), speed_perturb=False, margin=0.5, epochs=1,
                          schedule={"type": "constant", "lr": 1e-12}))
    c2 = torch.load(Path(s2) / "classifier.pt", weights_only=True)
    c3 = torch.load(Path(s3) / "classifier.pt", weights_only=True)
    assert len(c2["classes"]) == 12 and c3["classes"] == ["spk0", "spk1", "spk2", "spk3"]
    rows = [c2["classes"].index(name) for name in c3["classes"]]
    torch.testing.assert_close(c3["weight"], c2["weight"][rows], atol=1e-6, rtol=0)  # lr ~ 0: rows carried over


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, corpus):
    trainer = Trainer(StageConfig.from_yaml(stage_yaml(tmp_path, "nan")))
    trainer.net.forward = lambda features, mask, labels: torch.full((len(labels), 4), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 1"):
        trainer.fit()


def test_torchrun_ddp_on_cpu(tmp_path, corpus):
    """Two gloo processes under torchrun: each rank trains on its shard, rank 0 writes the model once."""
    config = stage_yaml(tmp_path, "ddp", epochs=1, batch_size=2)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "svlib", "train", "--config", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / "exp" / "ddp"
    steps = [yaml.safe_load(line)["step"] for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], "16 utterances / (2 ranks × batch 2) = 4 steps, logged once by rank 0"
    assert load_model(exp / "model").head.output_size == 256


def test_periodic_validation_eer_is_logged(tmp_path, corpus):
    trials = tmp_path / "trials"
    trials.write_text("spk0-utt0 spk0-utt1 target\nspk0-utt0 spk1-utt0 nontarget\n"
                      "spk2-utt2 spk2-utt3 target\nspk2-utt2 spk3-utt1 nontarget\n")
    out = train(stage_yaml(tmp_path, "valid", epochs=2, valid_dir=str(corpus), valid_trials=str(trials)))
    records = [yaml.safe_load(line) for line in (Path(out).parent / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "valid_eer_percent" in r]
    assert [r["epoch"] for r in valid] == [1, 2]
    assert all(0.0 <= r["valid_eer_percent"] <= 100.0 and r["valid_n_trials"] == 4 for r in valid)
    with pytest.raises(ValueError, match="valid_dir and valid_trials go together"):
        StageConfig.from_yaml(stage_yaml(tmp_path, "half", valid_dir=str(corpus)))


def test_reuse_skips_a_finished_stage_and_retrains_a_changed_one(tmp_path, corpus):
    s1_yaml = stage_yaml(tmp_path, "s1", epochs=1)
    s1 = train(s1_yaml, reuse=True)
    done = Path(s1).parent / "done.json"
    first = done.read_text()
    metrics_lines = (Path(s1).parent / "metrics.jsonl").read_text().count("\n")
    s2_yaml = stage_yaml(tmp_path, "s2", init_from=str(Path(s1).parent), epochs=1)
    s2 = train(s2_yaml, reuse=True)
    s2_done = (Path(s2).parent / "done.json").read_text()

    # same configuration, data and upstream: nothing is trained again
    assert train(s1_yaml, reuse=True) == s1 and done.read_text() == first
    assert (Path(s1).parent / "metrics.jsonl").read_text().count("\n") == metrics_lines
    assert train(s2_yaml, reuse=True) == s2 and (Path(s2).parent / "done.json").read_text() == s2_done

    # a changed upstream stage invalidates the downstream one; stale outputs are replaced, not appended to
    train(s1_yaml, reuse=True, overrides={"seed": 7})
    assert done.read_text() != first
    assert (Path(s1).parent / "metrics.jsonl").read_text().count("\n") == metrics_lines
    train(s2_yaml, reuse=True)
    assert (Path(s2).parent / "done.json").read_text() != s2_done


def test_book_run_stage_launches_torchrun_and_reuses(tmp_path, corpus, monkeypatch):
    """svlib.book.run.run_stage: a chapter's stage on 2 processes under torchrun, then reused in-process."""
    from svlib.book.run import run_stage

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = stage_yaml(tmp_path, "launched", epochs=1, batch_size=2)
    out = run_stage("train", config, gpus=2, overrides={"seed": 7}, profile="demo")
    steps = [yaml.safe_load(line)["step"] for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and (out.parent / "done.json").is_file()
    record = load_record(default_results_dir(), "demo", "train", "launched")  # written by rank 0 only
    assert record["metrics"]["steps"] == 4 and record["config"]["seed"] == 7
    done = (out.parent / "done.json").read_text()
    assert run_stage("train", config, gpus=1, overrides={"seed": 7}) == out  # same fingerprint: not trained again
    assert (out.parent / "done.json").read_text() == done
    with pytest.raises(RuntimeError, match="exit code"):
        run_stage("train", config, gpus=2, overrides={"batch_size": 0})


def test_a_run_records_its_summary(tmp_path, corpus):
    """Each stage run writes a ``train`` record: its steps, the last epoch's mean loss, the model's parameters."""
    from svlib.cli import main

    config = stage_yaml(tmp_path, "recorded", epochs=2)
    assert main(["train", "--config", str(config), "--profile", "demo"]) == 0
    exp = tmp_path / "exp" / "recorded"
    record = load_record(default_results_dir(), "demo", "train", "recorded")
    steps = [yaml.safe_load(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    second_epoch = [r["loss"] for r in steps if 1 < r["epoch"] <= 2]
    assert len(second_epoch) == len(steps) // 2 == 4  # 16 utterances, batch 4
    m = record["metrics"]
    assert m["steps"] == yaml.safe_load((exp / "done.json").read_text())["steps"] == len(steps)
    assert m["loss"] == pytest.approx(sum(second_epoch) / 4) and m["epochs"] == 2
    assert m["model_params"] == sum(v.numel() for v in load_model(exp / "model").state_dict().values())
    assert record["profile"] == "demo" and yaml.safe_load((exp / "done.json").read_text())["profile"] == "demo"
    assert record["extra"]["exp_dir"] == str(exp)

    # no profile given and a config outside configs/<profile>/: "custom"; --no-record writes nothing
    train(stage_yaml(tmp_path, "anywhere", epochs=1))
    assert (default_results_dir() / "custom" / "train" / "anywhere.json").is_file()
    assert main(["train", "--config", str(stage_yaml(tmp_path, "silent", epochs=1)), "--no-record"]) == 0
    assert not list(default_results_dir().rglob("silent.json"))
