"""A rehearsal of the full-scale reproduction: every command of the book page "Reproducing the paper at full scale",
run as written on corpus trees and a checkpoint directory shaped like the real ones, under ``torchrun``, shrunk.

The commands live in one place, ``configs/paper/reproduce/*.sh`` (:data:`SCRIPTS`, in order): the page shows those
files verbatim (``{literalinclude}``) and :func:`rehearse` runs them, so the two cannot drift apart. A rehearsal:

1. builds the corpora in their usual layouts (those :mod:`svlib.data.prepare` reads) from the demo corpus's real
   speech (:func:`svlib.data.demo.build_demo_corpus`; its training speakers make the training sets, its test speakers
   the evaluation sets): VoxCeleb1 dev + test with the Vox1-O/E/H trial lists, VoxCeleb2 dev (converted ``.wav``),
   VoxBlink2, CN-Celeb1 (speakers, dev list, evaluation set, trials, enrollment map), CN-Celeb2, MUSAN (noise, music,
   speech) and RIRS_NOISES (simulated small and medium rooms);
2. writes a checkpoint directory like ``facebook/w2v-bert-2.0`` (``config.json`` + ``model.safetensors``, random
   weights, ``masked_spec_embed`` included as in the release): the released config at ``--scale full``, ``tiny``
   (the same structure, CPU sizes) at ``--scale tiny``;
3. copies ``configs/paper`` into its work folder, makes that folder the workspace (``SVLIB_HOME``: experiments,
   prepared data and results land there, never in the checkout) and runs the scripts in one ``bash -e`` (so what
   they export carries over), with ``svlib`` and ``torchrun`` going through
   :mod:`svlib.book.rehearsal_exec`: the process count becomes ``nproc``, shrink-only overrides are appended (one epoch,
   small batches, 1–1.5 s crops, the target sparsity reached after 2 steps, 200 QMF calibration trials), and each
   command is logged with its exit code, seconds and peak memory.

``svlib rehearse --scale tiny|full [--nproc N] [--json]`` is the command; ``make test`` runs the tiny one with 2
processes (``tests/test_rehearse.py``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import Wav2Vec2BertModel

from svlib.data.augment import coloured_noise, simulate_rirs
from svlib.data.demo import build_demo_corpus
from svlib.data.lists import read_data_dir
from svlib.model.encoder import encoder_config
from svlib.core.paths import config_root

logger = logging.getLogger(__name__)

__all__ = ["DISK_GB", "SCRIPTS", "SCALES", "Rehearsal", "build_corpora", "check_disk", "command_label",
           "last_attempts", "rehearse", "shrink_overrides", "summary", "summary_markdown", "write_checkpoint"]

SCRIPTS = ("data", "table1", "table2", "table3", "tables")
"""The command files ``configs/paper/reproduce/<name>.sh``, in the order the page gives (and a user runs) them."""

DISK_GB = {"tiny": 2, "full": 75}
"""Free disk (GB) a rehearsal needs in its work folder's file system: the full-size one keeps every trained model
(2.3 GB each; the work folder ended at 66 GB on 2026-12-01) plus one stage's epoch-end checkpoint (6.6 GB) until
the stage is done. On ``--resume`` what the work folder already holds counts as available."""

SCALES = {"tiny": "tiny", "full": "w2v-bert-2.0"}
"""``--scale`` → the encoder config of the rehearsal's checkpoint (both have the released structure)."""

SR = 16_000


def reproduce_dir() -> Path:
    """The folder of the page's command files."""
    return config_root() / "paper" / "reproduce"


def shrink_overrides(batch_size: int = 2) -> dict[str, list[str]]:
    """Arguments appended to each command by its ``svlib`` subcommand: only what makes a run smaller."""
    stage = ["-o", "epochs=1", "-o", f"batch_size={batch_size}", "-o", "min_frames=100", "-o", "max_frames=150",
             "-o", "num_workers=1", "-o", "checkpoint_every=0"]
    return {"train": stage, "prune": [*stage, "-o", "pruning.warmup_steps=2"],
            "score": ["--calibration-trials", "200", "--no-progress"]}


