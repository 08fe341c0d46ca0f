"""Kaldi-style data directories and trial lists: the one internal format svlib's data code reads and writes.

A **data directory** is a folder of small text tables, one entry per line, fields separated by whitespace, sorted by
key (byte order, as Kaldi's ``LC_ALL=C sort``):

- ``wav.scp``  — ``<utt> <path>``: the audio file of each utterance (the path is the rest of the line, so it may
  contain spaces; Kaldi pipe commands ``... |`` are not supported).
- ``utt2spk``  — ``<utt> <spk>``: the speaker of each utterance.
- ``spk2utt``  — ``<spk> <utt1> <utt2> ...``: derived from ``utt2spk``, written for Kaldi tools, checked on reading.
- ``utt2dur``  — ``<utt> <seconds>`` (optional): the duration of each utterance.

Utterance ids follow the official VoxCeleb trial lists: the audio path relative to the corpus root without its
extension, ``<spk>/<video>/<nnnnn>`` (e.g. ``id10270/x6uYqmx31kE/00001``). Ids and speaker labels never contain
whitespace.

A **trial list** pairs an enrollment side with a test utterance and a label. Three on-disk formats are read:

- ``vgg``     — ``<1|0> <enroll path> <test path>`` (VoxCeleb1 ``veri_test2.txt``, ``list_test_all2.txt``,
  ``list_test_hard2.txt``);
- ``kaldi``   — ``<enroll> <test> <target|nontarget>``;
- ``cnceleb`` — ``<enroll id> <test path> <1|0>`` (CN-Celeb ``eval/lists/trials.lst``), whose enrollment ids are
  expanded to utterances by ``eval/lists/enroll.map`` (``<enroll id> <utt1> <utt2> ...``).

Paths in trial lists are turned into utterance ids with :func:`utt_id_from_path` (extension dropped), so a list that
names ``.wav`` files matches a corpus stored as ``.flac`` or ``.m4a``. Every list file is written atomically
(temporary file in the same folder, then :func:`os.replace`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from svlib.core.atomic import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_EXTENSIONS",
    "TRIAL_FORMATS",
    "DataDir",
    "DataDirError",
    "MissingUtterancesError",
    "Trial",
    "TrialList",
    "check_trials",
    "combine_data_dirs",
    "detect_trial_format",
    "parse_trial_line",
    "read_cnceleb_trials",
    "read_data_dir",
    "read_enroll_map",
    "read_key_value",
    "read_trials",
    "utt_id_from_path",
    "write_data_dir",
    "write_enroll_map",
    "write_lines_atomic",
    "write_trials",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".m4a", ".aac", ".ogg", ".opus", ".mp3")
"""File extensions that :func:`utt_id_from_path` strips (lower-case comparison)."""

TRIAL_FORMATS = ("vgg", "kaldi", "cnceleb")
"""Trial-list formats understood by :func:`read_trials` and :func:`write_trials`."""

_N_SHOWN = 5  # how many offending names an error message lists


class DataDirError(ValueError):
    """A malformed or inconsistent data-directory table: the message names the file, the line and the value."""


class MissingUtterancesError(ValueError):
    """Trials name utterances that the data directory does not have.

    Attributes:
        missing: the distinct missing utterance ids, sorted.
        n_trials: how many trials name at least one missing utterance.
    """

    def __init__(self, message: str, missing: list[str], n_trials: int):
        super().__init__(message)
        self.missing = missing
        self.n_trials = n_trials


def _shown(names: Iterable[str], n: int = _N_SHOWN) -> str:
    names = list(names)
    head = ", ".join(repr(x) for x in names[:n])
    return head + (f", ... ({len(names) - n} more)" if len(names) > n else "")


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------


def utt_id_from_path(path: str | os.PathLike) -> str:
    """The utterance id of an audio path relative to its corpus root: ``/`` separators, audio extension dropped.

    ``"id10270/x6uYqmx31kE/00001.wav"`` -> ``"id10270/x6uYqmx31kE/00001"``; ``"test/id00800-singing-01-001.flac"``
    -> ``"test/id00800-singing-01-001"``. A name without a known audio extension (:data:`AUDIO_EXTENSIONS`) is
    returned unchanged (apart from separators).
    """
    text = os.fspath(path).replace(os.sep, "/")
    stem, ext = os.path.splitext(text)
    return stem if ext.lower() in AUDIO_EXTENSIONS else text


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each without its newline) to ``path`` through a temporary file and :func:`os.replace`.

    Readers never see a half-written list; the parent folder is created if needed. Returns ``path``.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
                f.write("\n")

    return atomic_write(path, write)


def _read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` of the non-empty, non-comment lines of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (expected an existing text file)")
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield lineno, line


def _check_token(value: str, what: str, where: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataDirError(f"{where}: {what} {value!r} is empty or contains whitespace (expected one token)")


# ---------------------------------------------------------------------------------------------------------------
# data directories
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DataDir:
    """An in-memory Kaldi data directory: three maps keyed by utterance id.

    Attributes:
        wav_scp: utterance id -> audio path (``wav.scp``).
        utt2spk: utterance id -> speaker label (``utt2spk``); the same keys as ``wav_scp``.
        utt2dur: utterance id -> duration in seconds (``utt2dur``), or ``None`` when unknown.

    The constructor checks that the key sets agree, that ids and labels are single tokens and that durations are
    positive; it raises :class:`DataDirError` naming the first offending entries.
    """

    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] | None = None
    source: str = field(default="<memory>", compare=False)
    """Where the tables came from (a folder path), used in error messages."""

    def __post_init__(self) -> None:
        where = self.source
        only_wav = sorted(set(self.wav_scp) - set(self.utt2spk))
        only_spk = sorted(set(self.utt2spk) - set(self.wav_scp))
        if only_wav or only_spk:
            raise DataDirError(
                f"{where}: wav.scp and utt2spk disagree: {len(only_wav)} utterances only in wav.scp "
                f"[{_shown(only_wav)}], {len(only_spk)} only in utt2spk [{_shown(only_spk)}] "
                "(expected the same utterance ids in both)"
            )
        for utt, spk in self.utt2spk.items():
            _check_token(utt, "utterance id", where)
            _check_token(spk, f"speaker label of {utt!r}", where)
        for utt, path in self.wav_scp.items():
            if not path:
                raise DataDirError(f"{where}: utterance {utt!r} has an empty path in wav.scp")
        if self.utt2dur is not None:
            missing = sorted(set(self.wav_scp) - set(self.utt2dur))
            extra = sorted(set(self.utt2dur) - set(self.wav_scp))
            if missing or extra:
                raise DataDirError(
                    f"{where}: utt2dur covers different utterances than wav.scp: {len(missing)} missing "
                    f"[{_shown(missing)}], {len(extra)} extra [{_shown(extra)}]"
                )
            bad = [u for u, d in self.utt2dur.items() if not (np.isfinite(d) and d > 0)]
            if bad:
                raise DataDirError(f"{where}: non-positive durations in utt2dur for {_shown(bad)} (expected > 0 s)")

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[tuple[str, str, str]],
        utt2dur: Mapping[str, float] | None = None,
        source: str = "<memory>",
    ) -> DataDir:
        """Build from ``(utt, spk, path)`` triples; a repeated utterance id raises :class:`DataDirError`."""
        wav_scp: dict[str, str] = {}
        utt2spk: dict[str, str] = {}
        for utt, spk, path in entries:
            if utt in wav_scp:
                raise DataDirError(f"{source}: utterance id {utt!r} appears twice ({wav_scp[utt]} and {path})")
            wav_scp[utt] = str(path)
            utt2spk[utt] = spk
        order = sorted(wav_scp)
        return cls(
            {u: wav_scp[u] for u in order},
            {u: utt2spk[u] for u in order},
            None if utt2dur is None else {u: float(utt2dur[u]) for u in order if u in utt2dur},
            source=source,
        )

    # -- views -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.wav_scp)

    def __contains__(self, utt: object) -> bool:
        return utt in self.wav_scp

    @property
    def utts(self) -> list[str]:
        """Utterance ids, sorted."""
        return sorted(self.wav_scp)

    @property
    def speakers(self) -> list[str]:
        """Speaker labels, sorted."""
        return sorted(set(self.utt2spk.values()))

    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker label -> its utterance ids, both sorted (the ``spk2utt`` table)."""
        out: dict[str, list[str]] = {}
        for utt in self.utts:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: out[spk] for spk in sorted(out)}

    def total_seconds(self) -> float | None:
        """Sum of ``utt2dur`` in seconds, or ``None`` when durations are unknown."""
        return None if self.utt2dur is None else float(sum(self.utt2dur.values()))

    def subset(self, utts: Iterable[str] | None = None, speakers: Iterable[str] | None = None) -> DataDir:
        """The data directory restricted to ``utts`` and/or to the utterances of ``speakers``.

        Raises:
            DataDirError: an utterance or speaker that is not in this directory.
        """
        keep = set(self.wav_scp)
        if utts is not None:
            wanted = set(utts)
            unknown = sorted(wanted - keep)
            if unknown:
                raise DataDirError(f"{self.source}: subset names {len(unknown)} unknown utterances: {_shown(unknown)}")
            keep &= wanted
        if speakers is not None:
            wanted_spk = set(speakers)
            unknown = sorted(wanted_spk - set(self.utt2spk.values()))
            if unknown:
                raise DataDirError(f"{self.source}: subset names {len(unknown)} unknown speakers: {_shown(unknown)}")
            keep = {u for u in keep if self.utt2spk[u] in wanted_spk}
        order = sorted(keep)
        return DataDir(
            {u: self.wav_scp[u] for u in order},
            {u: self.utt2spk[u] for u in order},
            None if self.utt2dur is None else {u: self.utt2dur[u] for u in order},
            source=self.source,
        )


