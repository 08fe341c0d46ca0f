"""``svlib embed`` and ``svlib score``: thin command-line wrappers over :mod:`svlib.scoring`.

Wire them into the ``svlib`` command with :func:`add_scoring_parsers`. ``svlib score`` prints EER (%),
minDCF(0.01) and minDCF(0.05) for cosine scoring, and for AS-norm and AS-norm + QMF when asked (Table 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import torch
import yaml
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
    from svlib.scoring.evaluate import fit_qmf, score_trials, utterance_durations
    from svlib.scoring.qmf import QMF

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

    # A TrialList of Trial(enroll, test, target); paths in the list become utterance ids (extension dropped),
    # as do the utterances of the enrollment map.
    trials = read_trials(args.trials, enroll_map=args.enroll_map)
    emb = _embeddings(get_model, args.wav_scp, args.embeddings, "evaluation set", args)
    payload = {"model": args.model, "trials": args.trials, "max_seconds": args.max_seconds}
    if not args.asnorm:
        return {**payload, **score_trials(emb, trials).to_dict()}

    if not args.cohort_utt2spk:
        raise ValueError("--asnorm needs --cohort-utt2spk (training-set speakers) and cohort embeddings")
    utt2spk = read_key_value(args.cohort_utt2spk, "utt2spk")
    cohort_emb = _embeddings(get_model, args.cohort_wav_scp, args.cohort_embeddings, "cohort", args)
    qmf = durations = None
    if args.qmf:
        if not args.wav_scp or not args.cohort_wav_scp:
            raise ValueError("QMF needs utterance durations: give --wav-scp and --cohort-wav-scp with the audio paths")
        durations = utterance_durations(read_key_value(args.wav_scp, "wav.scp"), emb, args.max_seconds)
        if args.qmf_model:
            qmf = QMF.load(args.qmf_model)
        else:
            qmf = fit_qmf(
                lambda sources: _extract(get_model(), sources, args),
                cohort_emb,
                utt2spk,
                read_key_value(args.cohort_wav_scp, "wav.scp"),
                n_trials=args.calibration_trials,
                top_n=args.top_n,
                seed=args.calibration_seed,
                max_seconds=args.max_seconds,
            )
            if args.qmf_out:
                qmf.save(args.qmf_out)
    result = score_trials(
        emb, trials, cohort_emb=cohort_emb, cohort_utt2spk=utt2spk, top_n=args.top_n, qmf=qmf, durations=durations
    )
    return {**payload, "top_n": args.top_n, **result.to_dict()}


def _code(text: str) -> str:
    """``text`` as a record-name code: lower case, characters other than letters, digits and ``_+-`` made ``-``."""
    return re.sub(r"[^a-z0-9_+-]", "-", text.lower()).strip("-_+") or "x"


def _record_target(args: argparse.Namespace) -> tuple[str, str]:
    """``(profile, name)`` of the ``eval`` record of this run, worked out before any scoring (a bad flag fails
    before minutes of extraction).

    The profile: ``--profile``, else the one in the model's ``done.json`` (written by ``svlib train``), else
    ``custom``. The name: ``--record``; else, with ``--system``, the book's convention
    (:func:`svlib.book.eval_record_name`) from ``--system``, ``--stage`` (default: the model's stage from
    ``done.json``), ``--train-name`` (default: the profile's ``train_name`` in ``configs/<profile>/data.yaml``) and
    ``--test-name`` (default: the trial file's name); else ``<model folder>.<trial file>``, kept in the store but
    not placed in Tables 1–3.
    """
    from svlib.book import STAGES, eval_record_name
    from svlib.profiles import CONFIG_ROOT
    from svlib.train import find_done

    file = find_done(args.model) if args.model else None
    done = json.loads(file.read_text()) if file is not None else {}
    profile = args.profile or done.get("profile") or "custom"
    if args.record:
        return profile, args.record
    trials = _code(Path(args.trials).name.split(".")[0])
    if not args.system:
        source = Path(args.model or args.embeddings or "embeddings")
        parts = source.parts[-3:-1] if source.name == "model" else (source.parent.name, source.stem)
        return profile, re.sub(r"[^A-Za-z0-9_.+@=-]", "-", ".".join(p for p in parts if p) + f".{trials}").strip(".")
    stage = args.stage or next((s for s in (done.get("stage"), str(done.get("stage", "")).removeprefix("pruned_"))
                                if s in STAGES), None)
    if stage is None:
        raise ValueError(f"--system {args.system}: the model's last stage is unknown ({done.get('stage')!r} in its "
                         f"done.json): give --stage, one of {list(STAGES)}")
    train = args.train_name
    if train is None:
        data = CONFIG_ROOT / profile / "data.yaml"
        train = (yaml.safe_load(data.read_text()) or {}).get("train_name") if data.is_file() else None
    return profile, eval_record_name(args.system, train or "custom", stage, args.test_name or trials)


def _cmd_score(args: argparse.Namespace) -> int:
    record = None if args.no_record else _record_target(args)
    try:
        payload = _score(args)
    except KeyError as e:  # a key missing from embeddings, durations or lists: a user-input error
        raise ValueError(e.args[0] if e.args else str(e)) from e
    if record is not None:
        from svlib.results import default_results_dir, record_result

        profile, name = record
        path = record_result(args.results_dir or default_results_dir(), kind="eval", name=name, profile=profile,
                             metrics=payload["results"],
                             extra={k: v for k, v in payload.items() if k != "results"} | {"trials": str(args.trials)})
        payload["record"] = str(path)
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    first = next(iter(payload["results"].values()))
    print(f"{args.trials}: {first['n_trials']} trials ({first['n_targets']} targets)")
    print(f"{'scoring':<14}{'EER (%)':>10}{'minDCF(0.01)':>15}{'minDCF(0.05)':>15}")
    for name, r in payload["results"].items():
        print(f"{name:<14}{r['eer_percent']:>10.3f}{r['min_dcf_0.01']:>15.4f}{r['min_dcf_0.05']:>15.4f}")
    if record is not None:
        print(f"recorded as eval/{record[1]} ({record[0]} profile): {payload['record']}")
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
    p.add_argument("--record", metavar="NAME", help="name of the eval record (default: from --system/--stage/"
                   "--train-name/--test-name, else <model folder>.<trial file>)")
    p.add_argument("--system", help="Table 2 model of the record name: ECAPA-TDNN, MFA, Adapter_MFA, "
                   "LoRA_Adapter_MFA, optionally -pruned<NN> (places the record in the book's Tables 1-3)")
    p.add_argument("--stage", help="last stage of the model: s1_freeze, s2_joint, s3_lmft, s3_lmft_after_s1 "
                   "(default: from the model's done.json)")
    p.add_argument("--train-name", help="training-data code: vox2, vox2+vb2, cnceleb, ... (default: the profile's "
                   "train_name in configs/<profile>/data.yaml)")
    p.add_argument("--test-name", help="trial-list code: vox1-o, vox1-e, vox1-h, cnceleb, ... (default: the trial "
                   "file's name)")
    from svlib.cli import add_record_args

    add_record_args(p, "the eval record (EER, minDCF per scoring)",
                    profile_default="the model's, from the done.json that svlib train wrote, else custom")
    _add_extraction_args(p)
    p.set_defaults(func=_cmd_score)
