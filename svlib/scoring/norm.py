"""Adaptive symmetric score normalisation (AS-norm; Matejka et al., 2017, paper ref. [34]).

Table 1's last row adds AS-norm and QMF to the LMFT model. AS-norm compares each side of a trial with a cohort
of impostor speakers and standardises the trial score with the statistics of the side's ``N`` *closest* cohort
speakers (the "adaptive" part):

    s_norm = ½ · ((s − μ_e) / σ_e + (s − μ_t) / σ_t)

where ``μ_e, σ_e`` are the mean and standard deviation of the top-``N`` scores of the enroll side against the
cohort, and ``μ_t, σ_t`` the same for the test side (RECIPE.md: N = 300).

The cohort (RECIPE.md "Scoring and evaluation") is built from the training set: the mean ``m`` of all training
embeddings is subtracted from every embedding, each training speaker is represented by the mean of its
(centred) utterance embeddings, and everything is L2-normalised. The enroll and test embeddings are centred
with the same ``m`` before scoring, so the trial score ``s`` and the cohort scores live in the same space.
Every embedding is L2-normalised *before* the mean is computed and subtracted (``x ↦ normalize(normalize(x) − m)``):
raw embedding norms vary with recording quality (a QMF feature), and an averaged multi-utterance enrollment
(:func:`~svlib.scoring.extract.enroll_embeddings`) is a mean of unit vectors, so only directions are compared.

The cohort of a large training set (VoxCeleb2 dev: 1.09 M utterances, 5,994 speakers; WeSpeaker's w2v-BERT recipe
takes its speaker means, top-300) is built in one streaming pass over an embedding cache
(:func:`cohort_from_shards`, :class:`CohortAccumulator`): since
``mean_{u ∈ s}(x_u − m) = (Σ_{u ∈ s} x_u) / n_s − m``, per-speaker sums and counts of the normalised embeddings
are all it needs, so memory grows with the number of speakers, not of utterances.

Everything is matrix products and ``topk``, chunked over utterances and trials for memory; statistics are
computed once per distinct utterance, not per trial. The standard deviation is the unbiased one (``N − 1``).

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from svlib.scoring.extract import index_trials, paired_dot, stack_embeddings

logger = logging.getLogger(__name__)

__all__ = [
    "Cohort",
    "CohortAccumulator",
    "cohort_from_shards",
    "make_cohort",
    "center_and_normalize",
    "cohort_top_stats",
    "as_norm",
    "ASNormResult",
    "asnorm_scores",
]


@dataclass
class Cohort:
    """An AS-norm cohort: one L2-normalised, centred mean embedding per training speaker."""

    embeddings: torch.Tensor
    """``(S, E)`` normalised speaker means (after subtracting :attr:`mean`)."""
    mean: torch.Tensor
    """``(E,)`` mean of the L2-normalised training embeddings, subtracted from every (normalised) embedding."""
    speakers: list[str]
    """the ``S`` speaker ids, in row order."""


def make_cohort(emb: Mapping[str, torch.Tensor], utt2spk: Mapping[str, str]) -> Cohort:
    """Build the AS-norm cohort from training-set embeddings.

    Args:
        emb: ``{utt: (E,) raw embedding}`` of training utterances (every key of ``utt2spk`` must be present).
        utt2spk: ``{utt: speaker}`` for the cohort utterances.

    Returns:
        A :class:`Cohort` with ``m = mean_u x_u`` and one row ``normalize(mean_{u ∈ s} (x_u − m))`` per speaker
        ``s``, where ``x_u = normalize(emb[u])``.
    """
    utts = list(utt2spk)
    x = F.normalize(stack_embeddings(emb, utts, what="cohort embedding"), dim=-1)  # (U, E)
    mean = x.mean(dim=0)  # (E,)
    speakers = sorted(set(utt2spk.values()))
    row = {s: i for i, s in enumerate(speakers)}
    index = torch.tensor([row[utt2spk[u]] for u in utts])  # (U,)
    sums = torch.zeros(len(speakers), x.shape[1]).index_add_(0, index, x - mean)  # (S, E)
    counts = torch.bincount(index, minlength=len(speakers)).clamp(min=1).unsqueeze(1)  # (S, 1)
    cohort = F.normalize(sums / counts, dim=-1)
    logger.info("AS-norm cohort: %d speakers from %d utterances", len(speakers), len(utts))
    return Cohort(embeddings=cohort, mean=mean, speakers=speakers)


class CohortAccumulator:
    """:func:`make_cohort` in one streaming pass: feed utterance embeddings in any order and any chunks with
    :meth:`update`, then :meth:`finalize`. Memory: ``S × E`` sums (float64) and ``S`` counts.

    With ``x_u = normalize(emb[u])``, ``m = (Σ_u x_u) / U`` and each speaker's row
    ``normalize(mean_{u ∈ s}(x_u − m)) = normalize((Σ_{u ∈ s} x_u) / n_s − m)``, the same cohort as
    :func:`make_cohort` (up to float round-off).

    Args:
        utt2spk: ``{utt: speaker}`` of the cohort utterances; each must be fed exactly once (keys outside it are
            ignored, as :func:`make_cohort` ignores embeddings it does not need).
    """

    def __init__(self, utt2spk: Mapping[str, str]):
        if not utt2spk:
            raise ValueError("the cohort needs utterances: utt2spk is empty")
        self.utt2spk = utt2spk
        self.speakers = sorted(set(utt2spk.values()))
        self._row = {s: i for i, s in enumerate(self.speakers)}
        index = torch.tensor([self._row[s] for s in utt2spk.values()])  # (U,)
        self.expected = torch.bincount(index, minlength=len(self.speakers))  # (S,) utterances per speaker
        self.counts = torch.zeros(len(self.speakers), dtype=torch.long)  # (S,) utterances seen
        self.sums: torch.Tensor | None = None  # (S, E) float64 sums of normalised embeddings

    def update(self, keys: Sequence[str], embeddings: torch.Tensor) -> None:
        """Add utterances: ``keys`` (``n``) and their ``(n, E)`` raw embeddings."""
        embeddings = torch.as_tensor(embeddings)
        if embeddings.dim() != 2 or embeddings.shape[0] != len(keys):
            raise ValueError(f"embeddings have shape {tuple(embeddings.shape)}; expected ({len(keys)}, E)")
        keep = [j for j, k in enumerate(keys) if k in self.utt2spk]
        if not keep:
            return
        x = F.normalize(embeddings[keep].float(), dim=-1).double()  # (n, E)
        index = torch.tensor([self._row[self.utt2spk[keys[j]]] for j in keep])  # (n,)
        if self.sums is None:
            self.sums = torch.zeros(len(self.speakers), x.shape[1], dtype=torch.float64)
        elif x.shape[1] != self.sums.shape[1]:
            raise ValueError(f"embeddings of dimension {x.shape[1]}; earlier ones had {self.sums.shape[1]}")
        self.sums.index_add_(0, index, x)
        self.counts += torch.bincount(index, minlength=len(self.speakers))

    def finalize(self) -> Cohort:
        """The :class:`Cohort`; every utterance of ``utt2spk`` must have been fed exactly once."""
        wrong = (self.counts != self.expected).nonzero().reshape(-1).tolist()
        if wrong:
            detail = ", ".join(f"{self.speakers[i]} ({int(self.counts[i])} of {int(self.expected[i])})"
                               for i in wrong[:5])
            raise KeyError(f"cohort embeddings fed for {len(wrong)} speakers do not match utt2spk (utterances seen of "
                           f"expected: {detail}); feed each cohort utterance exactly once")
        mean = self.sums.sum(dim=0) / self.counts.sum()  # (E,)
        rows = self.sums / self.counts.unsqueeze(1) - mean  # (S, E)
        cohort = F.normalize(rows, dim=-1).float()
        logger.info("AS-norm cohort: %d speakers from %d utterances (streamed)", len(self.speakers),
                    int(self.counts.sum()))
        return Cohort(embeddings=cohort, mean=mean.float(), speakers=list(self.speakers))


def cohort_from_shards(shards: Iterable, utt2spk: Mapping[str, str]) -> Cohort:
    """The AS-norm cohort of :func:`make_cohort`, streamed over shards of embeddings (a
    :class:`~svlib.scoring.extract.ShardCache`'s :meth:`~svlib.scoring.extract.ShardCache.iter_shards`, or any
    iterable of objects with ``keys`` (``n``) and ``embeddings`` ``(n, E)``), one in memory at a time."""
    accumulator = CohortAccumulator(utt2spk)
    for shard in shards:
        accumulator.update(shard.keys, shard.embeddings)
    return accumulator.finalize()


def center_and_normalize(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``normalize(normalize(x) − mean)`` row-wise: ``(N, E)``, ``(E,)`` → ``(N, E)``."""
    return F.normalize(F.normalize(x, dim=-1) - mean, dim=-1)