def combine_data_dirs(*dirs: DataDir) -> DataDir:
    """One data directory holding the utterances of all ``dirs`` (e.g. VoxCeleb1 dev + test, CN-Celeb1 + 2).

    Durations are kept only if every input has them. An utterance id present in two inputs with a different path
    or speaker raises :class:`DataDirError`; identical duplicates are merged.
    """
    wav_scp: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] | None = {} if all(d.utt2dur is not None for d in dirs) else None
    for d in dirs:
        for utt, path in d.wav_scp.items():
            spk = d.utt2spk[utt]
            if utt in wav_scp and (wav_scp[utt], utt2spk[utt]) != (path, spk):
                raise DataDirError(
                    f"utterance {utt!r} is in two data directories with different entries: "
                    f"({wav_scp[utt]}, {utt2spk[utt]}) vs ({path}, {spk}) from {d.source}"
                )
            wav_scp[utt], utt2spk[utt] = path, spk
            if utt2dur is not None:
                utt2dur[utt] = d.utt2dur[utt]  # type: ignore[index]
    return DataDir.from_entries(((u, utt2spk[u], wav_scp[u]) for u in wav_scp), utt2dur, source="<combined>")


def _read_pairs(path: Path, what: str) -> dict[str, str]:
    """Read a two-column table ``<key> <value>`` (value = rest of the line); duplicate keys are an error."""
    out: dict[str, str] = {}
    for lineno, line in _read_lines(path, what):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataDirError(f"{path}:{lineno}: expected '<key> <value>' in {what}, got {line!r}")
        key, value = parts[0], parts[1].strip()
        if key in out:
            raise DataDirError(f"{path}:{lineno}: key {key!r} appears twice in {what}")
        out[key] = value
    return out