# ----------------------------------------------------------------------------------------------------------------
# Corpora and checkpoint
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Speakers:
    """The demo corpus's utterances by speaker: ``{speaker: [wav paths]}`` for its training and test splits."""

    train: dict[str, list[str]]
    test: dict[str, list[str]]

    @classmethod
    def from_demo(cls, data_root: str | os.PathLike | None) -> "_Speakers":
        corpus = build_demo_corpus(data_root, progress=False)
        out = []
        for split in (corpus.train_dir, corpus.test_dir):
            data = read_data_dir(split)
            by_speaker: dict[str, list[str]] = {}
            for utt in sorted(data.wav_scp):
                by_speaker.setdefault(data.utt2spk[utt], []).append(data.wav_scp[utt])
            out.append(by_speaker)
        return cls(*out)

    def take(self, split: str, n_speakers: int, n_utts: int, skip: int = 0) -> list[list[str]]:
        """``n_speakers`` speakers (after the first ``skip``) of ``split``, ``n_utts`` clips each (repeated if short)."""
        speakers = sorted(getattr(self, split))[skip:skip + n_speakers]
        if len(speakers) < n_speakers:
            raise ValueError(f"the demo corpus's {split} split has too few speakers for the rehearsal")
        clips = [getattr(self, split)[s] for s in speakers]
        return [[c[i % len(c)] for i in range(n_utts)] for c in clips]


def _copy(src: str, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)


def _vgg_trials(utts: list[tuple[str, str]]) -> str:
    """Every pair of ``(speaker, relative path)`` utterances as VGG trial lines ``1|0 path path``."""
    return "".join(f"{int(a[0] == b[0])} {a[1]} {b[1]}\n" for i, a in enumerate(utts) for b in utts[i + 1:])


def build_corpora(root: str | os.PathLike, utts_per_speaker: int = 4, data_root: str | os.PathLike | None = None,
                  seed: int = 0) -> Path:
    """The corpus trees of step 1 (module docstring) under ``root``; returns ``root``.

    ``utts_per_speaker`` sets the training sets' size (VoxCeleb2: 6 speakers, VoxBlink2: 3, CN-Celeb1: 4, CN-Celeb2: 3).
    """
    root = Path(root)
    spk = _Speakers.from_demo(data_root)
    # VoxCeleb2 dev (converted to .wav) and VoxBlink2: training speakers
    for i, clips in enumerate(spk.take("train", 6, utts_per_speaker), start=1):
        for j, clip in enumerate(clips, start=1):
            _copy(clip, root / "voxceleb2" / "dev" / "wav" / f"id{i:05d}" / f"vid{j % 2}" / f"{j:05d}.wav")
    for i, clips in enumerate(spk.take("train", 3, utts_per_speaker, skip=6), start=1):
        for j, clip in enumerate(clips, start=1):
            _copy(clip, root / "voxblink2" / f"vb{i:06d}" / f"video{j % 2}" / f"{j:03d}.wav")
    # VoxCeleb1 dev + test: test speakers; Vox1-O over the test part, Vox1-E and Vox1-H over both
    vox1, test_part = [], []
    for i, clips in enumerate(spk.take("test", 6, 3), start=1):
        split = "test" if i <= 4 else "dev"
        for j, clip in enumerate(clips, start=1):
            rel = f"id{10000 + i}/yt{j % 2}/{j:05d}.wav"
            _copy(clip, root / "voxceleb1" / split / "wav" / rel)
            vox1.append((f"id{10000 + i}", rel))
            if split == "test":
                test_part.append(vox1[-1])
    (root / "voxceleb1" / "veri_test2.txt").write_text(_vgg_trials(test_part))
    (root / "voxceleb1" / "list_test_all2.txt").write_text(_vgg_trials(vox1))
    (root / "voxceleb1" / "list_test_hard2.txt").write_text(_vgg_trials(vox1[::2]))
    # CN-Celeb1: 4 training speakers (dev.lst) and 3 evaluation speakers (1 enrollment + 2 test clips each)
    cn1 = root / "CN-Celeb1"
    train_ids = []
    for i, clips in enumerate(spk.take("train", 4, utts_per_speaker, skip=9)):
        train_ids.append(f"id{i:05d}")
        for j, clip in enumerate(clips, start=1):
            _copy(clip, cn1 / "data" / train_ids[-1] / f"speech-01-{j:03d}.wav")
    (cn1 / "dev").mkdir(parents=True, exist_ok=True)
    (cn1 / "dev" / "dev.lst").write_text("".join(f"{s}\n" for s in train_ids))
    enroll, tests = [], []
    for i, clips in enumerate(spk.take("test", 3, 3, skip=6), start=800):
        _copy(clips[0], cn1 / "data" / f"id{i:05d}" / "interview-01-001.wav")
        enroll.append(f"id{i:05d}-enroll id{i:05d}/interview-01-001.wav\n")
        for j, clip in enumerate(clips[1:], start=1):
            tests.append(f"id{i:05d}-vlog-01-{j:03d}")
            _copy(clip, cn1 / "eval" / "test" / f"{tests[-1]}.wav")
    lists = cn1 / "eval" / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "enroll.map").write_text("".join(enroll))
    (lists / "trials.lst").write_text("".join(
        f"{e.split()[0]} test/{t}.wav {int(e[:7] == t[:7])}\n" for e in enroll for t in tests))
    # CN-Celeb2: 3 more training speakers
    for i, clips in enumerate(spk.take("train", 3, utts_per_speaker, skip=13), start=10001):
        for j, clip in enumerate(clips, start=1):
            _copy(clip, root / "CN-Celeb2" / "data" / f"id{i}" / f"vlog-01-{j:03d}.wav")
    # MUSAN: coloured noise, a synthetic chord (music) and speech of the remaining training speakers
    gen = torch.Generator().manual_seed(seed)
    for k, exponent in enumerate((0.0, 1.0)):
        path = root / "musan" / "noise" / "free-sound" / f"noise-free-sound-{k:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * coloured_noise(4 * SR, exponent, generator=gen)).numpy(), SR)
    t = np.arange(4 * SR) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 10
    (root / "musan" / "music" / "fma").mkdir(parents=True, exist_ok=True)
    sf.write(root / "musan" / "music" / "fma" / "music-fma-0000.wav", chord.astype(np.float32), SR)
    for i, clips in enumerate(spk.take("train", 2, 1, skip=16)):
        _copy(clips[0], root / "musan" / "speech" / "librivox" / f"speech-librivox-{i:04d}.wav")
    # RIRS_NOISES: simulated small and medium rooms (Kaldi's layout)
    for kind in ("small", "medium"):
        for i, rir in enumerate(simulate_rirs(2, kind, seed=seed), start=1):
            path = root / "RIRS_NOISES" / "simulated_rirs" / f"{kind}room" / "Room001" / f"Room001-{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rir.numpy().astype(np.float32), SR)
    return root


