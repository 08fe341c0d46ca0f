"""The stage chains of the paper's recipe: per-corpus speed perturbation, LMFT on a merged model, a LoRA teacher."""

from pathlib import Path

import pytest
import torch
import yaml

from svlib.data.dataset import SPEED_FACTORS, CropItem, SpeakerTrainDataset, speed_perturbed_label
from svlib.training.distill import DistillConfig, DistillTrainer, prune
from svlib.model import SpeakerModel, load_model
from svlib.training import StageConfig, Trainer, train
from test_distill import distill_yaml
from test_train import stage_yaml, write_corpus

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _subset_dir(tmp_path: Path, corpus: Path, speakers: set[str]) -> Path:
    """A Kaldi dir with the utterances of ``speakers`` (the VoxCeleb2 part of a VoxCeleb2 + VoxBlink2 set)."""
    out = tmp_path / "vox2_part"
    out.mkdir()
    for name in ("wav.scp", "utt2spk"):
        lines = (corpus / name).read_text().splitlines()
        (out / name).write_text("".join(f"{line}\n" for line in lines if line.split()[0].split("-")[0] in speakers))
    return out


def test_speed_perturbation_of_a_subset_of_the_speakers(tmp_path):
    """§3.3: speed perturbation for VoxCeleb2, never for VoxBlink2: only the listed speakers get the two extra
    classes; the others always keep factor 1.0 and their own class; with every speaker listed the classes are
    those of speed_perturbed_label."""
    wav_scp = {f"spk{s}-u{u}": str(tmp_path / "x.wav") for s in range(4) for u in range(3)}
    utt2spk = {u: u.split("-")[0] for u in wav_scp}
    ds = SpeakerTrainDataset(wav_scp, utt2spk, speed_perturb=True, perturbed_speakers=["spk1", "spk3"])
    assert ds.num_classes == 4 + 2 * 2
    assert ds.classes == ["spk0", "spk1", "spk2", "spk3", "spk1@sp0.9", "spk3@sp0.9", "spk1@sp1.1", "spk3@sp1.1"]
    ds.load = lambda index: torch.randn(16_000)
    seen = {s: set() for s in ds.speakers}
    for epoch in range(6):
        for index in range(len(ds)):
            _, label = ds[CropItem(index, 8_000, epoch)]
            seen[ds.speakers[ds.labels[index]]].add(ds.classes[label])
    assert seen["spk0"] == {"spk0"} and seen["spk2"] == {"spk2"}
    assert seen["spk1"] == {"spk1", "spk1@sp0.9", "spk1@sp1.1"} and seen["spk3"] == {"spk3", "spk3@sp0.9", "spk3@sp1.1"}

    every = SpeakerTrainDataset(wav_scp, utt2spk, speed_perturb=True)
    for i, s in enumerate(every.speakers):
        for k, f in enumerate(SPEED_FACTORS):
            assert every.classes[speed_perturbed_label(i, k, 4)] == (s if f == 1.0 else f"{s}@sp{f:g}")
    with pytest.raises(ValueError, match="none of the training speakers"):
        SpeakerTrainDataset(wav_scp, utt2spk, speed_perturb=True, perturbed_speakers=["vb2-spk9"])


