"""Profiles: the named sets of settings (``configs/<profile>/profile.yaml``) every chapter and command takes, and
the data each profile's chapters use (``configs/<profile>/data.yaml``).

``demo`` runs on a CPU in minutes (tiny encoder, offline corpus); ``paper`` uses the real w2v-BERT 2.0 checkpoint and
the paper's hyper-parameters. Nothing in svlib special-cases a profile: a profile is only a config. Values of the form
``${VAR}`` are read from the environment when the profile is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from svlib.core.paths import config_root, expand_env
from svlib.data.cross_channel import build_cross_channel
from svlib.data.demo import build_demo_corpus

_VAR = re.compile(r"^\$\{(\w+)\}$")


@dataclass(frozen=True)
class TrialSet:
    """One trial list a profile's chapters score: its code in result records and its files."""

    name: str
    """short code of the list in result records (``vox1-o``, ``demo``, ``demo-cross`` …)."""
    eval_dir: Path
    """the utterances of both sides (Kaldi data directory with ``wav.scp`` and ``utt2spk``)."""
    trials: Path
    """the trial list."""


@dataclass(frozen=True)
class ProfileData:
    """The data a profile's chapters train and evaluate on (Kaldi data directories and trial lists)."""

    train_dir: Path
    """training set; also the AS-norm cohort and the QMF calibration source."""
    eval_dir: Path
    """evaluation utterances (the trials' enrollment and test sides)."""
    trials: Path
    """the trial list."""
    train_name: str = "demo"
    """short code of the training data in result records (``vox2``, ``vox2+vb2``, ``demo`` …; see :mod:`svlib.analysis.tables`)."""
    test_name: str = "demo"
    """short code of the trial list in result records (``vox1-o``, ``demo`` …)."""
    other_lists: tuple[TrialSet, ...] = ()
    """further trial lists scored next to the main one (the demo's cross-channel list; Vox1-E/H)."""

    @property
    def trial_sets(self) -> tuple[TrialSet, ...]:
        """The main trial list first, then :attr:`other_lists`."""
        return (TrialSet(self.test_name, self.eval_dir, self.trials), *self.other_lists)


def profile_data(name: str, data_root: str | os.PathLike | None = None) -> ProfileData:
    """Read ``configs/<name>/data.yaml``: either ``demo_corpus: true`` (the offline demo corpus, built on first use
    under ``data_root``; with ``cross_channel: <code>`` also its cross-channel list,
    :func:`svlib.data.cross_channel.build_cross_channel`) or the paths ``train_dir``, ``eval_dir`` and ``trials``
    and, optionally, ``other_lists: {<code>: {eval_dir, trials}}`` (``${VAR}`` read from the environment). Every
    path is checked to exist, and all missing ones are named in one error.
    """
    path = config_root() / name / "data.yaml"
    if not path.is_file():
        raise ValueError(f"profile {name!r} has no {path}: it must say where the chapters' data is")
    settings = yaml.safe_load(path.read_text()) or {}
    settings.pop("cohort_dir", None)  # read by profile_cohort_dir, only where a cohort is asked for
    if settings.get("demo_corpus"):
        corpus = build_demo_corpus(data_root, progress=False)
        others = ()
        if settings.get("cross_channel"):
            cross = build_cross_channel(corpus, progress=False)
            others = (TrialSet(str(settings["cross_channel"]), cross.data_dir, cross.trials),)
        return ProfileData(Path(corpus.train_dir), Path(corpus.test_dir), Path(corpus.trials),
                           settings.get("train_name", "demo"), settings.get("test_name", "demo"), others)
    lists = settings.pop("other_lists", None) or {}
    unset = [f"{key} (${{{m.group(1)}}})" for key, value in settings.items()
             if isinstance(value, str) and (m := _VAR.match(value)) and m.group(1) not in os.environ]
    if unset:
        raise ValueError(f"{path}: set the environment variables of {', '.join(unset)}")
    settings = expand_env(settings, str(path))
    missing = [f"{key}={settings.get(key)}" for key in ("train_dir", "eval_dir", "trials")
               if not settings.get(key) or not Path(settings[key]).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: these data paths do not exist: {', '.join(missing)}")
    others = []
    for code, files in lists.items():
        files = expand_env(dict(files or {}), f"{path}: other_lists.{code}")
        absent = [f"other_lists.{code}.{key}={files.get(key)}" for key in ("eval_dir", "trials")
                  if not files.get(key) or not Path(files[key]).exists()]
        if absent:
            raise FileNotFoundError(f"{path}: these data paths do not exist: {', '.join(absent)}")
        others.append(TrialSet(str(code), Path(files["eval_dir"]), Path(files["trials"])))
    return ProfileData(Path(settings["train_dir"]), Path(settings["eval_dir"]), Path(settings["trials"]),
                       settings.get("train_name", "custom"), settings.get("test_name", "custom"), tuple(others))


def profile_cohort_dir(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """The AS-norm cohort of profile ``name``: ``cohort_dir`` in ``configs/<name>/data.yaml``, a Kaldi data directory
    (``wav.scp`` + ``utt2spk``) given as a path (``${VAR}`` read from the environment) or as ``train_dir``, the
    profile's training set (with ``demo_corpus: true``, the demo corpus's, built on first use under ``data_root``).

    Raises:
        ValueError: the profile or its ``cohort_dir`` key is missing, or its variable is unset.
        FileNotFoundError: the directory does not exist.
    """
    path = config_root() / name / "data.yaml"
    if not path.is_file():
        raise ValueError(f"profile {name!r} has no {path}: it must say where the chapters' data is")
    settings = yaml.safe_load(path.read_text()) or {}
    value = settings.get("cohort_dir")
    if not value:
        raise ValueError(f"{path} has no cohort_dir: give the AS-norm cohort explicitly (svlib score --cohort-dir)")
    if value == "train_dir":
        if settings.get("demo_corpus"):
            return Path(build_demo_corpus(data_root, progress=False).train_dir)
        value = settings.get("train_dir")
        if not value:
            raise ValueError(f"{path}: cohort_dir is train_dir, but the file has no train_dir")
    folder = Path(expand_env({"cohort_dir": value}, str(path))["cohort_dir"])
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: cohort_dir={folder} does not exist")
    return folder


def available_profiles() -> list[str]:
    return sorted(p.parent.name for p in config_root().glob("*/profile.yaml"))


def load_profile(name: str, **overrides) -> dict:
    """The settings of profile ``name`` with ``overrides`` applied (``None`` values are ignored).

    Raises:
        ValueError: unknown profile, or a ``${VAR}`` setting whose variable is unset and not overridden.
    """
    path = config_root() / name / "profile.yaml"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}: expected one of {available_profiles()} (files {config_root()}/*/profile.yaml)")
    settings = yaml.safe_load(path.read_text())
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return expand_env(settings, f"profile {name!r}")
