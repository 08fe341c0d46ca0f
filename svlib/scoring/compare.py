"""Several systems on several trial lists, each number with its speaker-bootstrap interval and each comparison with
its paired interval: what the book prints wherever it compares (:func:`compare_systems`).

A system is a speaker model (scored by :func:`~svlib.scoring.evaluate.evaluate_model`: cosine, and AS-norm + QMF
when a cohort is given) or an embedding function ``embed(wav_scp) -> {utt: embedding}`` (scored by cosine; the
log-mel mean baseline, :func:`~svlib.scoring.baseline.logmel_embeddings`). Every system and scoring method of one
list is bootstrapped together (:func:`~svlib.scoring.bootstrap.bootstrap_trials`, the same speaker resamples), so
any two of them can be compared by a paired difference, which is real only when its interval excludes 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from svlib.data.lists import read_key_value, read_trials
from svlib.frontend.audio import load_audio
from svlib.scoring.bootstrap import Interval, SpeakerBootstrap, bootstrap_trials, metric_digits
from svlib.scoring.evaluate import Evaluation, evaluate_model, score_trials
from svlib.scoring.extract import (cached_embeddings, extract_embeddings, model_cache_dir, model_fingerprint,
                                   probe_duration)

logger = logging.getLogger(__name__)

__all__ = ["Comparison", "agreement_by_length", "compare_systems", "embedding_agreement"]

_LABELS = {"eer_percent": "EER (%)", "min_dcf_0.01": "minDCF(0.01)", "min_dcf_0.05": "minDCF(0.05)"}


def _key(system: str, method: str) -> str:
    """The bootstrap's name of ``system`` scored by ``method``: the system alone for cosine scoring."""
    return system if method == "cosine" else f"{system}, {method}"


