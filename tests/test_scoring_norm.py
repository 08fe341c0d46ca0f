"""AS-norm: the vectorised, chunked implementation against a slow per-trial loop written here."""

import math
from types import SimpleNamespace

import pytest
import torch

from svlib.scoring.norm import asnorm_scores, cohort_top_stats, make_cohort


def slow_cohort(emb, utt2spk):
    """Per-speaker mean of centred unit embeddings, normalised; returned as {speaker: vector} and the mean."""
    utts = list(utt2spk)
    mean = sum(emb[u] / emb[u].norm() for u in utts) / len(utts)
    cohort = {}
    for spk in sorted(set(utt2spk.values())):
        members = [emb[u] / emb[u].norm() - mean for u in utts if utt2spk[u] == spk]
        v = sum(members) / len(members)
        cohort[spk] = v / v.norm()
    return cohort, mean


def slow_asnorm(emb, trials, utt2spk, top_n):
    cohort, mean = slow_cohort(emb, utt2spk)

    def unit(x):
        x = x / x.norm() - mean
        return x / x.norm()

    def side_stats(x):
        scores = sorted((float(unit(x) @ c) for c in cohort.values()), reverse=True)[:top_n]
        mu = sum(scores) / len(scores)
        sigma = math.sqrt(sum((s - mu) ** 2 for s in scores) / (len(scores) - 1))
        return mu, sigma

    out = []
    for enroll, test, *_ in trials:
        s = float(unit(emb[enroll]) @ unit(emb[test]))
        mu_e, sd_e = side_stats(emb[enroll])
        mu_t, sd_t = side_stats(emb[test])
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    dim, n_spk = 16, 40
    centres = torch.randn(n_spk, dim, generator=gen) + 0.5  # an offset the training mean removes
    utt2spk, emb = {}, {}
    for s in range(n_spk):
        for u in range(1 + s % 3):  # 1–3 utterances per speaker
            key = f"train_s{s}_u{u}"
            utt2spk[key] = f"s{s}"
            emb[key] = centres[s] + 0.3 * torch.randn(dim, generator=gen)
    tests = {f"test{i}": torch.randn(dim, generator=gen) for i in range(12)}
    emb.update(tests)
    keys = list(tests)
    trials = [(keys[i % 12], keys[(i * 5 + 1) % 12], i % 2) for i in range(30)]
    return emb, utt2spk, trials


@pytest.mark.parametrize("top_n, chunk_size", [(10, 3), (5, 1000), (1000, 4)])
def test_asnorm_matches_slow_loop(data, top_n, chunk_size):
    emb, utt2spk, trials = data
    cohort = make_cohort(emb, utt2spk)
    assert cohort.embeddings.shape == (40, 16)
    result = asnorm_scores(emb, trials, cohort, top_n=top_n, chunk_size=chunk_size)
    expected = slow_asnorm(emb, trials, utt2spk, top_n)
    torch.testing.assert_close(result.scores.double(), expected, atol=1e-5, rtol=1e-5)
    assert result.enroll_mean.shape == (len(trials),)


def test_cohort_matches_slow_cohort(data):
    emb, utt2spk, _ = data
    cohort = make_cohort(emb, utt2spk)
    slow, mean = slow_cohort(emb, utt2spk)
    torch.testing.assert_close(cohort.mean, mean)
    torch.testing.assert_close(cohort.embeddings, torch.stack([slow[s] for s in cohort.speakers]))


def test_top_stats_need_two_scores():
    x = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    with pytest.raises(ValueError, match="at least 2"):
        cohort_top_stats(x, x[:1], top_n=300)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_cohort_equals_make_cohort_in_any_shard_order(data, seed):
    """The one-pass CohortAccumulator over shards (any order, any sizes) is make_cohort to 1e-6."""
    from svlib.scoring.norm import CohortAccumulator, cohort_from_shards

    emb, utt2spk, _ = data
    expected = make_cohort(emb, utt2spk)
    gen = torch.Generator().manual_seed(seed)
    keys = [list(utt2spk)[i] for i in torch.randperm(len(utt2spk), generator=gen)] + ["test0"]  # + a non-cohort key
    cuts = sorted(torch.randperm(len(keys) - 1, generator=gen)[:5].add(1).tolist())
    shards = [SimpleNamespace(keys=part, embeddings=torch.stack([emb[k] for k in part]))
              for part in (keys[a:b] for a, b in zip([0, *cuts], [*cuts, len(keys)]))]
    cohort = cohort_from_shards(shards, utt2spk)
    assert cohort.speakers == expected.speakers
    torch.testing.assert_close(cohort.mean, expected.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(cohort.embeddings, expected.embeddings, rtol=0, atol=1e-6)

    accumulator = CohortAccumulator(utt2spk)
    accumulator.update(keys[:-3], torch.stack([emb[k] for k in keys[:-3]]))
    with pytest.raises(KeyError, match="exactly once"):
        accumulator.finalize()  # two cohort utterances not fed
