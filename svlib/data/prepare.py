"""Kaldi data directories for the real corpora, from their usual on-disk layouts (paths given by the user).

Layouts read (``<root>`` is what the user passes; the first matching candidate folder is used):

* **VoxCeleb1** — ``<root>/wav/<spk>/<video>/<nnnnn>.wav`` (or ``<root>/<spk>/...``); dev and test may be two
  roots. Utterance id ``id10270/x6uYqmx31kE/00001``.
* **VoxCeleb2-dev** — ``<root>/dev/aac/<spk>/<video>/<nnnnn>.m4a`` or the converted ``<root>/dev/wav/...`` (also
  ``<root>/aac``, ``<root>/wav``, ``<root>``). Utterance id ``id00012/21Uxsk56VDQ/00001``.
* **VoxBlink2** — ``<root>/<spk>/<video>/<clip>.wav`` (also ``<root>/wav/...``, ``<root>/audio/...``), an *assumed*
  layout: one folder per speaker, one per video, as after unpacking the release's audio archives; for other layouts
  pass the folder that holds the speaker folders. Utterance id ``<spk>/<video>/<clip>``.
* **CN-Celeb1** — ``<root>/data/<spk>/<genre>-<session>-<nnn>.flac`` (or .wav); train speakers from
  ``<root>/dev/dev.lst`` (else every speaker not enrolled in the evaluation); evaluation ``<root>/eval/test/*.flac``,
  ``eval/lists/trials.lst``, ``eval/lists/enroll.map``. Utterance ids ``id00000/singing-01-001``; test
  ``test/id00800-singing-01-001``.
* **CN-Celeb2** — ``<root>/data/<spk>/*.flac`` (or .wav). Utterance id ``id10001/interview-01-001``.

The speaker label is the first component of the id. Trial lists (Vox1-O/E/H in VGG format, CN-Celeb's) are read by
:mod:`svlib.data.lists`; :func:`prepare_dataset` writes everything under one output folder and checks that every
trial names an existing utterance.

svlib decodes audio with libsndfile, which does not read AAC: convert VoxCeleb2's ``.m4a`` files to ``.wav`` first
(the usual step, e.g. ``ffmpeg -i in.m4a -ar 16000 -ac 1 out.wav`` into ``<root>/dev/wav/<spk>/<video>/``) — the
utterance ids stay the same, so lists made from either tree agree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from svlib.data.lists import (
    DataDir,
    TrialList,
    check_trials,
    combine_data_dirs,
    read_cnceleb_trials,
    read_trials,
    utt_id_from_path,
    write_data_dir,
    write_enroll_map,
    write_trials,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "VOX1_TRIAL_LISTS",
    "CNCeleb1",
    "PreparedDataset",
    "add_durations",
    "prepare_cnceleb1",
    "prepare_cnceleb2",
    "prepare_dataset",
    "prepare_voxblink2",
    "prepare_voxceleb1",
    "prepare_voxceleb2",
    "scan_audio_tree",
    "scan_audio_tree_flat",
]

DATASETS = ("voxceleb1", "voxceleb2", "voxblink2", "cnceleb1", "cnceleb2")
"""Names accepted by :func:`prepare_dataset` (and ``svlib data prepare``)."""

VOX1_TRIAL_LISTS = {"Vox1-O": "veri_test2.txt", "Vox1-E": "list_test_all2.txt", "Vox1-H": "list_test_hard2.txt"}
"""The cleaned VoxCeleb1 trial lists the paper reports (VGG format; the user gives their location)."""

_VOX1_NAMES = {v: k for k, v in VOX1_TRIAL_LISTS.items()}


def _scan_dir(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def scan_audio_tree(
    audio_root: str | os.PathLike,
    depth: int = 3,
    extensions: Sequence[str] = (".wav",),
    id_prefix: str = "",
    speakers: Iterable[str] | None = None,
) -> DataDir:
    """List the audio files of a speaker tree as a :class:`DataDir`.

    ``depth=3`` reads ``<audio_root>/<spk>/<video>/<file>``; ``depth=2`` reads ``<audio_root>/<spk>/<file>``. The
    utterance id is ``id_prefix`` + the path relative to ``audio_root`` without extension; the speaker is its first
    folder. Only files whose extension is in ``extensions`` are listed; ``speakers`` restricts the speaker folders.

    Raises:
        FileNotFoundError: ``audio_root`` is not a folder, or it holds no matching file (the message shows the
            expected layout).
    """
    root = Path(audio_root)
    if depth not in (2, 3):
        raise ValueError(f"depth must be 2 (<spk>/<file>) or 3 (<spk>/<video>/<file>), got {depth}")
    layout = "<spk>/<video>/<file>" if depth == 3 else "<spk>/<file>"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found (expected the audio root of a {layout} tree)")
    exts = tuple(e.lower() for e in extensions)
    wanted = None if speakers is None else set(speakers)
    entries: list[tuple[str, str, str]] = []
    for spk in _scan_dir(root):
        if not spk.is_dir() or (wanted is not None and spk.name not in wanted):
            continue
        folders = [e for e in _scan_dir(Path(spk.path)) if e.is_dir()] if depth == 3 else [spk]
        for folder in folders:
            for f in _scan_dir(Path(folder.path)):
                if f.is_file() and os.path.splitext(f.name)[1].lower() in exts:
                    rel = os.path.relpath(f.path, root)
                    entries.append((id_prefix + utt_id_from_path(rel), spk.name, os.path.abspath(f.path)))
    if not entries:
        raise FileNotFoundError(
            f"{root}: no {'/'.join(exts)} files in a {layout} layout"
            + (f" for the {len(wanted)} requested speakers" if wanted is not None else "")
        )
    if wanted is not None:
        found = {spk for _, spk, _ in entries}
        if wanted - found:
            lacking = sorted(wanted - found)
            logger.warning("%s: %d requested speakers have no audio: %s", root, len(lacking), lacking[:5])
    data = DataDir.from_entries(entries, source=str(root))
    logger.info("%s: %d utterances of %d speakers", root, len(data), len(data.speakers))
    return data


def _first_dir(candidates: Sequence[Path], what: str, layout: str) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"{what}: none of {[str(c) for c in candidates]} is a folder (expected the layout {layout})"
    )


def add_durations(data: DataDir) -> DataDir:
    """``data`` with ``utt2dur`` filled from the audio headers (soundfile; not for ``.m4a``).

    Raises:
        ValueError: a file whose header cannot be read (the message names it).
    """
    durations = {}
    for utt, path in data.wav_scp.items():
        try:
            info = sf.info(path)
        except (sf.SoundFileError, RuntimeError) as err:
            raise ValueError(f"{path}: cannot read the audio header of {utt!r} ({err}); expected WAV/FLAC") from err
        durations[utt] = info.frames / info.samplerate
    return DataDir(data.wav_scp, data.utt2spk, durations, source=data.source)


def prepare_voxceleb1(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> DataDir:
    """VoxCeleb1 utterances from one or more roots (e.g. the dev and the test archive).

    Each root holds ``wav/<spk>/<video>/<nnnnn>.wav`` (or is that ``wav`` folder itself). Vox1-O needs the test
    part; Vox1-E and Vox1-H need both.
    """
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    layout = "<root>/wav/<spk>/<video>/<nnnnn>.wav"
    parts = []
    for r in roots:
        r = Path(r)
        audio = _first_dir([r / "wav", r], f"VoxCeleb1 root {r}", layout)
        parts.append(scan_audio_tree(audio, 3, (".wav", ".flac")))
    return parts[0] if len(parts) == 1 else combine_data_dirs(*parts)


def prepare_voxceleb2(root: str | os.PathLike) -> DataDir:
    """VoxCeleb2-dev utterances: ``<root>/dev/aac/<spk>/<video>/*.m4a`` or the converted ``<root>/dev/wav/...``.

    A converted wav tree is preferred when both exist (libsndfile cannot decode AAC; see the module docstring).
    """
    root = Path(root)
    layout = "<root>/dev/aac/<spk>/<video>/<nnnnn>.m4a or <root>/dev/wav/<spk>/<video>/<nnnnn>.wav"
    audio = _first_dir(
        [root / "dev" / "wav", root / "wav", root / "dev" / "aac", root / "aac", root], f"VoxCeleb2 root {root}", layout
    )
    data = scan_audio_tree(audio, 3, (".wav", ".flac", ".m4a"))
    if any(p.lower().endswith(".m4a") for p in data.wav_scp.values()):
        logger.warning(
            "%s lists .m4a files, which svlib's audio loader (libsndfile) cannot decode: convert them to wav "
            "(same folders, same names) before training",
            audio,
        )
    return data


def prepare_voxblink2(root: str | os.PathLike) -> DataDir:
    """VoxBlink2 utterances, assuming ``<root>/<spk>/<video>/<clip>.wav`` (also under ``<root>/wav`` or
    ``<root>/audio``); see the module docstring for what is assumed."""
    root = Path(root)
    layout = "<root>/<spk>/<video>/<clip>.wav"
    audio = _first_dir([root / "wav", root / "audio", root], f"VoxBlink2 root {root}", layout)
    return scan_audio_tree(audio, 3, (".wav", ".flac"))


@dataclass
class CNCeleb1:
    """CN-Celeb1 prepared: training speakers, evaluation utterances (test + enrollment) and trials.

    Attributes:
        train: the development speakers' utterances (``<spk>/<stem>``).
        eval: test utterances (``test/<stem>``) plus the enrollment utterances named by ``enroll.map``.
        trials: ``trials.lst`` with the enrollment map attached (enrollment = the mean of those utterances).
    """

    train: DataDir
    eval: DataDir
    trials: TrialList


def _read_speaker_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_cnceleb1(root: str | os.PathLike) -> CNCeleb1:
    """CN-Celeb1 (v2 release, flac or converted wav) from ``<root>`` = the ``CN-Celeb_flac`` folder.

    Reads ``data/<spk>/*``, ``dev/dev.lst`` (optional), ``eval/test/*``, ``eval/lists/trials.lst`` and
    ``eval/lists/enroll.map``; checks that every trial and enrollment utterance exists.

    Raises:
        FileNotFoundError: a required folder or list is missing. MissingUtterancesError: trials name utterances
        that are not on disk.
    """
    root = Path(root)
    exts = (".flac", ".wav")
    lists = root / "eval" / "lists"
    required = ("data", "eval/test", "eval/lists/trials.lst", "eval/lists/enroll.map")
    missing = [n for n in required if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"CN-Celeb1 root {root}: missing {', '.join(missing)} (expected <root>/data/<spk>/*.flac, "
            "<root>/eval/test/*.flac, <root>/eval/lists/trials.lst and <root>/eval/lists/enroll.map)"
        )
    trials = read_cnceleb_trials(lists / "trials.lst", lists / "enroll.map", name="CN-Celeb1")
    assert trials.enroll_map is not None  # set by read_cnceleb_trials
    all_data = scan_audio_tree(root / "data", 2, exts)
    eval_speakers = {u.split("/")[0] for utts in trials.enroll_map.values() for u in utts}
    dev_list = root / "dev" / "dev.lst"
    if dev_list.is_file():
        train_speakers = set(_read_speaker_list(dev_list)) & set(all_data.speakers)
    else:
        logger.warning("%s not found: training on every speaker of %s not enrolled in the evaluation",
                       dev_list, root / "data")
        train_speakers = set(all_data.speakers) - eval_speakers
    train = all_data.subset(speakers=sorted(train_speakers))
    test = scan_audio_tree_flat(root / "eval" / "test", exts, id_prefix="test/")
    enroll_utts = sorted({u for utts in trials.enroll_map.values() for u in utts})
    check_trials(trials, combine_data_dirs(all_data, test), where=f"{root / 'data'} + {root / 'eval' / 'test'}")
    evaluation = combine_data_dirs(test, all_data.subset(utts=enroll_utts))
    return CNCeleb1(train, evaluation, trials)


def scan_audio_tree_flat(folder: str | os.PathLike, extensions: Sequence[str], id_prefix: str = "") -> DataDir:
    """List ``<folder>/<spk>-<rest>.<ext>`` files (CN-Celeb ``eval/test``): id ``id_prefix + stem``, speaker =
    the stem up to its first ``-``."""
    folder = Path(folder)
    exts = tuple(e.lower() for e in extensions)
    entries = [
        (id_prefix + utt_id_from_path(f.name), utt_id_from_path(f.name).split("-")[0], os.path.abspath(f.path))
        for f in _scan_dir(folder)
        if f.is_file() and os.path.splitext(f.name)[1].lower() in exts
    ]
    if not entries:
        raise FileNotFoundError(f"{folder}: no {'/'.join(exts)} files (expected <spk>-<genre>-<nn>-<nnn> files)")
    return DataDir.from_entries(entries, source=str(folder))


def prepare_cnceleb2(root: str | os.PathLike) -> DataDir:
    """CN-Celeb2 utterances from ``<root>/data/<spk>/*.flac`` (or ``.wav``); ``<root>`` = ``CN-Celeb2_flac``."""
    root = Path(root)
    audio = _first_dir([root / "data", root], f"CN-Celeb2 root {root}", "<root>/data/<spk>/*.flac")
    return scan_audio_tree(audio, 2, (".flac", ".wav"))


@dataclass
class PreparedDataset:
    """What :func:`prepare_dataset` wrote: folder paths and counts (JSON-friendly via :meth:`to_dict`)."""

    name: str
    data_dirs: dict[str, str] = field(default_factory=dict)
    """split name -> data directory."""
    trials: dict[str, str] = field(default_factory=dict)
    """trial-list name -> Kaldi-format trial file."""
    speakers: dict[str, int] = field(default_factory=dict)
    utterances: dict[str, int] = field(default_factory=dict)
    n_trials: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _trial_name(path: Path) -> str:
    return _VOX1_NAMES.get(path.name, path.stem)


def prepare_dataset(
    name: str,
    roots: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    trials: Sequence[str | os.PathLike] = (),
    durations: bool = False,
) -> PreparedDataset:
    """Prepare corpus ``name`` (one of :data:`DATASETS`) from ``roots`` and write it under ``out_dir``.

    Writes ``out_dir/<split>/{wav.scp,utt2spk,spk2utt[,utt2dur]}`` and Kaldi-format trial lists in
    ``out_dir/trials/``: for VoxCeleb1 the files given in ``trials`` (VGG or Kaldi format, e.g. ``veri_test2.txt``
    -> ``trials/Vox1-O``), for CN-Celeb1 ``trials/CN-Celeb1`` plus ``eval/enroll.map``. Every trial is checked
    against the prepared utterances. ``durations`` adds ``utt2dur`` (reads every header; slow on large corpora).

    Splits: voxceleb1 -> ``vox1``; voxceleb2 -> ``vox2_dev``; voxblink2 -> ``voxblink2``; cnceleb1 -> ``train``,
    ``eval``; cnceleb2 -> ``cnceleb2``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    if not roots:
        raise ValueError(f"prepare_dataset({name!r}): give at least one corpus root")
    if len(roots) > 1 and name != "voxceleb1":
        raise ValueError(f"{name} takes one root, got {len(roots)}: {[str(r) for r in roots]}")
    if trials and name not in ("voxceleb1",):
        raise ValueError(
            f"trial files are only taken for voxceleb1 (CN-Celeb1's come from its eval/lists), got {list(trials)}"
        )
    out = Path(out_dir)
    splits: dict[str, DataDir] = {}
    trial_lists: dict[str, TrialList] = {}
    enroll_map = None
    if name == "voxceleb1":
        splits["vox1"] = prepare_voxceleb1(roots)
        for t in trials:
            tl = read_trials(t, name=_trial_name(Path(t)))
            check_trials(tl, splits["vox1"])
            trial_lists[tl.name] = tl
    elif name == "voxceleb2":
        splits["vox2_dev"] = prepare_voxceleb2(roots[0])
    elif name == "voxblink2":
        splits["voxblink2"] = prepare_voxblink2(roots[0])
    elif name == "cnceleb1":
        cn = prepare_cnceleb1(roots[0])
        splits["train"], splits["eval"] = cn.train, cn.eval
        trial_lists["CN-Celeb1"] = cn.trials
        enroll_map = cn.trials.enroll_map
    else:
        splits["cnceleb2"] = prepare_cnceleb2(roots[0])
    result = PreparedDataset(name)
    for split, data in splits.items():
        if durations:
            data = add_durations(data)
        result.data_dirs[split] = str(write_data_dir(data, out / split))
        result.speakers[split] = len(data.speakers)
        result.utterances[split] = len(data)
    for tname, tl in trial_lists.items():
        result.trials[tname] = str(write_trials(tl, out / "trials" / tname, fmt="kaldi"))
        result.n_trials[tname] = len(tl)
    if enroll_map is not None:
        write_enroll_map(enroll_map, out / "eval" / "enroll.map")
    logger.info("prepared %s under %s: %s", name, out, result.utterances)
    return result