def write_checkpoint(directory: str | os.PathLike, scale: str = "tiny", seed: int = 0) -> Path:
    """A ``facebook/w2v-bert-2.0``-like checkpoint directory with random weights (``save_pretrained``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    torch.manual_seed(seed)
    model = Wav2Vec2BertModel(encoder_config(SCALES[scale]))
    model.save_pretrained(directory)
    return Path(directory)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Rehearsal:
    """What a rehearsal ran: one record per command (see :mod:`svlib.book.rehearsal_exec`) and the outcome.

    ``seconds`` is the time of building the corpora and checkpoint plus that of every logged command (over all
    ``parts`` of a resumed rehearsal); ``started`` is when the first part started.
    """

    scale: str
    nproc: int
    workdir: str
    exit_code: int
    seconds: float
    commands: list[dict] = field(default_factory=list)
    setup_seconds: float = 0.0
    started: str = ""
    machine: dict = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The driver finished and the last run of every command succeeded (an attempt that failed, e.g. on a full
        disk, and succeeded when the rehearsal was resumed counts as a success; :func:`last_attempts`)."""
        last = last_attempts(self.commands)
        return self.exit_code == 0 and bool(last) and all(c["exit_code"] == 0 for c in last)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _driver(scripts: Path) -> str:
    """The bash script that runs the page's command files in order, ``svlib`` and ``torchrun`` wrapped."""
    run = shlex.quote(str(Path(__file__).with_name("rehearsal_exec.py")))
    lines = ["set -eo pipefail",
             f'svlib() {{ "$SVLIB_REHEARSAL_PYTHON" {run} svlib "$@"; }}',
             f'torchrun() {{ "$SVLIB_REHEARSAL_PYTHON" {run} torchrun "$@"; }}']
    for name in SCRIPTS:
        lines += [f"export SVLIB_REHEARSAL_SECTION={name}", f"source {shlex.quote(str(scripts / f'{name}.sh'))}"]
    return "\n".join(lines) + "\n"


