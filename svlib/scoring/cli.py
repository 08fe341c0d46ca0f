"""``svlib embed`` and ``svlib score``: thin command-line wrappers over :mod:`svlib.scoring`.

Wire them into the ``svlib`` command with :func:`add_scoring_parsers`. ``svlib score`` prints EER (%),
minDCF(0.01) and minDCF(0.05) for cosine scoring, and for AS-norm and AS-norm + QMF when asked (Table 1).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

__all__ = ["add_scoring_parsers"]


# ----------------------------------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------------------------------
def _load_speaker_model(args: argparse.Namespace):
    """A saved svlib model directory, or an authors' ``model_*.pth`` (read with the authors' key layout)."""
    path = Path(args.model)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        from svlib.scoring.authors import load_authors_checkpoint

        return load_authors_checkpoint(path, args.encoder_config, trust_pickle=args.trust_pickle)
    from svlib.model import load_model

    return load_model(path)


def _extract(model, utt2path, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    from svlib.scoring.extract import extract_embeddings

    return extract_embeddings(
        model,
        utt2path,
        batch_seconds=args.batch_seconds,
        max_seconds=args.max_seconds,
        device=args.device,
        bf16=not args.no_bf16,
        progress=not args.no_progress,
    )


def _embeddings(model_getter, wav_scp: str | None, emb_file: str | None, what: str, args) -> dict[str, torch.Tensor]:
    """Embeddings read from ``emb_file`` or extracted from the utterances of ``wav_scp``."""
    from svlib.data.lists import read_key_value

    if emb_file:
        return load_file(emb_file)
    if not wav_scp:
        raise ValueError(f"{what}: give a wav.scp to extract embeddings from, or a .safetensors file of embeddings")
    return _extract(model_getter(), read_key_value(wav_scp, "wav.scp"), args)


def _durations(wav_scp: str | None, keys, max_seconds: float) -> dict[str, float]:
    from svlib.data.lists import read_key_value
    from svlib.scoring.extract import probe_duration

    if not wav_scp:
        raise ValueError("QMF needs utterance durations: give --wav-scp (and --cohort-wav-scp) with the audio paths")
    utt2path = read_key_value(wav_scp, "wav.scp")
    missing = sorted(set(keys) - set(utt2path))
    if missing:
        raise ValueError(f"{wav_scp}: no path for {len(missing)} utterances, e.g. {missing[:5]}")
    return {k: min(probe_duration(utt2path[k]), max_seconds) for k in keys}


def _add_extraction_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seconds", type=float, default=60.0, help="crop each utterance to its first N s (default 60)")
    p.add_argument("--batch-seconds", type=float, default=120.0, help="padded audio seconds per batch (default 120)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-bf16", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--encoder-config", default="w2v-bert-2.0", help="encoder config for an authors' .pth model")
    p.add_argument("--trust-pickle", action="store_true", help="allow pickled objects in an authors' .pth file")


def _default_device(args: argparse.Namespace) -> None:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------------------------
# svlib embed
# ----------------------------------------------------------------------------------------------------------------
def _cmd_embed(args: argparse.Namespace) -> int:
    from svlib.data.lists import read_key_value

    _default_device(args)
    emb = _extract(_load_speaker_model(args), read_key_value(args.wav_scp, "wav.scp"), args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in emb.items()}, str(out), metadata={"model": str(args.model)})
    print(f"wrote {len(emb)} embeddings to {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# svlib score
# ----------------------------------------------------------------------------------------------------------------
def _score(args: argparse.Namespace) -> dict:
    from svlib.data.lists import read_key_value, read_trials
    from svlib.scoring.extract import cosine_scores, enroll_embeddings
    from svlib.scoring.metrics import evaluate_scores
    from svlib.scoring.norm import asnorm_scores, make_cohort
    from svlib.scoring.qmf import (
        QMF,
        calibration_features,
        embedding_magnitudes,
        make_calibration_trials,
        trial_quality_features,
    )

    if args.qmf and not args.asnorm:
        raise ValueError("--qmf uses the AS-norm cohort statistics: add --asnorm and its cohort options")
    _default_device(args)
    model = None

    def get_model():
        nonlocal model
        if model is None:
            if not args.model:
                raise ValueError("--model is needed to extract embeddings")
            model = _load_speaker_model(args)
        return model

    # A TrialList of Trial(enroll, test, target); the scoring functions take it as it is. Paths in the list become
    # utterance ids (extension dropped), as do the utterances of the enrollment map.
    trials = read_trials(args.trials, enroll_map=args.enroll_map)
    enroll_map = trials.enroll_map
    labels = trials.labels()
    emb = _embeddings(get_model, args.wav_scp, args.embeddings, "evaluation set", args)
    utt_emb = dict(emb)
    if enroll_map is not None:
        emb = {**emb, **enroll_embeddings(emb, enroll_map)}
    payload = {
        "model": args.model,
        "trials": args.trials,
        "max_seconds": args.max_seconds,
        "results": {"cosine": evaluate_scores(cosine_scores(emb, trials), labels)},
    }
    if not args.asnorm:
        return payload

    if not args.cohort_utt2spk:
        raise ValueError("--asnorm needs --cohort-utt2spk (training-set speakers) and cohort embeddings")
    utt2spk = read_key_value(args.cohort_utt2spk, "utt2spk")
    cohort_emb = _embeddings(get_model, args.cohort_wav_scp, args.cohort_embeddings, "cohort", args)
    cohort = make_cohort(cohort_emb, utt2spk)
    result = asnorm_scores(emb, trials, cohort, top_n=args.top_n)
    payload["top_n"] = args.top_n
    payload["cohort_speakers"] = len(cohort.speakers)
    payload["results"]["asnorm"] = evaluate_scores(result.scores, labels)
    if not args.qmf:
        return payload

    # QMF: durations and magnitudes of the evaluation side (enrollments: summed durations, mean magnitudes).
    durations = _durations(args.wav_scp, utt_emb, args.max_seconds)
    magnitudes = embedding_magnitudes(utt_emb)
    if enroll_map is not None:
        for spk, utts in enroll_map.items():
            durations[spk] = sum(durations[u] for u in utts)
            magnitudes[spk] = sum(magnitudes[u] for u in utts) / len(utts)
    if args.qmf_model:
        qmf = QMF.load(args.qmf_model)
    else:
        cohort_durations = _durations(args.cohort_wav_scp, utt2spk, args.max_seconds)
        cal = make_calibration_trials(utt2spk, cohort_durations, args.calibration_trials, seed=args.calibration_seed)
        crops = {k: s for k, s in cal.sources(read_key_value(args.cohort_wav_scp, "wav.scp")).items() if k not in cohort_emb}
        cal_emb = {**{k: cohort_emb[k] for k in cal.segments if k in cohort_emb}, **_extract(get_model(), crops, args)}
        qmf = QMF().fit(*calibration_features(cal, cal_emb, cohort, top_n=args.top_n))
        if args.qmf_out:
            qmf.save(args.qmf_out)
    features = trial_quality_features(
        trials, result.scores, result.enroll_mean, result.test_mean, magnitudes, durations
    )
    payload["results"]["asnorm+qmf"] = evaluate_scores(qmf.predict(features), labels)
    payload["qmf"] = qmf.to_dict()
    return payload


def _cmd_score(args: argparse.Namespace) -> int:
    try:
        payload = _score(args)
    except KeyError as e:  # a key missing from embeddings, durations or lists: a user-input error
        raise ValueError(e.args[0] if e.args else str(e)) from e
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    first = next(iter(payload["results"].values()))
    print(f"{args.trials}: {first['n_trials']} trials ({first['n_targets']} targets)")
    print(f"{'scoring':<14}{'EER (%)':>10}{'minDCF(0.01)':>15}{'minDCF(0.05)':>15}")
    for name, r in payload["results"].items():
        print(f"{name:<14}{r['eer_percent']:>10.3f}{r['min_dcf_0.01']:>15.4f}{r['min_dcf_0.05']:>15.4f}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------------------------
def add_scoring_parsers(subparsers) -> None:
    """Add the ``embed`` and ``score`` subcommands to the ``svlib`` command's subparsers."""
    p = subparsers.add_parser("embed", help="speaker embeddings of whole utterances -> .safetensors")
    p.add_argument("--model", required=True, help="saved svlib model directory, or an authors' model_*.pth")
    p.add_argument("--wav-scp", required=True, help="'utt path' lines")
    p.add_argument("--out", required=True, help="output FILE.safetensors ({utt: (E,) embedding})")
    _add_extraction_args(p)
    p.set_defaults(func=_cmd_embed)

    p = subparsers.add_parser("score", help="EER and minDCF of a trial list (cosine, AS-norm, QMF)")
    p.add_argument("--model", help="saved svlib model directory, or an authors' model_*.pth")
    p.add_argument("--wav-scp", help="'utt path' lines of the evaluation utterances")
    p.add_argument("--embeddings", help="precomputed evaluation embeddings (.safetensors from `svlib embed`)")
    p.add_argument("--trials", required=True, help="trial list: Kaldi 'enroll test target|nontarget', VoxCeleb '1|0 a b' or CN-Celeb "
                   "'enroll_id test 1|0' lines (format from the first line; paths become ids without extension)")
    p.add_argument("--enroll-map", help="'enroll_id utt1 utt2 ...' lines (CN-Celeb multi-utterance enrollment)")
    p.add_argument("--asnorm", action="store_true", help="also report AS-norm scores")
    p.add_argument("--cohort-wav-scp", help="training-set 'utt path' lines (cohort, QMF calibration)")
    p.add_argument("--cohort-embeddings", help="precomputed cohort embeddings (.safetensors)")
    p.add_argument("--cohort-utt2spk", help="training-set 'utt speaker' lines")
    p.add_argument("--top-n", type=int, default=300, help="AS-norm top-N cohort scores per side (default 300)")
    p.add_argument("--qmf", action="store_true", help="also report AS-norm + QMF calibrated scores")
    p.add_argument("--qmf-model", help="a fitted QMF (.json) instead of fitting on calibration trials")
    p.add_argument("--qmf-out", help="write the fitted QMF to this .json")
    p.add_argument("--calibration-trials", type=int, default=10_000, help="QMF calibration trials (default 10000)")
    p.add_argument("--calibration-seed", type=int, default=0, help="seed of the calibration-trial draw")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_extraction_args(p)
    p.set_defaults(func=_cmd_score)