def read_key_value(path: str | os.PathLike, what: str = "key/value map") -> dict[str, str]:
    """Read one ``<key> <value>`` table (``wav.scp``, ``utt2spk``, ``utt2dur``) as ``{key: value}``, file order.

    The value is the rest of the line (a path may contain spaces); blank and ``#`` lines are skipped. ``what``
    names the table in error messages. Unlike :func:`read_data_dir`, nothing else is checked.

    Raises:
        FileNotFoundError: no such file. DataDirError: a line without a value or a repeated key (the message names
        the file and line).
    """
    return _read_pairs(Path(path), what)


def read_data_dir(path: str | os.PathLike) -> DataDir:
    """Read a Kaldi data directory (``wav.scp`` and ``utt2spk`` required; ``spk2utt``, ``utt2dur`` optional).

    When ``spk2utt`` exists it must agree with ``utt2spk``. Raises :class:`DataDirError` for malformed or
    inconsistent tables (naming the file and line) and :class:`FileNotFoundError` for a missing required table.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data directory not found (expected a folder with wav.scp and utt2spk)")
    wav_scp = _read_pairs(folder / "wav.scp", "wav.scp")
    for utt, p in wav_scp.items():
        if p.endswith("|"):
            raise DataDirError(
                f"{folder / 'wav.scp'}: utterance {utt!r} is a pipe command ({p!r}); svlib reads audio files only "
                "(convert the audio to files and list their paths)"
            )
    utt2spk = _read_pairs(folder / "utt2spk", "utt2spk")
    for utt, spk in utt2spk.items():
        _check_token(spk, f"speaker label of {utt!r}", str(folder / "utt2spk"))
    utt2dur = None
    if (folder / "utt2dur").is_file():
        utt2dur = {}
        for utt, value in _read_pairs(folder / "utt2dur", "utt2dur").items():
            try:
                utt2dur[utt] = float(value)
            except ValueError:
                raise DataDirError(
                    f"{folder / 'utt2dur'}: duration of {utt!r} is {value!r} (expected seconds as a number)"
                ) from None
    order = sorted(wav_scp)
    data = DataDir(
        {u: wav_scp[u] for u in order},
        {u: utt2spk[u] for u in sorted(utt2spk)},
        utt2dur,
        source=str(folder),
    )
    spk2utt_path = folder / "spk2utt"
    if spk2utt_path.is_file():
        stored: dict[str, list[str]] = {}
        for lineno, line in _read_lines(spk2utt_path, "spk2utt"):
            spk, *utts = line.split()
            if not utts:
                raise DataDirError(f"{spk2utt_path}:{lineno}: speaker {spk!r} lists no utterances")
            stored[spk] = sorted(utts)
        derived = data.spk2utt()
        if stored != derived:
            diff = sorted(s for s in set(stored) | set(derived) if stored.get(s) != derived.get(s))
            raise DataDirError(
                f"{spk2utt_path}: disagrees with utt2spk for speakers {_shown(diff)} "
                "(regenerate spk2utt from utt2spk, e.g. by write_data_dir)"
            )
    logger.debug("read %s: %d utterances, %d speakers", folder, len(data), len(data.speakers))
    return data


def write_data_dir(data: DataDir, path: str | os.PathLike) -> Path:
    """Write ``data`` as ``wav.scp``, ``utt2spk``, ``spk2utt`` (and ``utt2dur``) into folder ``path``, atomically.

    Entries are sorted by key. Returns the folder.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    utts = data.utts
    write_lines_atomic(folder / "wav.scp", (f"{u} {data.wav_scp[u]}" for u in utts))
    write_lines_atomic(folder / "utt2spk", (f"{u} {data.utt2spk[u]}" for u in utts))
    write_lines_atomic(folder / "spk2utt", (f"{s} {' '.join(us)}" for s, us in data.spk2utt().items()))
    if data.utt2dur is not None:
        write_lines_atomic(folder / "utt2dur", (f"{u} {data.utt2dur[u]:.4f}" for u in utts))
    elif (folder / "utt2dur").exists():
        (folder / "utt2dur").unlink()  # a stale table would no longer match
    logger.info("wrote data directory %s (%d utterances, %d speakers)", folder, len(data), len(data.speakers))
    return folder