def test_paper_configs_perturb_voxceleb2_only_and_chain_their_classes(monkeypatch):
    """Every paper stage that perturbs names VoxCeleb2's speakers (so the Table 3 chain's classes match its
    teacher's), and LMFT merges LoRA (Table 2's "+ LMFT" rows start from a LoRA stage 1)."""
    for var in ("VOX_TRAIN_DIR", "VOX2_TRAIN_DIR", "W2V_BERT_2_0", "MUSAN_DIR", "RIRS_NOISES_DIR"):
        monkeypatch.setenv(var, f"/data/{var}")
    perturbing = 0
    for path in sorted((CONFIGS / "paper").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "speed_perturb" not in raw:
            continue
        if raw["speed_perturb"]:
            perturbing += 1
            assert raw.get("speed_perturb_speakers") == "${VOX2_TRAIN_DIR}", path
        if "lmft" in path.name:
            assert StageConfig.from_yaml(path).merge_lora, path
    assert perturbing == 7  # s1, s2, prune/s1, prune/s2, table2 × 3


def test_the_pruning_chain_keeps_the_teachers_classes(tmp_path):
    """The Table 3 chain with the Table 1 system's perturbation (a subset of the speakers): stages 1-2, distill +
    prune, distill, then SV stage 1 on the pruned encoder, which starts from the teacher's classifier rows."""
    corpus = write_corpus(tmp_path / "data")
    subset = dict(speed_perturb=True, speed_perturb_speakers=str(_subset_dir(tmp_path, corpus, {"spk0", "spk2"})))
    s1 = train(stage_yaml(tmp_path, "s1", lora={"r": 2, "alpha": 4}, freeze_encoder=True, epochs=1, **subset))
    s2 = train(stage_yaml(tmp_path, "s2", init_from=str(s1.parent), merge_lora=True, epochs=1, **subset))
    teacher_classes = torch.load(s2 / "classifier.pt", weights_only=True)["classes"]
    assert len(teacher_classes) == 4 + 2 * 2
    p1 = prune(distill_yaml(tmp_path, "p1", teacher=str(s2), epochs=1))
    p2 = prune(distill_yaml(tmp_path, "p2", teacher=str(s2), prune=False, init_from=str(p1.parent), epochs=1))
    out = train(stage_yaml(tmp_path, "pruned_s1", init_from=str(p2.parent), lora={"r": 2, "alpha": 4},
                           freeze_encoder=True, epochs=1, **subset))
    assert torch.load(out / "classifier.pt", weights_only=True)["classes"] == teacher_classes


def test_lmft_after_a_lora_stage_trains_the_merged_model(tmp_path):
    """Table 2's "LoRA_Adapter_MFA + LMFT (Joint FT)": LMFT straight after stage 1 fine-tunes the merged model
    (580M + 6.2M), not the encoder with LoRA still attached (580M + 12.5M)."""
    write_corpus(tmp_path / "data")
    s1 = train(stage_yaml(tmp_path, "s1", lora={"r": 2, "alpha": 4}, freeze_encoder=True, epochs=1))
    lmft = yaml.safe_load((CONFIGS / "paper" / "s3_lmft.yaml").read_text())
    config = StageConfig.from_yaml(stage_yaml(tmp_path, "s3", init_from=str(s1.parent), margin=0.5, epochs=1,
                                              merge_lora=lmft["merge_lora"]))
    trainer = Trainer(config)
    assert trainer.model.encoder.lora is None
    assert all(p.requires_grad for p in trainer.model.parameters())
    n_merged = sum(p.numel() for p in trainer.model.parameters())
    assert n_merged == sum(p.numel() for n, p in load_model(s1).named_parameters() if "lora_" not in n)
    assert load_model(trainer.fit()).encoder.lora is None


def test_a_lora_teacher_leaves_every_student_weight_trainable(tmp_path):
    """A teacher saved with LoRA attached is merged on loading; peft's merge leaves the encoder frozen, and the
    student (its copy) must still train every weight, not only its gates."""
    write_corpus(tmp_path / "data")
    teacher = SpeakerModel.build("tiny", head="adapter_mfa")
    teacher.encoder.add_lora()
    teacher.save(tmp_path / "teacher")
    trainer = DistillTrainer(DistillConfig.from_yaml(distill_yaml(tmp_path, "p1", epochs=1)))
    assert trainer.teacher.lora is None
    assert all(p.requires_grad for p in trainer.student.parameters())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in trainer.student.parameters())


def test_a_second_seeds_chain_lives_beside_the_first_and_reuses_nothing_of_it(tmp_path):
    """svlib.book.run.run_seeded_chain: the tagged chain's stages get their own folders and names, its stage 2
    starts from its own stage 1, and the untagged chain is left as it was."""
    from svlib.book.run import run_seeded_chain

    write_corpus(tmp_path / "data")
    s1 = stage_yaml(tmp_path, "s1", epochs=1)
    s2 = stage_yaml(tmp_path, "s2", epochs=1, init_from=str(tmp_path / "exp" / "s1"))
    first = run_seeded_chain([s1, s2], 42, profile="test", results_dir=tmp_path / "results")
    before = (tmp_path / "exp" / "s2" / "model" / "model.safetensors").read_bytes()
    second = run_seeded_chain([s1, s2], 7, tag="seed7", profile="test", results_dir=tmp_path / "results")
    assert first == {"s1": tmp_path / "exp" / "s1" / "model", "s2": tmp_path / "exp" / "s2" / "model"}
    assert second == {"s1": tmp_path / "exp" / "s1-seed7" / "model", "s2": tmp_path / "exp" / "s2-seed7" / "model"}
    tagged = StageConfig.from_yaml(tmp_path / "exp" / "s2-seed7" / "config.yaml")
    assert (tagged.name, tagged.seed, tagged.init_from) == ("s2-seed7", 7, str(tmp_path / "exp" / "s1-seed7"))
    assert (tmp_path / "exp" / "s2" / "model" / "model.safetensors").read_bytes() == before
    a, b = load_model(first["s1"]), load_model(second["s1"])
    assert not torch.equal(a.head.state_dict()[next(iter(a.head.state_dict()))],
                           b.head.state_dict()[next(iter(b.head.state_dict()))])
