"""The rehearsal: every command of the reproduction page, run as written on synthetic corpora and a random checkpoint
with the released structure, under torchrun with 2 processes (svlib.book.rehearse)."""

import json
import re
import sys
from pathlib import Path

import pytest

from svlib.analysis.tables import book_tables
from svlib.book.rehearsal_exec import already_ran, drop_finished_checkpoints, rewrite
from svlib.book.rehearse import (
    SCRIPTS,
    last_attempts,
    rehearse,
    reproduce_dir,
    shrink_overrides,
    summary,
    summary_markdown,
)

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


def test_a_resumed_rehearsal_skips_what_succeeded_and_reruns_the_rest(tmp_path, monkeypatch):
    """`svlib rehearse --resume`: the logged successes are not run again, stages get --reuse (a half-written stage
    starts afresh), and the record spans both parts."""
    settings = {"python": "/py", "nproc": 2, "shrink": shrink_overrides(2), "resume": True}
    cmd, _ = rewrite(["torchrun", "--nproc_per_node", "8", "-m", "svlib", "train", "--config", "c.yaml"], settings)
    assert cmd[-1] == "--reuse"
    assert "--reuse" not in rewrite(["svlib", "score", "--model", "m"], settings)[0]
    work = tmp_path / "rehearsal"
    scripts = work / "configs" / "paper" / "reproduce"
    scripts.mkdir(parents=True)
    for name in SCRIPTS:
        (scripts / f"{name}.sh").write_text("")
    (scripts / "data.sh").write_text("svlib --help > /dev/null\n")
    (scripts / "table1.sh").write_text("svlib params --json > /dev/null\n")
    first = {"section": "data", "command": "svlib --help", "ran": "", "subcommand": "--help", "exit_code": 0,
             "seconds": 3.0, "peak_rss_mib": 1.0, "checkpoints_dropped_mib": 0.0}
    failed = {**first, "section": "table1", "command": "svlib params --json", "exit_code": 1}
    (work / "commands.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(failed) + "\n")
    part = {"started": "2026-12-01 04:30 UTC", "scale": "tiny", "nproc": 2, "batch_size": 2, "setup_seconds": 10.0}
    (work / "parts.jsonl").write_text(json.dumps(part) + "\n")
    assert already_ran(str(work / "commands.jsonl"), "data", "svlib --help")
    assert not already_ran(str(work / "commands.jsonl"), "table1", "svlib params --json")
    with pytest.raises(ValueError, match="resume it with those"):
        rehearse(work, scale="full", nproc=2, resume=True)
    result = rehearse(work, scale="tiny", nproc=2, resume=True)
    assert [(c["section"], c["exit_code"]) for c in result.commands] == [("data", 0), ("table1", 1), ("table1", 0)]
    assert result.ok and [r["failed"] for r in summary(result.to_dict())] == [0, 0]  # the rerun is what counts
    assert "1 failed attempt(s) run again" in summary_markdown(result.to_dict())
    assert len(result.parts) == 2 and result.started == "2026-12-01 04:30 UTC" and result.setup_seconds == 10.0
    assert result.seconds == pytest.approx(10.0 + result.parts[1]["setup_seconds"] + 3.0 + 3.0
                                           + result.commands[-1]["seconds"], abs=0.2)
    with pytest.raises(FileNotFoundError, match="no rehearsal to resume"):
        rehearse(tmp_path / "empty", resume=True)


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
    them, except `svlib book run` (the chapters, which the rehearsal does not run) and `svlib rehearse` itself."""
    page = (BOOK / "reproduce.md").read_text()
    included = re.findall(r"```\{literalinclude\} \.\./configs/paper/reproduce/(\w+)\.sh", page)
    assert included == list(SCRIPTS)
    assert all((reproduce_dir() / f"{name}.sh").is_file() for name in SCRIPTS)
    blocks = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if re.match(r"\s*(svlib|torchrun)\b", line)]
    assert commands and all(c.startswith(("svlib book run", "svlib rehearse")) for c in commands), commands


def test_the_page_shows_the_summary_of_each_stored_rehearsal_record():
    """The Rehearsal section's tables are `svlib rehearse --summary` of the records in bench/records/, and those
    records ran every command of the page without a failure."""
    page = (BOOK / "reproduce.md").read_text()
    markers = re.findall(r"<!-- rehearsal: (\S+) -->", page)
    assert markers == ["bench/records/rehearsal-tiny-cpu.json", "bench/records/rehearsal-full-cpu.json"]
    for path in markers:
        record = json.loads((BOOK.parent / path).read_text())
        shown = page.split(f"<!-- rehearsal: {path} -->", 1)[1].lstrip()
        assert shown.startswith(summary_markdown(record) + "\n"), f"rerun: svlib rehearse --summary {path}"
        last = last_attempts(record["commands"])
        assert all(c["exit_code"] == 0 for c in last), path
        _assert_every_command_of_the_page([c["command"] for c in last])


def _assert_every_command_of_the_page(ran: list[str]) -> None:
    """The commands a rehearsal ran are those the command files give today (a stale record fails here)."""
    assert sum(c.startswith("torchrun") and " train " in c for c in ran) == 3 + 16 + 1 + 4 + 3
    assert sum(c.startswith("torchrun") and " prune " in c for c in ran) == 2
    assert sum(" score " in f" {c} " for c in ran) == 6 + 16 + 2 + 4 + 2  # Table 1, Table 2's blocks, Table 3
    assert ran[-1] == "svlib book tables --ours"


def test_a_summary_names_each_files_slowest_command_and_the_largest_process():
    record = {"scale": "full", "nproc": 1, "seconds": 100.0, "started": "2026-12-01 04:33 UTC",
              "machine": {"cpus": 2, "gpu": None, "torch": "2.x"},
              "commands": [
                  {"section": "table1", "command": "torchrun --nproc_per_node 8 -m svlib train --config "
                   "configs/paper/s2_joint.yaml", "exit_code": 0, "seconds": 30.4, "peak_rss_mib": 2048.0},
                  {"section": "table1", "command": "svlib score --model /w/exp/s2_joint/model --trials /d/Vox1-H",
                   "exit_code": 0, "seconds": 40.6, "peak_rss_mib": 1024.0},
                  {"section": "table2", "command": "svlib train --config configs/paper/s3_lmft.yaml -o "
                   "init_from=/w/x -o exp_dir=/w/exp/paper/table2/mfa_lmft", "exit_code": 1, "seconds": 5.0,
                   "peak_rss_mib": 512.0}]}
    rows = summary(record)
    assert [r["section"] for r in rows] == ["table1", "table2"]
    assert rows[0] == {"section": "table1", "commands": 2, "failed": 0, "seconds": 71, "peak_gib": 2.0,
                       "slowest": "score s2_joint Vox1-H, 41 s"}
    assert rows[1]["failed"] == 1 and rows[1]["slowest"] == "train table2/mfa_lmft, 5 s"
    table = summary_markdown(record)
    assert "| all | 3 | 1 | 76 | 2.0 | |" in table and "2 CPU cores" in table and "2026-12-01" in table


@pytest.mark.slow
def test_tiny_rehearsal_runs_every_command_under_torchrun(tmp_path):
    result = rehearse(tmp_path / "rehearsal", scale="tiny", nproc=2, timeout=3600)
    failed = [c for c in result.commands if c["exit_code"] != 0]
    assert result.ok, (failed, (Path(result.workdir) / "output.log").read_text()[-5000:])
    assert [s for s in SCRIPTS if any(c["section"] == s for c in result.commands)] == list(SCRIPTS)
    _assert_every_command_of_the_page([c["command"] for c in result.commands])
    assert all("--nproc_per_node 2" in c["ran"] for c in result.commands if c["command"].startswith("torchrun"))
    # the records landed in the rehearsal's store under the paper profile, in all three tables
    tables = book_tables(Path(result.workdir) / "results")
    for name, table in tables.items():
        ours = table[table["ours"].notna() & table["profile"].eq("paper")]
        assert len(ours), f"{name}: no number of the rehearsal's runs"
    t1 = tables["Table 1"]
    assert {"Vox1-O", "Vox1-E", "Vox1-H", "CN-Celeb"} <= set(t1[t1["ours"].notna()]["test_set"])
    print(json.dumps({"seconds": result.seconds, "commands": len(result.commands)}), file=sys.stderr)


def test_a_rehearsal_without_the_disk_it_needs_stops_before_any_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 60 * 10**9))
    with pytest.raises(ValueError, match="needs about 75 GB"):
        rehearse(tmp_path / "full", scale="full", nproc=1)
    assert not (tmp_path / "full").exists()
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "model.bin").write_bytes(b"x" * 1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 75 * 10**9 - 500))
    from svlib.book.rehearse import check_disk

    check_disk(tmp_path / "held", "full", resume=True)  # what the folder holds counts
    with pytest.raises(ValueError, match="needs about 75 GB"):
        check_disk(tmp_path / "new", "full")
