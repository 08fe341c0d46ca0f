"""The pruning stages (svlib.training.distill): distill + prune, distill, then an SV stage on the pruned encoder."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml

from svlib.training.distill import DistillConfig, prune
from svlib.model import SpeakerModel, load_model
from svlib.model.structure import PrunedStructure
from svlib.pruning import structure_params, structure_sparsity
from svlib.core.paths import default_results_dir
from svlib.core.results import load_record
from svlib.training import read_metrics, train
from test_train import stage_yaml, write_corpus


def distill_yaml(tmp_path: Path, name: str, **settings) -> Path:
    config = {
        "name": name,
        "exp_dir": str(tmp_path / "exp" / name),
        "train_dir": str(tmp_path / "data"),
        "teacher": str(tmp_path / "teacher"),
        "min_frames": 60,
        "max_frames": 90,
        "batch_size": 4,
        "epochs": 2,
        "precision": "fp32",
        "num_workers": 0,
        "pruning": {"target_sparsity": 0.5, "warmup_steps": 4, "lr_log_alpha": 0.2, "lr_lambda": 0.2},
        **settings,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def setup(tmp_path):
    write_corpus(tmp_path / "data")
    torch.manual_seed(0)
    SpeakerModel.build("tiny", head="adapter_mfa").save(tmp_path / "teacher")
    # the teacher stage's classifier: the SV stages after pruning start from its rows
    torch.save({"weight": torch.randn(4, 256), "classes": ["spk0", "spk1", "spk2", "spk3"]},
               tmp_path / "teacher" / "classifier.pt")
    return tmp_path


def _weights(model_dir: Path) -> dict:
    return load_model(model_dir).state_dict()


def test_prune_then_distill_then_sv_stage(setup):
    tmp_path = setup
    out = prune(distill_yaml(tmp_path, "prune"))
    records = read_metrics(out.parent)
    steps = [r for r in records if "sparsity" in r and "final_sparsity" not in r]
    assert steps[0]["target"] == 0.0 and steps[-1]["target"] == pytest.approx(0.5)
    assert steps[-1]["lambda2"] > 0, "lambda2 ascends while the sparsity is below the target"
    final = [r for r in records if "final_sparsity" in r][0]

    structure = PrunedStructure.load(out.parent / "structure.json")
    assert final["final_sparsity"] == pytest.approx(structure_sparsity(structure))
    pruned = load_model(out)
    assert sum(p.numel() for p in pruned.encoder.parameters()) == structure_params(structure)
    assert sum(p.numel() for p in pruned.encoder.parameters()) < sum(
        p.numel() for p in load_model(tmp_path / "teacher").encoder.parameters())
    torch.testing.assert_close(pruned.head.state_dict(), load_model(tmp_path / "teacher").head.state_dict())
    record = load_record(default_results_dir(), "custom", "train", "prune")["metrics"]  # the run's train record
    assert record["final_sparsity"] == final["final_sparsity"] and record["target"] == pytest.approx(0.5)
    assert record["model_params"] == sum(v.numel() for v in pruned.state_dict().values())

    out2 = prune(distill_yaml(tmp_path, "distill", prune=False, init_from=str(out.parent), epochs=1))
    assert all("sparsity" not in r for r in read_metrics(out2.parent))
    assert PrunedStructure.load(out2.parent / "structure.json") == structure

    # the SV stages continue from the pruned model (the classifier rows come from the teacher's stage)
    assert (out2 / "classifier.pt").is_file()
    sv = train(stage_yaml(tmp_path, "s1_pruned", init_from=str(out2.parent), freeze_encoder=True,
                          lora={"r": 2, "alpha": 4}, epochs=1))
    assert sum(p.numel() for n, p in load_model(sv).encoder.named_parameters() if "lora_" not in n) == \
        structure_params(structure)


def test_resumed_pruning_ends_with_the_same_weights(setup):
    tmp_path = setup
    straight = prune(distill_yaml(tmp_path, "straight"))
    path = distill_yaml(tmp_path, "resumed")
    prune(path, overrides={"epochs": 1})  # stops after one epoch (as a killed run would at its last checkpoint)
    (Path(tmp_path / "exp" / "resumed") / "model").rename(tmp_path / "exp" / "resumed" / "model-epoch1")
    resumed = prune(path, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        DistillConfig(name="x", exp_dir="e", train_dir="d", teacher="t", prune=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        DistillConfig.from_yaml(tmp_path / "missing.yaml")


def test_paper_pruning_configs_hold_the_authors_recipe(monkeypatch):
    monkeypatch.setenv("VOX_TRAIN_DIR", "/data/vox2_vb2")
    root = Path(__file__).resolve().parents[1] / "configs" / "paper" / "prune"
    p1 = DistillConfig.from_yaml(root / "p1_prune.yaml")
    p2 = DistillConfig.from_yaml(root / "p2_distill.yaml")
    q = p1.pruning
    assert (q.target_sparsity, q.warmup_steps) == (0.8, 10_000)  # §3.4
    assert (q.lr_weights, q.lr_log_alpha, q.lr_lambda) == (2e-4, 2e-2, 2e-2)  # §3.4
    assert (p1.epochs, p1.batch_size, p1.min_frames, p1.max_frames) == (20, 16, 400, 400)
    # the authors clip the gradient norm at 1.0 (DPHuBERT at 10), with no augmentation or speed perturbation
    assert p1.grad_clip == p2.grad_clip == 1.0
    assert not (p1.speed_perturb or p1.augment or p2.speed_perturb or p2.augment)
    assert p1.prune and not p2.prune and Path(p2.init_from).name == "p1_prune"


def test_the_paper_sparsity_sweep_is_table3s_chain_at_other_targets(monkeypatch, tmp_path):
    """configs/paper/prune/p1_prune_{50,70,90}.yaml differ from p1_prune.yaml only in target, name and folder, and
    sweep.sh chains each target's five stages folder to folder, as table3.sh chains the 80 % ones."""
    import shlex

    from svlib.cli.common import parse_overrides
    from svlib.training.sv import StageConfig

    monkeypatch.setenv("VOX_TRAIN_DIR", "/data/vox2_vb2")
    monkeypatch.setenv("VOX2_TRAIN_DIR", "/data/vox2")
    monkeypatch.setenv("MUSAN_DIR", "/data/musan")
    monkeypatch.setenv("RIRS_NOISES_DIR", "/data/rirs")
    monkeypatch.setenv("SVLIB_HOME", str(tmp_path))
    root = Path(__file__).resolve().parents[1] / "configs" / "paper" / "prune"
    p1 = DistillConfig.from_yaml(root / "p1_prune.yaml")
    script = (root / "sweep.sh").read_text().replace("\\\n", " ")
    loop = re.search(r"for t in ([\d ]+); do\n(.*?)\ndone", script, re.S)
    targets = loop.group(1).split()
    assert targets == ["50", "70", "90"]
    for t in targets:
        variant = DistillConfig.from_yaml(root / f"p1_prune_{t}.yaml")
        assert variant.pruning.target_sparsity == int(t) / 100
        assert variant.exp_dir == str(tmp_path / "exp" / "paper" / f"pruned{t}" / "p1_prune")
        as_80 = dataclasses.replace(variant, name=p1.name, exp_dir=p1.exp_dir,
                                    pruning=dataclasses.replace(variant.pruning, target_sparsity=0.8))
        assert as_80 == p1, "the paper's recipe apart from the target"
        previous, configs = None, []
        for line in loop.group(2).splitlines():
            words = shlex.split(line.replace("${t}", t).replace("$t", t).replace("$e", f"{tmp_path}/exp/paper/pruned{t}"))
            if "--config" not in words:
                continue
            path = Path(words[words.index("--config") + 1].replace("configs/paper/prune/", f"{root}/"))
            overrides = parse_overrides([words[i + 1] for i, w in enumerate(words) if w == "-o"])
            cls = DistillConfig if words[words.index("svlib") + 1] == "prune" else StageConfig
            config = cls.from_yaml(path, overrides)
            if previous is not None:
                assert config.init_from == previous.exp_dir, (t, path.name)
            assert f"pruned{t}" in config.exp_dir and (previous is None or config.name != previous.name)
            previous = config
            configs.append(path.stem)
        assert configs == [f"p1_prune_{t}", "p2_distill", "s1_freeze", "s2_joint", "s3_lmft"]


