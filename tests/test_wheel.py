"""svlib installed as a wheel, away from the checkout: it finds its configs and reference numbers in the package,
runs `svlib params` and `svlib score` from another folder, and writes only where it is told (or to the per-user
workspace), never into its installed tree."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import soundfile as sf
import torch

from svlib.model import SpeakerModel

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_lists_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "svlib").rglob("__init__.py")}
    assert on_disk <= set(packages), f"pyproject.toml misses packages {sorted(on_disk - set(packages))}"


def _run(cmd, **kw):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_from_another_folder(tmp_path):
    # 1. build the wheel from a copy of the sources (the checkout gets no build/ or egg-info)
    src = tmp_path / "src"
    for name in ("svlib", "configs", "results"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          src])
    wheel = next((tmp_path / "dist").glob("svlib-*.whl"))
    # 2. a fresh venv whose dependencies come from this one (torch is not installed twice)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    site = next(venv.glob("lib/python*/site-packages"))
    here = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "deps.pth").write_text(f"{here}\n")  # appended after the venv's own site-packages
    _run([venv / "bin" / "pip", "install", "--no-deps", "-q", wheel])
    # 3. run it elsewhere, with a HOME of its own and no svlib variable set
    work, user = tmp_path / "elsewhere", tmp_path / "user"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVLIB_")} | {"HOME": str(user)}
    env.pop("XDG_DATA_HOME", None)
    python, svlib = venv / "bin" / "python", venv / "bin" / "svlib"
    where = _run([python, "-c", "import svlib, svlib.core.paths as p; print(svlib.__file__); "
                  "print(p.config_root()); print(p.reference_csv()); print(p.checkout_root())"], cwd=work, env=env)
    package_file, configs, reference, checkout = where.split()
    installed = Path(package_file).parent
    assert installed.is_relative_to(venv) and checkout == "None"
    assert Path(configs).is_relative_to(installed) and (Path(configs) / "paper" / "reproduce" / "table1.sh").is_file()
    assert (Path(configs) / "demo" / "s1_freeze.yaml").is_file() and Path(reference).is_file()
    before = sorted(p for p in installed.rglob("*") if "__pycache__" not in p.parts)

    params = _run([svlib, "params", "--json"], cwd=work, env=env)
    assert '"encoder_params": 580492096' in params

    torch.manual_seed(0)
    SpeakerModel.build("tiny", head="adapter_mfa").save(work / "model")
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(4):
        path = work / f"u{i}.wav"
        sf.write(path, (0.1 * torch.randn(16_000, generator=g)).numpy(), 16_000)
        lines.append(f"s{i // 2}-u{i} {path}\n")
    (work / "wav.scp").write_text("".join(lines))
    (work / "trials").write_text("s0-u0 s0-u1 target\ns0-u0 s1-u2 nontarget\ns1-u2 s1-u3 target\n")
    out = _run([svlib, "score", "--model", "model", "--wav-scp", "wav.scp", "--trials", "trials", "--json",
                "--no-progress"], cwd=work, env=env)
    assert '"eer_percent"' in out
    records = list((user / ".local" / "share" / "svlib" / "records").rglob("*.json"))
    assert len(records) == 1, "svlib score records its run in the per-user store"
    after = sorted(p for p in installed.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "nothing may be written into the installed package"
