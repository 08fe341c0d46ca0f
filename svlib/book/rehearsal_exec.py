"""Run one command of a rehearsal (:mod:`svlib.book.rehearse`) as written on the reproduction page, shrunk, and log it.

The rehearsal's driver script defines the shell functions ``svlib`` and ``torchrun`` to call this file with the
command exactly as the page writes it (``torchrun --nproc_per_node 8 -m svlib train --config …``). It

1. sets the number of processes to the rehearsal's (``--nproc_per_node N``, with ``--standalone`` so concurrent
   runs do not share a port) and runs ``svlib`` through the rehearsal's Python;
2. appends the shrink-only overrides of that subcommand (fewer epochs, smaller batches, shorter crops, …);
3. with ``drop_checkpoints`` set (the full-size rehearsal), deletes the ``checkpoints/`` folder of every finished
   stage under ``$SVLIB_HOME/exp`` once a ``train`` or ``prune`` command succeeds: a rehearsal never continues a stage from them, and
   the full-size resume checkpoints (weights and Adam moments, 6.6 GB a stage) would otherwise fill ~90 GB;
4. appends one JSON line to the log: section, the command as written, the command as run, exit code, seconds,
   peak resident memory (of the largest process of the command) and the checkpoint MiB dropped, and exits with the
   command's exit code.

With ``resume`` set (``svlib rehearse --resume``), a command the log already records as successful in the same
section is not run again (the page's commands are unique within a section; its outputs are on disk), and ``train``
and ``prune`` get ``--reuse``, so a stage that an interrupted run left half-written starts afresh.

It imports only the standard library (it is started by path, once per command, so it must start fast). The
settings come from the environment variable ``SVLIB_REHEARSAL`` (JSON: ``python``, ``nproc``, ``shrink``, ``log``)
(optional: ``drop_checkpoints``, ``resume``) and the section from ``SVLIB_REHEARSAL_SECTION``.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _launcher_options(options: list[str], nproc: int) -> list[str]:
    """torchrun's own options with the number of processes set to ``nproc`` and a free rendezvous port."""
    out, i = ["--standalone"], 0
    while i < len(options):
        opt = options[i]
        if opt in ("--nproc_per_node", "--nproc-per-node"):
            out += [opt, str(nproc)]
            i += 2
            continue
        if opt.startswith(("--nproc_per_node=", "--nproc-per-node=")):
            out.append(f"{opt.split('=')[0]}={nproc}")
        elif opt != "--standalone":
            out.append(opt)
        i += 1
    return out


def rewrite(argv: list[str], settings: dict) -> tuple[list[str], str]:
    """``(command to run, svlib subcommand)`` for a page command ``argv`` (``svlib …`` or ``torchrun … -m svlib …``)."""
    python = settings["python"]
    if argv[0] == "torchrun":
        if "-m" not in argv or argv[argv.index("-m") + 1] != "svlib":
            raise SystemExit(f"rehearsal: expected 'torchrun ... -m svlib ...', got {shlex.join(argv)}")
        m = argv.index("-m")
        options, args = argv[1:m], argv[m + 2:]
        head = [python, "-m", "torch.distributed.run", *_launcher_options(options, settings["nproc"]), "-m", "svlib"]
    elif argv[0] == "svlib":
        head, args = [python, "-m", "svlib"], argv[1:]
    else:
        raise SystemExit(f"rehearsal: cannot run {argv[0]!r} (expected svlib or torchrun)")
    sub = args[0] if args else ""
    again = ["--reuse"] if settings.get("resume") and sub in ("train", "prune") else []
    return [*head, *args, *settings["shrink"].get(sub, []), *again], sub


def already_ran(log: str, section: str, command: str) -> bool:
    """Whether the log records ``command`` of ``section`` with exit code 0."""
    if not os.path.isfile(log):
        return False
    with open(log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return any(r["section"] == section and r["command"] == command and r["exit_code"] == 0 for r in records)


def drop_finished_checkpoints(exp_root: str) -> float:
    """Delete ``<stage>/checkpoints`` of every stage under ``exp_root`` that wrote ``done.json``; MiB freed."""
    freed = 0
    for done in sorted(Path(exp_root).rglob("done.json")):
        folder = done.parent / "checkpoints"
        if folder.is_dir():
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder)
    return round(freed / 2**20, 1)


def main(argv: list[str]) -> int:
    settings = json.loads(os.environ["SVLIB_REHEARSAL"])
    section = os.environ.get("SVLIB_REHEARSAL_SECTION", "")
    if settings.get("resume") and already_ran(settings["log"], section, shlex.join(argv)):
        print(f"rehearsal: {shlex.join(argv)} ran before; not run again", file=sys.stderr)
        return 0
    command, sub = rewrite(argv, settings)
    start = time.monotonic()
    code = subprocess.call(command)
    seconds = time.monotonic() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest waited-for process
    dropped = 0.0
    if code == 0 and sub in ("train", "prune") and settings.get("drop_checkpoints"):
        dropped = drop_finished_checkpoints(os.path.join(os.environ["SVLIB_HOME"], "exp"))
    record = {
        "section": section,
        "command": shlex.join(argv),
        "ran": shlex.join(command),
        "subcommand": sub,
        "exit_code": code,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "checkpoints_dropped_mib": dropped,
    }
    with open(settings["log"], "a") as f:
        f.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