def test_a_sparsity_sweep_runs_the_chain_per_target_and_keeps_the_configs_own_untagged(setup):
    """svlib.book.run.run_sparsity_sweep: the configs' own target (0.5 here) is the untagged chain; another target
    runs as a tagged copy whose every stage starts from the copy's stage before it, and prunes to its own target."""
    from svlib.book.run import run_sparsity_sweep

    tmp_path = setup
    p1 = distill_yaml(tmp_path, "p1")
    p2 = distill_yaml(tmp_path, "p2", prune=False, init_from=str(tmp_path / "exp" / "p1"), epochs=1)
    s1 = stage_yaml(tmp_path, "s1", init_from=str(tmp_path / "exp" / "p2"), freeze_encoder=True,
                    lora={"r": 2, "alpha": 4}, epochs=1)
    runs = run_sparsity_sweep([0.5, 0.3], [p1, p2], [s1], prune_overrides={"seed": 3}, profile="test",
                              results_dir=tmp_path / "results")
    exp = tmp_path / "exp"
    assert runs[0.5] == {"p1": exp / "p1" / "model", "p2": exp / "p2" / "model", "s1": exp / "s1" / "model"}
    assert runs[0.3] == {"p1": exp / "p1-sparsity30" / "model", "p2": exp / "p2-sparsity30" / "model",
                         "s1": exp / "s1-sparsity30" / "model"}
    tagged_p2 = DistillConfig.from_yaml(exp / "p2-sparsity30" / "config.yaml")
    tagged_s1 = yaml.safe_load((exp / "s1-sparsity30" / "config.yaml").read_text())
    assert tagged_p2.init_from == str(exp / "p1-sparsity30") and tagged_s1["init_from"] == str(exp / "p2-sparsity30")
    assert tagged_p2.teacher == str(tmp_path / "teacher"), "the teacher is outside the chain and stays"
    targets = {t: [r for r in read_metrics(exp / f"p1{'' if t == 0.5 else '-sparsity30'}") if "final_sparsity" in r][0]
               for t in (0.5, 0.3)}
    assert targets[0.5]["target"] == pytest.approx(0.5) and targets[0.3]["target"] == pytest.approx(0.3)
    structures = [PrunedStructure.load(exp / d / "structure.json") for d in ("p2", "p2-sparsity30")]
    assert structure_params(structures[1]) > structure_params(structures[0]), "the lower target keeps more"
    assert sum(p.numel() for n, p in load_model(runs[0.3]["s1"]).encoder.named_parameters()
               if "lora_" not in n) == structure_params(structures[1])
    trained = (exp / "s1-sparsity30" / "model" / "model.safetensors").stat().st_mtime_ns
    again = run_sparsity_sweep([0.3], [p1, p2], [s1], prune_overrides={"seed": 3}, profile="test",
                               results_dir=tmp_path / "results")  # in this process: finds the chain trained
    assert again[0.3] == runs[0.3]
    assert (exp / "s1-sparsity30" / "model" / "model.safetensors").stat().st_mtime_ns == trained
    with pytest.raises(ValueError, match="target sparsity 1.2"):
        run_sparsity_sweep([1.2], [p1, p2], [s1])


def test_an_aligned_pruning_run_saves_multiples_and_the_model_it_counts(setup):
    """pruning.align = 8 through a whole stage: every kept FFN and conv block of structure.json is a multiple of 8,
    and the saved model has exactly the parameters Eq. (8) counts for that structure."""
    tmp_path = setup
    config = distill_yaml(tmp_path, "aligned", pruning={"target_sparsity": 0.5, "warmup_steps": 4,
                                                        "lr_log_alpha": 0.2, "lr_lambda": 0.2, "align": 8})
    out = prune(config)
    structure = PrunedStructure.load(out.parent / "structure.json")
    units = [u for f1, f2 in structure.ffn for u in (f1, f2)] + list(structure.conv)
    assert all(u % 8 == 0 for u in units) and any(0 < u < 256 for u in units), units
    assert sum(p.numel() for p in load_model(out).encoder.parameters()) == structure_params(structure)
