"""The rehearsal: every command of the reproduction page, run as written on synthetic corpora and a random checkpoint
with the released structure, under torchrun with 2 processes (svlib.book.rehearse)."""

import json
import re
import sys
from pathlib import Path

import pytest

from svlib.analysis.tables import book_tables
from svlib.book.rehearsal_exec import drop_finished_checkpoints, rewrite
from svlib.book.rehearse import SCRIPTS, reproduce_dir, rehearse, shrink_overrides

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_a_command_is_run_with_the_rehearsals_processes_and_shrunk():
    settings = {"python": "/py", "nproc": 2, "shrink": shrink_overrides(2)}
    cmd, sub = rewrite(["torchrun", "--nproc_per_node", "8", "-m", "svlib", "train", "--config", "c.yaml"], settings)
    assert sub == "train"
    assert cmd[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert cmd[6:11] == ["-m", "svlib", "train", "--config", "c.yaml"] and "batch_size=2" in cmd
    cmd, sub = rewrite(["svlib", "score", "--model", "m", "--calibration-trials", "10000"], settings)
    assert sub == "score" and cmd[:3] == ["/py", "-m", "svlib"]
    assert cmd[-3:] == ["--calibration-trials", "200", "--no-progress"]  # argparse: the last value wins
    cmd, _ = rewrite(["svlib", "data", "prepare", "voxceleb2"], settings)
    assert cmd == ["/py", "-m", "svlib", "data", "prepare", "voxceleb2"]
    with pytest.raises(SystemExit, match="expected svlib or torchrun"):
        rewrite(["python", "x.py"], settings)


def test_the_full_size_rehearsal_drops_only_finished_stages_checkpoints(tmp_path):
    finished, running = tmp_path / "exp" / "a" / "s1", tmp_path / "exp" / "b"
    for stage in (finished, running):
        (stage / "checkpoints").mkdir(parents=True)
        (stage / "checkpoints" / "step-00000003.pt").write_bytes(b"x" * 2**20)
        (stage / "model").mkdir()
    (finished / "done.json").write_text("{}")
    assert drop_finished_checkpoints(str(tmp_path / "exp")) == 1.0
    assert not (finished / "checkpoints").exists() and (finished / "model").is_dir()
    assert (running / "checkpoints" / "step-00000003.pt").is_file()  # a stage without done.json keeps its own


def test_the_page_shows_the_rehearsed_command_files_and_no_other_commands():
    """book/reproduce.md includes each command file verbatim and runs no svlib/torchrun command of its own outside
    them, except `svlib book run` (the chapters, which the rehearsal does not run)."""
    page = (BOOK / "reproduce.md").read_text()
    included = re.findall(r"```\{literalinclude\} \.\./configs/paper/reproduce/(\w+)\.sh", page)
    assert included == list(SCRIPTS)
    assert all((reproduce_dir() / f"{name}.sh").is_file() for name in SCRIPTS)
    blocks = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if re.match(r"\s*(svlib|torchrun)\b", line)]
    assert commands and all(c.startswith("svlib book run") for c in commands), commands


@pytest.mark.slow
def test_tiny_rehearsal_runs_every_command_under_torchrun(tmp_path):
    result = rehearse(tmp_path / "rehearsal", scale="tiny", nproc=2, timeout=3600)
    failed = [c for c in result.commands if c["exit_code"] != 0]
    assert result.ok, (failed, (Path(result.workdir) / "output.log").read_text()[-5000:])
    assert [s for s in SCRIPTS if any(c["section"] == s for c in result.commands)] == list(SCRIPTS)
    ran = [c["command"] for c in result.commands]
    assert sum(c.startswith("torchrun") and " train " in c for c in ran) == 3 + 16 + 1 + 4 + 3
    assert sum(c.startswith("torchrun") and " prune " in c for c in ran) == 2
    assert all("--nproc_per_node 2" in c["ran"] for c in result.commands if c["command"].startswith("torchrun"))
    # the records landed in the rehearsal's store under the paper profile, in all three tables
    tables = book_tables(Path(result.workdir) / "results")
    for name, table in tables.items():
        ours = table[table["ours"].notna() & table["profile"].eq("paper")]
        assert len(ours), f"{name}: no number of the rehearsal's runs"
    t1 = tables["Table 1"]
    assert {"Vox1-O", "Vox1-E", "Vox1-H", "CN-Celeb"} <= set(t1[t1["ours"].notna()]["test_set"])
    print(json.dumps({"seconds": result.seconds, "commands": len(result.commands)}), file=sys.stderr)