def rehearse(workdir: str | os.PathLike, scale: str = "tiny", nproc: int = 2, batch_size: int = 2,
             data_root: str | os.PathLike | None = None, timeout: float | None = None,
             resume: bool = False) -> Rehearsal:
    """Run the rehearsal in ``workdir`` (created; an earlier rehearsal there is replaced) and return its record.

    With ``resume``, an interrupted rehearsal in ``workdir`` (same scale and processes) continues: its corpora,
    checkpoint, configs and log are kept, the commands it logged as successful are not run again, and the record
    covers every part (``parts``: when each started, with what settings, and its setup seconds).

    Args:
        workdir: the rehearsal's folder: corpora, checkpoint, configs copy, experiments, results, logs.
        scale: ``tiny`` or ``full`` (:data:`SCALES`).
        nproc: processes per ``torchrun`` (gloo on CPU, NCCL on GPUs).
        batch_size: utterances per process and step (the corpora grow so that every rank gets a batch).
        data_root: where the demo corpus is (or is built).
        timeout: seconds before the run is stopped (``None``: no limit).
        resume: continue the rehearsal already in ``workdir`` (above).
    """
    start, started = time.monotonic(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    work = Path(workdir).resolve()
    log, parts_log = work / "commands.jsonl", work / "parts.jsonl"
    if resume:
        parts = [json.loads(line) for line in parts_log.read_text().splitlines()] if parts_log.is_file() else []
        if not parts:
            raise FileNotFoundError(f"{work}: no rehearsal to resume (no parts.jsonl); run without --resume")
        first = parts[0]
        if (first["scale"], first["nproc"], first["batch_size"]) != (scale, nproc, batch_size):
            raise ValueError(f"{work} holds a rehearsal of scale {first['scale']}, {first['nproc']} processes, batch "
                             f"{first['batch_size']}; resume it with those, not {scale}, {nproc}, {batch_size}")
    else:
        parts = []
    check_disk(work, scale, resume)
    if not resume:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        utts = max(2, -(-batch_size * nproc // 2))  # VoxCeleb2's 6 speakers: at least three batches per rank
        build_corpora(work / "corpora", utts_per_speaker=utts, data_root=data_root)
        write_checkpoint(work / "models" / "w2v-bert-2.0", scale)
        shutil.copytree(config_root() / "paper", work / "configs" / "paper")
    settings = {"python": sys.executable, "nproc": nproc, "shrink": shrink_overrides(batch_size), "log": str(log),
                "drop_checkpoints": scale == "full", "resume": resume}
    env = {**os.environ, "CORPORA": str(work / "corpora"), "W2V_BERT_2_0": str(work / "models" / "w2v-bert-2.0"),
           "SVLIB_HOME": str(work), "SVLIB_RESULTS": str(work / "results"), "SVLIB_REHEARSAL": json.dumps(settings),
           "SVLIB_REHEARSAL_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    if nproc > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    (work / "driver.sh").write_text(_driver(work / "configs" / "paper" / "reproduce"))
    setup = round(time.monotonic() - start, 1)
    part = {"started": started, "scale": scale, "nproc": nproc, "batch_size": batch_size, "setup_seconds": setup}
    with open(parts_log, "a") as f:
        f.write(json.dumps(part) + "\n")
    logger.info("rehearsal (%s scale, %d processes) in %s", scale, nproc, work)
    with open(work / "output.log", "a" if resume else "w") as out:
        try:
            code = subprocess.run(["bash", str(work / "driver.sh")], cwd=work, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = 124
    commands = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    parts.append(part)
    seconds = sum(p["setup_seconds"] for p in parts) + sum(c["seconds"] for c in commands)
    return Rehearsal(scale=scale, nproc=nproc, workdir=str(work), exit_code=code, seconds=round(seconds, 1),
                     commands=commands,
                     setup_seconds=parts[0]["setup_seconds"], started=parts[0]["started"], machine=_machine(load),
                     parts=parts)


def check_disk(work: Path, scale: str, resume: bool = False) -> None:
    """Raise before any work when the file system of ``work`` lacks :data:`DISK_GB` of free space (counting what an
    earlier rehearsal in ``work`` holds, which a new one replaces and a resumed one keeps)."""
    existing = work if work.exists() else next(p for p in work.parents if p.exists())
    held = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) if work.exists() else 0
    free = shutil.disk_usage(existing).free + held
    need = DISK_GB[scale] * 10**9
    if free < need:
        raise ValueError(f"a {scale}-scale rehearsal needs about {DISK_GB[scale]} GB of disk in {existing} "
                      f"({'what it holds and ' if held else ''}free space: {free / 10**9:.1f} GB); give --workdir on a "
                      "larger disk")


def _machine(load: float) -> dict:
    """Where the rehearsal ran: what its times and memory depend on (``load``: the 1-minute load average before it
    started, i.e. other work on the machine)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "load_before": round(load, 1)}


# ----------------------------------------------------------------------------------------------------------------
# The record, summarised for the reproduction page
# ----------------------------------------------------------------------------------------------------------------
def last_attempts(commands: list[dict]) -> list[dict]:
    """The last record of each ``(section, command)``, in the order of first appearance: a resumed rehearsal reruns
    a command whose earlier attempt failed, and that rerun is what counts."""
    last = {(c["section"], c["command"]): c for c in commands}  # later records replace earlier ones
    order = dict.fromkeys((c["section"], c["command"]) for c in commands)  # first appearance
    return [last[k] for k in order]


def summary(record: dict) -> list[dict]:
    """One row per command file (section) of a rehearsal's record (:meth:`Rehearsal.to_dict`, or its JSON), over the
    last attempt of each command (:func:`last_attempts`): the commands and how many failed, their seconds in total,
    the largest peak memory of one process, and the slowest command (its subcommand and seconds)."""
    rows = []
    for section in SCRIPTS:
        cmds = [c for c in last_attempts(record["commands"]) if c["section"] == section]
        if not cmds:
            continue
        slowest = max(cmds, key=lambda c: c["seconds"])
        rows.append({"section": section, "commands": len(cmds),
                     "failed": sum(c["exit_code"] != 0 for c in cmds),
                     "seconds": round(sum(c["seconds"] for c in cmds)),
                     "peak_gib": round(max(c["peak_rss_mib"] for c in cmds) / 1024, 1),
                     "slowest": f"{command_label(slowest['command'])}, {slowest['seconds']:.0f} s"})
    return rows


def command_label(command: str) -> str:
    """A short name for a page command: ``train s3_lmft``, ``train table2/wavg_ecapa_joint`` (the ``exp_dir`` it
    overrides), ``prune prune/p1_prune``, ``score s2_joint Vox1-O``, ``data prepare``."""
    words = shlex.split(command)
    words = words[words.index("svlib") + 1:] if "svlib" in words else words
    sub, opts = words[0], dict(zip(words, words[1:]))
    if "--config" in opts:
        config = Path(opts["--config"])
        name = config.stem if config.parent.name == "paper" else f"{config.parent.name}/{config.stem}"
        for key, value in zip(words, words[1:]):
            if key == "-o" and value.startswith("exp_dir="):
                name = f"{Path(value).parent.name}/{Path(value).name}"
        return f"{sub} {name}"
    if "--model" in opts:
        return f"{sub} {Path(opts['--model']).parent.name} {Path(opts.get('--trials', '')).name}".rstrip()
    return " ".join(words[:2])


def summary_markdown(record: dict) -> str:
    """:func:`summary` as the Markdown table the page "Reproducing the paper at full scale" shows, with a total row
    and a caption line naming the scale, processes, machine and date of the record. "peak GiB" is the largest
    resident memory of one process of the file's commands."""
    rows = summary(record)
    lines = ["| file | commands | failed | seconds | peak GiB | slowest command |",
             "|---|---:|---:|---:|---:|---|"]
    lines += [f"| `{r['section']}.sh` | {r['commands']} | {r['failed']} | {r['seconds']:,} | {r['peak_gib']} | "
              f"{r['slowest']} |" for r in rows]
    lines.append(f"| all | {sum(r['commands'] for r in rows)} | {sum(r['failed'] for r in rows)} | "
                 f"{sum(r['seconds'] for r in rows):,} | {max(r['peak_gib'] for r in rows)} | |")
    m = record.get("machine", {})
    where = m.get("gpu") or f"{m.get('cpus', '?')} CPU cores"
    parts = len(record.get("parts") or [None])
    if "load_before" in m:
        where += f" (load average {m['load_before']} before {'its last part' if parts > 1 else 'it'} started)"
    lines.append("")
    retried = len(record["commands"]) - len(last_attempts(record["commands"]))
    processes = f"{record['nproc']} process{'es' if record['nproc'] > 1 else ''}"
    lines.append(f"*{record['scale']} scale, {processes} per torchrun, {where}, torch "
                 f"{m.get('torch', '?')}, started {record.get('started') or '?'}"
                 f"{f', run in {parts} parts (`--resume`)' if parts > 1 else ''}"
                 f"{f', {retried} failed attempt(s) run again' if retried else ''}; {record['seconds']:,.0f} s in all: "
                 f"{record.get('setup_seconds', 0):,.0f} s building the corpora and checkpoint, then the commands.*")
    return "\n".join(lines)