def cohort_top_stats(
    x: torch.Tensor, cohort: torch.Tensor, top_n: int = 300, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each row's ``top_n`` highest cohort scores (``μ``, ``σ`` of AS-norm).

    Args:
        x: ``(N, E)`` normalised, centred embeddings.
        cohort: ``(S, E)`` normalised cohort embeddings.
        top_n: number of closest cohort speakers ``N`` (capped at ``S``; at least 2).
        chunk_size: rows of ``x`` scored at a time (memory: ``chunk_size × S`` scores).

    Returns:
        ``(mean (N,), std (N,))``, the std unbiased (divides by ``top_n − 1``).
    """
    k = min(int(top_n), cohort.shape[0])
    if k < 2:
        raise ValueError(
            f"AS-norm needs at least 2 cohort scores per side; top_n={top_n}, cohort size {cohort.shape[0]}"
        )
    means, stds = [], []
    for start in range(0, x.shape[0], chunk_size):
        scores = x[start : start + chunk_size] @ cohort.T  # (chunk, S)
        top = scores.topk(k, dim=-1).values  # (chunk, k)
        means.append(top.mean(dim=-1))
        stds.append(top.std(dim=-1))
    return torch.cat(means), torch.cat(stds)


def as_norm(
    scores: torch.Tensor,
    enroll_mean: torch.Tensor,
    enroll_std: torch.Tensor,
    test_mean: torch.Tensor,
    test_std: torch.Tensor,
) -> torch.Tensor:
    """The AS-norm score ``½ ((s − μ_e)/σ_e + (s − μ_t)/σ_t)``; all arguments ``(n_trials,)``."""
    return 0.5 * ((scores - enroll_mean) / enroll_std + (scores - test_mean) / test_std)


@dataclass
class ASNormResult:
    """Per-trial AS-norm outputs, all ``(n_trials,)``; the cohort means are QMF quality features."""

    scores: torch.Tensor
    """normalised scores ``s_norm``."""
    raw_scores: torch.Tensor
    """cosine scores ``s`` of the centred embeddings."""
    enroll_mean: torch.Tensor
    enroll_std: torch.Tensor
    test_mean: torch.Tensor
    test_std: torch.Tensor


def asnorm_scores(
    emb: Mapping[str, torch.Tensor],
    trials: Iterable,
    cohort: Cohort,
    top_n: int = 300,
    chunk_size: int = 4096,
) -> ASNormResult:
    """AS-norm scores of a trial list.

    Args:
        emb: ``{key: (E,) raw embedding}`` for every enroll and test key (enrolled speakers from
            :func:`~svlib.scoring.extract.enroll_embeddings` included).
        trials: a :class:`~svlib.data.lists.TrialList` (``Trial`` objects) or ``[(enroll, test[, label]), ...]``.
        cohort: from :func:`make_cohort`.
        top_n: closest cohort speakers per side (300 in the paper's recipe).
        chunk_size: utterances (and trials ×16) processed at a time.

    Returns:
        An :class:`ASNormResult`.
    """
    keys, e_idx, t_idx = index_trials(trials)
    x = center_and_normalize(stack_embeddings(emb, keys), cohort.mean)  # (N, E)
    mean, std = cohort_top_stats(x, cohort.embeddings, top_n, chunk_size)  # (N,), (N,)
    raw = paired_dot(x, e_idx, t_idx, chunk_size=16 * chunk_size)  # (n_trials,)
    normed = as_norm(raw, mean[e_idx], std[e_idx], mean[t_idx], std[t_idx])
    return ASNormResult(normed, raw, mean[e_idx], std[e_idx], mean[t_idx], std[t_idx])