@dataclass
class Comparison:
    """The evaluations of systems on trial lists and one speaker bootstrap per list (:func:`compare_systems`)."""

    evaluations: dict[str, dict[str, Evaluation]]
    """``{list: {system: Evaluation}}``; each evaluation's metrics hold ``<metric>_low`` / ``_high``."""
    bootstraps: dict[str, SpeakerBootstrap]
    """``{list: bootstrap}`` of every (system, method), named ``system`` (cosine) or ``"system, method"``."""

    @property
    def lists(self) -> list[str]:
        return list(self.evaluations)

    def interval(self, trial_list: str, system: str, method: str = "cosine", metric: str = "eer_percent") -> Interval:
        """The metric of ``system`` scored by ``method`` on ``trial_list``, with its interval."""
        return self._boot(trial_list).interval(_key(system, method), metric)

    def difference(self, trial_list: str, system: str, baseline: str, metric: str = "eer_percent",
                   method: str = "cosine", baseline_method: str | None = None) -> Interval:
        """``system`` − ``baseline`` on ``trial_list``, paired over the same speaker resamples."""
        return self._boot(trial_list).difference(_key(system, method), _key(baseline, baseline_method or method),
                                                 metric)

    def verdict(self, trial_list: str, system: str, baseline: str, metric: str = "eer_percent",
                method: str = "cosine", baseline_method: str | None = None) -> str:
        """:meth:`~svlib.scoring.bootstrap.SpeakerBootstrap.verdict` on ``trial_list``."""
        return self._boot(trial_list).verdict(_key(system, method), _key(baseline, baseline_method or method), metric)

    def _boot(self, trial_list: str) -> SpeakerBootstrap:
        if trial_list not in self.bootstraps:
            raise KeyError(f"no trial list {trial_list!r}; compared on: {self.lists}")
        return self.bootstraps[trial_list]

    def table(self, metrics: Sequence[str] = ("eer_percent", "min_dcf_0.01"),
              methods: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows ``(system, scoring)``, columns ``(list, metric)``, each cell ``"estimate [low, high]"``; ``methods``
        keeps only those scorings (default: every one a system has)."""
        rows: dict[tuple[str, str], dict] = {}
        for name, evaluations in self.evaluations.items():
            boot = self.bootstraps[name]
            for system, evaluation in evaluations.items():
                for method in evaluation.metrics:
                    if methods is not None and method not in methods:
                        continue
                    row = rows.setdefault((system, method), {})
                    for metric in metrics:
                        interval = boot.interval(_key(system, method), metric)
                        row[(name, _LABELS.get(metric, metric))] = interval.format(metric_digits(metric))
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index = pd.MultiIndex.from_tuples(table.index, names=["system", "scoring"])
        table.columns = pd.MultiIndex.from_tuples(table.columns)
        return table.fillna("–")

    def differences(self, pairs: Sequence[tuple[str, str]], metric: str = "eer_percent",
                    method: str = "cosine") -> pd.DataFrame:
        """Rows ``"system − baseline"`` for each pair (both scored by ``method``), columns ``(list, "difference
        [interval]" | "real")``: the paired difference of ``metric`` and whether its interval excludes 0."""
        keyed = [(_key(system, method), _key(baseline, method)) for system, baseline in pairs]
        labels = [f"{system} − {baseline}" for system, baseline in pairs]
        return pd.concat({name: self._boot(name).differences(keyed, (metric,)).droplevel(0, axis=1).set_axis(labels)
                          for name in self.lists}, axis=1)


def compare_systems(
    systems: Mapping[str, torch.nn.Module | Callable[[Mapping[str, str]], Mapping[str, torch.Tensor]]],
    trial_sets: Sequence,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress: bool = False,
    **evaluate_kwargs,
) -> Comparison:
    """Score ``systems`` on every trial list of ``trial_sets`` and bootstrap each list over its speakers.

    Args:
        systems: ``{name: model}`` (:func:`~svlib.scoring.evaluate.evaluate_model` with ``evaluate_kwargs``, e.g.
            ``cohort_dir`` for AS-norm + QMF, and ``cache_dir``, a workspace cache under which each model's
            embeddings live in a folder named by its weights, :func:`~svlib.scoring.extract.model_cache_dir`, so that
            a model's cohort is embedded once for all lists, and a model met again, under any name or in a later
            run, is not embedded again) or ``{name: embed}``, a function from a ``wav.scp`` mapping to embeddings (cosine scoring).
        trial_sets: objects with ``name``, ``eval_dir`` (``wav.scp`` + ``utt2spk``) and ``trials``
            (:attr:`svlib.data.profiles.ProfileData.trial_sets`).
        n_boot, seed, level: the speaker bootstrap (:func:`~svlib.scoring.bootstrap.speaker_bootstrap`).
        progress: progress bars of the embedding extraction.
    """
    if not systems:
        raise ValueError("no system to compare; expected {name: model or embedding function}")
    cache_dir = evaluate_kwargs.pop("cache_dir", None)
    # each model hashed once for every list: its cache folder and the identity its caches are checked against
    model_ids = {system: model_fingerprint(scorer) for system, scorer in systems.items()
                 if isinstance(scorer, torch.nn.Module)}
    evaluations: dict[str, dict[str, Evaluation]] = {}
    bootstraps: dict[str, SpeakerBootstrap] = {}
    for trial_set in trial_sets:
        name, eval_dir = str(trial_set.name), Path(trial_set.eval_dir)
        if name in evaluations:
            raise ValueError(f"two trial lists are called {name!r}; give each its own name")
        trials = read_trials(trial_set.trials)
        wav_scp = read_key_value(eval_dir / "wav.scp", "wav.scp")
        utt2spk = read_key_value(eval_dir / "utt2spk", "utt2spk")
        needed = {u: wav_scp[u] for u in sorted(trials.utterances())}
        evaluations[name] = {}
        for system, scorer in systems.items():
            if isinstance(scorer, torch.nn.Module):
                cache = None if cache_dir is None else model_cache_dir(cache_dir, scorer, model_ids[system])
                result = evaluate_model(scorer, eval_dir, trials, progress=progress, cache_dir=cache,
                                        model_id=model_ids[system], **evaluate_kwargs)
            elif callable(scorer):
                result = score_trials(scorer(needed), trials)
            else:
                raise TypeError(f"system {system!r} is a {type(scorer).__name__}; expected a speaker model or an "
                                "embedding function")
            evaluations[name][system] = result
        scores = {_key(s, m): v for s, e in evaluations[name].items() for m, v in e.scores.items()}
        boot = bootstrap_trials(scores, trials, utt2spk, n_boot=n_boot, seed=seed, level=level)
        for system, result in evaluations[name].items():
            result.take_intervals(boot, seed, {m: _key(system, m) for m in result.metrics})
        bootstraps[name] = boot
        logger.info("compared %d systems on %s (%d trials, %d speakers)", len(systems), name, len(trials.trials),
                    boot.n_speakers)
    return Comparison(evaluations, bootstraps)


def embedding_agreement(reference: torch.nn.Module, others: Mapping[str, torch.nn.Module], trial_sets: Sequence,
                        *, progress: bool = False, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """How closely other runtimes of one model reproduce its embeddings: the cosine between ``reference``'s and each
    other model's embedding of every utterance of the trial lists (an exported copy of the model, say, as in
    :class:`~svlib.model.export.OnnxSpeakerModel`).

    Args:
        reference: the speaker model whose embeddings count as exact (the PyTorch model).
        others: ``{name: model}`` with the same interface (``embed_waveforms`` through
            :func:`~svlib.scoring.extract.extract_embeddings`).
        trial_sets: as for :func:`compare_systems`; every utterance of their lists is embedded once.
        cache_dir: a workspace embedding cache, as for :func:`compare_systems`: each list's utterances are embedded
            into it as :func:`compare_systems` would, so a comparison of the same models then reads them back.

    Returns:
        One row per other model: ``utterances``, the shortest and longest utterance in seconds, and the ``min`` and
        ``median`` cosine to the reference over the utterances.
    """
    lists = []
    for trial_set in trial_sets:
        scp = read_key_value(Path(trial_set.eval_dir) / "wav.scp", "wav.scp")
        lists.append({u: scp[u] for u in sorted(read_trials(trial_set.trials).utterances())})
    wav_scp = dict(sorted({u: path for scp in lists for u, path in scp.items()}.items()))
    seconds = [probe_duration(source) for source in wav_scp.values()]

    def embed(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if cache_dir is None:
            return extract_embeddings(model, wav_scp, progress=progress)
        model_id = model_fingerprint(model)  # once for all lists
        out: dict[str, torch.Tensor] = {}
        for scp in lists:  # list by list: the sets compare_systems embeds
            out.update(cached_embeddings(model, scp, cache_dir, progress=progress, model_id=model_id))
        return out

    exact = embed(reference)
    rows = {}
    for name, model in others.items():
        emb = embed(model)
        cos = torch.stack([torch.nn.functional.cosine_similarity(exact[u].float(), emb[u].float(), dim=0)
                           for u in wav_scp])
        rows[name] = {"utterances": len(wav_scp), "shortest (s)": min(seconds), "longest (s)": max(seconds),
                      "min cosine": float(cos.min()), "median cosine": float(cos.median())}
    return pd.DataFrame.from_dict(rows, orient="index")


@torch.no_grad()
def agreement_by_length(reference: torch.nn.Module, others: Mapping[str, torch.nn.Module],
                        utt2path: Mapping[str, str | Path], seconds: Sequence[float] = (1.0, 2.0, 20.0),
                        excerpts: int = 4, sample_rate: int = 16_000) -> pd.DataFrame:
    """:func:`embedding_agreement` at chosen input lengths: the utterances of ``utt2path`` (in key order) are joined
    end to end, and ``excerpts`` consecutive pieces of each length in ``seconds`` cut from the start of that real
    audio are embedded one at a time (``model.embed``) by ``reference`` and by each other runtime.

    Returns:
        One row per (runtime, length in seconds): ``excerpts``, and the ``min`` and ``median`` cosine to the
        reference over them.

    Raises:
        ValueError: the utterances hold less audio than ``excerpts × max(seconds)``.
    """
    need = int(round(excerpts * max(seconds) * sample_rate))
    pieces, have = [], 0
    for utt in sorted(utt2path):
        if have >= need:
            break
        pieces.append(load_audio(utt2path[utt], sample_rate=sample_rate))
        have += pieces[-1].shape[0]
    if have < need:
        raise ValueError(f"{len(utt2path)} utterances hold {have / sample_rate:.1f} s of audio; {excerpts} excerpts "
                         f"of {max(seconds):g} s need {need / sample_rate:.1f} s")
    audio = torch.cat(pieces)
    rows = {}
    for length in seconds:
        size = int(round(length * sample_rate))
        cuts = [audio[k * size:(k + 1) * size] for k in range(excerpts)]
        exact = [reference.embed(cut) for cut in cuts]
        for name, model in others.items():
            cos = torch.stack([torch.nn.functional.cosine_similarity(e.float(), model.embed(cut).float(), dim=0)
                               for e, cut in zip(exact, cuts)])
            rows[(name, length)] = {"excerpts": excerpts, "min cosine": float(cos.min()),
                                    "median cosine": float(cos.median())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["runtime", "seconds"]
    return table