# ---------------------------------------------------------------------------------------------------------------
# trials
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One verification trial: does utterance ``test`` come from the speaker of ``enroll``?

    ``enroll`` is an utterance id, or an enrollment id expanded by :attr:`TrialList.enroll_map` (CN-Celeb).
    """

    enroll: str
    test: str
    target: bool


@dataclass
class TrialList:
    """A list of trials plus, for multi-utterance enrollment, the enrollment map.

    Attributes:
        trials: the trials in file order.
        enroll_map: enrollment id -> its utterance ids (CN-Celeb ``enroll.map``); ``None`` when every enrollment
            side is a single utterance id.
        name: a short label for messages and result tables (e.g. ``"Vox1-O"``).
    """

    trials: list[Trial]
    enroll_map: dict[str, list[str]] | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    @property
    def n_target(self) -> int:
        return sum(t.target for t in self.trials)

    @property
    def n_nontarget(self) -> int:
        return len(self.trials) - self.n_target

    def labels(self) -> np.ndarray:
        """Target labels as a boolean array ``(n_trials,)``."""
        return np.fromiter((t.target for t in self.trials), dtype=bool, count=len(self.trials))

    def enroll_utts(self, enroll: str) -> list[str]:
        """The utterance ids behind enrollment side ``enroll`` (itself when there is no enrollment map)."""
        if self.enroll_map is None:
            return [enroll]
        try:
            return self.enroll_map[enroll]
        except KeyError:
            raise KeyError(f"{self.name or 'trials'}: enrollment id {enroll!r} is not in the enrollment map") from None

    def utterances(self) -> set[str]:
        """Every utterance id the trials need: test utterances and (expanded) enrollment utterances."""
        needed = {t.test for t in self.trials}
        for enroll in {t.enroll for t in self.trials}:
            if self.enroll_map is None:
                needed.add(enroll)
            else:
                needed.update(self.enroll_map.get(enroll, ()))
        return needed

    def check(self, available: DataDir | Iterable[str], where: str = "") -> None:
        """Raise :class:`MissingUtterancesError` unless every utterance the trials need is in ``available``.

        See :func:`check_trials`.
        """
        check_trials(self, available, where)


def detect_trial_format(line: str) -> str:
    """Guess the format of one trial line: ``"vgg"``, ``"kaldi"`` or ``"cnceleb"`` (see the module docstring).

    Raises:
        ValueError: the line does not have three fields with a label in a recognised position.
    """
    parts = line.split()
    if len(parts) == 3:
        if parts[2] in ("target", "nontarget"):
            return "kaldi"
        if parts[0] in ("0", "1") and parts[2] not in ("0", "1"):
            return "vgg"
        if parts[2] in ("0", "1"):
            return "cnceleb"
    raise ValueError(
        f"cannot tell the trial format of {line!r}: expected 'label enroll test' with label 1/0 (VGG), "
        "'enroll test target|nontarget' (Kaldi) or 'enroll_id test_path 1/0' (CN-Celeb)"
    )


def parse_trial_line(line: str, fmt: str) -> Trial:
    """Parse one trial line in format ``fmt`` (one of :data:`TRIAL_FORMATS`); paths become utterance ids.

    Raises:
        ValueError: wrong number of fields or an unknown label (the message shows the line and the format).
    """
    parts = line.split()
    if fmt not in TRIAL_FORMATS:
        raise ValueError(f"unknown trial format {fmt!r}; expected one of {list(TRIAL_FORMATS)}")
    expected = {
        "vgg": "'<1|0> <enroll path> <test path>'",
        "kaldi": "'<enroll> <test> <target|nontarget>'",
        "cnceleb": "'<enroll id> <test path> <1|0>'",
    }[fmt]
    if len(parts) != 3:
        raise ValueError(f"expected 3 fields {expected} ({fmt} format), got {len(parts)}: {line!r}")
    if fmt == "vgg":
        label, enroll, test = parts
        labels = {"1": True, "0": False}
    elif fmt == "kaldi":
        enroll, test, label = parts
        labels = {"target": True, "nontarget": False}
    else:
        enroll, test, label = parts
        labels = {"1": True, "0": False}
    if label not in labels:
        raise ValueError(f"label {label!r} is not one of {sorted(labels)} ({fmt} format {expected}): {line!r}")
    enroll_id = enroll if fmt == "cnceleb" else utt_id_from_path(enroll)
    return Trial(enroll_id, utt_id_from_path(test), labels[label])


def read_trials(
    path: str | os.PathLike,
    fmt: str = "auto",
    name: str | None = None,
    enroll_map: str | os.PathLike | Mapping[str, list[str]] | None = None,
) -> TrialList:
    """Read a trial list in VGG, Kaldi or CN-Celeb format (``fmt="auto"`` looks at the first line).

    Paths become utterance ids (:func:`utt_id_from_path`). ``enroll_map`` (a file for :func:`read_enroll_map` or
    a mapping) attaches multi-utterance enrollment, as for CN-Celeb lists (see also :func:`read_cnceleb_trials`).
    ``name`` defaults to the file name.

    Raises:
        FileNotFoundError: no such file. ValueError: a malformed line (the message names the file and line) or an
        empty list.
    """
    path = Path(path)
    trials: list[Trial] = []
    for lineno, line in _read_lines(path, "trial list"):
        try:
            if fmt == "auto":
                fmt = detect_trial_format(line)
                logger.debug("%s: detected %s trial format", path, fmt)
            trials.append(parse_trial_line(line, fmt))
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
    if not trials:
        raise ValueError(f"{path}: no trials (expected at least one line)")
    if enroll_map is not None and not isinstance(enroll_map, Mapping):
        enroll_map = read_enroll_map(enroll_map)
    return TrialList(trials, None if enroll_map is None else dict(enroll_map), name if name is not None else path.name)


def write_trials(trials: TrialList | Iterable[Trial], path: str | os.PathLike, fmt: str = "kaldi") -> Path:
    """Write trials atomically in ``fmt`` (``kaldi``: ``enroll test target|nontarget``; ``vgg``: ``1|0 enroll
    test``; ``cnceleb``: ``enroll test 1|0``). Ids are written as they are (no extension added). Returns ``path``.
    """
    if fmt not in TRIAL_FORMATS:
        raise ValueError(f"unknown trial format {fmt!r}; expected one of {list(TRIAL_FORMATS)}")

    def fmt_line(t: Trial) -> str:
        if fmt == "kaldi":
            return f"{t.enroll} {t.test} {'target' if t.target else 'nontarget'}"
        if fmt == "vgg":
            return f"{int(t.target)} {t.enroll} {t.test}"
        return f"{t.enroll} {t.test} {int(t.target)}"

    return write_lines_atomic(path, (fmt_line(t) for t in trials))


def read_enroll_map(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``<enroll id> <utt path 1> <utt path 2> ...`` lines (CN-Celeb ``enroll.map``) as id -> utterance ids."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    for lineno, line in _read_lines(path, "enrollment map"):
        enroll, *utts = line.split()
        if not utts:
            raise ValueError(f"{path}:{lineno}: enrollment id {enroll!r} lists no utterances (expected 'id utt1 ...')")
        if enroll in out:
            raise ValueError(f"{path}:{lineno}: enrollment id {enroll!r} appears twice")
        out[enroll] = [utt_id_from_path(u) for u in utts]
    if not out:
        raise ValueError(f"{path}: empty enrollment map (expected lines 'enroll_id utt1 utt2 ...')")
    return out


def write_enroll_map(enroll_map: Mapping[str, Iterable[str]], path: str | os.PathLike) -> Path:
    """Write an enrollment map (``<enroll id> <utt1> <utt2> ...``, sorted by id) atomically."""
    return write_lines_atomic(path, (f"{e} {' '.join(enroll_map[e])}" for e in sorted(enroll_map)))


def read_cnceleb_trials(
    trials_path: str | os.PathLike, enroll_map_path: str | os.PathLike, name: str = "CN-Celeb"
) -> TrialList:
    """Read CN-Celeb's ``eval/lists/trials.lst`` with its ``eval/lists/enroll.map``.

    ``trials.lst`` lines are ``<enroll id> <test path> <1|0>`` (e.g. ``id00800-enroll
    test/id00800-singing-01-001.wav 1``); test paths become ids such as ``test/id00800-singing-01-001``. Every
    enrollment id must be in the map, whose utterances become ids such as ``id00800/singing-01-003``.

    Raises:
        ValueError: malformed lines, or trials whose enrollment id is not in the map (listing some and the count).
    """
    trials = read_trials(trials_path, fmt="cnceleb", name=name, enroll_map=enroll_map_path)
    unknown = sorted({t.enroll for t in trials} - set(trials.enroll_map or {}))
    if unknown:
        raise ValueError(
            f"{trials_path}: {len(unknown)} enrollment ids are not in {enroll_map_path}: {_shown(unknown)}"
        )
    return trials


def check_trials(trials: TrialList, available: DataDir | Iterable[str], where: str = "") -> None:
    """Check that every utterance the trials need exists; raise :class:`MissingUtterancesError` otherwise.

    ``available`` is a :class:`DataDir` or a collection of utterance ids. Enrollment ids missing from the trials'
    enrollment map count as missing too. The error lists the first missing names, their count and how many trials
    are affected, e.g. ``"Vox1-O: 12 utterances named by 40 of 37611 trials are not in data/vox1: 'id1/a/00001',
    ... (7 more)"``.
    """
    known = set(available.wav_scp) if isinstance(available, DataDir) else set(available)
    if where == "" and isinstance(available, DataDir):
        where = available.source
    missing: set[str] = set()
    bad_trials = 0
    for t in trials.trials:
        if trials.enroll_map is not None:
            enroll_utts = trials.enroll_map.get(t.enroll)
            need = [f"<enroll id {t.enroll}>"] if enroll_utts is None else list(enroll_utts)
        else:
            need = [t.enroll]
        need.append(t.test)
        lacking = [u for u in need if u not in known]
        if lacking:
            bad_trials += 1
            missing.update(lacking)
    if missing:
        names = sorted(missing)
        label = trials.name or "trials"
        raise MissingUtterancesError(
            f"{label}: {len(names)} utterances named by {bad_trials} of {len(trials)} trials are not in "
            f"{where or 'the data'}: {_shown(names)}. Check that the data directory was prepared from the "
            "right corpus root (ids look like 'spk/video/00001', without extension).",
            names,
            bad_trials,
        )
