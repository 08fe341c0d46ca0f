"""``svlib embed`` and ``svlib score``: thin command-line wrappers over :mod:`svlib.scoring`.

Wire them into the ``svlib`` command with :func:`add_scoring_parsers`. ``svlib score`` prints EER (%),
minDCF(0.01) and minDCF(0.05) for cosine scoring, and for AS-norm and AS-norm + QMF when asked (Table 1).

Both embed through embedding caches on disk (:func:`svlib.scoring.extract.extract_to_shards`): under
``--cache-dir DIR`` (kept: an interrupted run resumes, a later one reuses them), else in a temporary folder removed
at the end. Both run under torchrun (``torchrun --nproc_per_node N -m svlib score ...``): every rank extracts a
share of the shards of each set, then rank 0 alone scores, prints and records (or writes ``--out``); the other
ranks exit 0 without output.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file

from svlib.analysis.tables import STAGES, eval_record_name
from svlib.cli.common import add_record_args
from svlib.core.distributed import init_distributed, local_device
from svlib.core.paths import config_root, default_results_dir
from svlib.core.results import record_result
from svlib.data.lists import read_key_value, read_trials
from svlib.data.profiles import profile_cohort_dir
from svlib.model import load_model
from svlib.model.export import OnnxSpeakerModel
from svlib.scoring.authors import load_authors_checkpoint
from svlib.scoring.evaluate import calibration_crops, fit_qmf, score_trials, utterance_durations
from svlib.scoring.extract import embedding_cache, extract_cached, model_fingerprint
from svlib.scoring.norm import cohort_from_shards, make_cohort
from svlib.scoring.qmf import QMF, make_calibration_trials
from svlib.training import find_done

logger = logging.getLogger(__name__)

__all__ = ["add_parser"]


# ----------------------------------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------------------------------
def _load_speaker_model(args: argparse.Namespace):
    """A saved svlib model directory, an exported ``.onnx`` file (run by onnxruntime), or an authors'
    ``model_*.pth`` (read with the authors' key layout)."""
    path = Path(args.model)
    onnx = path.suffix == ".onnx"
    if args.backend == "onnx" and not onnx:
        raise SystemExit(f"--backend onnx: --model {path} is not an .onnx file; write one with svlib export")
    if onnx:
        if args.backend == "torch":
            raise SystemExit(f"--backend torch: --model {path} is an ONNX file; give the model directory")
        return OnnxSpeakerModel(path)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return load_authors_checkpoint(path, args.encoder_config, trust_pickle=args.trust_pickle)
    return load_model(path)


def _extraction_settings(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`svlib.scoring.extract.extract_to_shards` from the command line."""
    return dict(shard_size=args.shard_size, batch_seconds=args.batch_seconds, max_seconds=args.max_seconds,
                device=args.device, bf16=not args.no_bf16, progress=not args.no_progress)


def _add_extraction_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seconds", type=float, default=60.0, help="crop each utterance to its first N s (default 60)")
    p.add_argument("--batch-seconds", type=float, default=120.0, help="padded audio seconds per batch (default 120)")
    p.add_argument("--cache-dir", help="keep the embedding caches (shards) in this folder, one folder per model (a "
                   "cache of another model is refused): an interrupted run resumes, a later run on the same "
                   "utterances reuses them; must be shared by all torchrun ranks (default: a temporary folder, "
                   "removed at the end)")
    p.add_argument("--shard-size", type=int, default=10_000, help="utterances per cache shard (default 10000)")
    p.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--no-bf16", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="torch: a model directory; onnx: an exported .onnx file run by onnxruntime on the CPU "
                   "(svlib export); auto (default): by --model")
    p.add_argument("--encoder-config", default="w2v-bert-2.0", help="encoder config for an authors' .pth model")
    p.add_argument("--trust-pickle", action="store_true", help="allow pickled objects in an authors' .pth file")


def _default_device(args: argparse.Namespace) -> None:
    if args.device is None:
        args.device = str(local_device())  # cuda:LOCAL_RANK under torchrun


# ----------------------------------------------------------------------------------------------------------------
# svlib embed
# ----------------------------------------------------------------------------------------------------------------
def _cmd_embed(args: argparse.Namespace) -> int:
    _default_device(args)
    utt2path = read_key_value(args.wav_scp, "wav.scp")
    rank, _ = init_distributed(args.device)
    with embedding_cache(args.cache_dir, args.device) as root:
        cache = extract_cached(_load_speaker_model(args), utt2path, root, **_extraction_settings(args))
        if rank != 0:
            return 0
        emb = cache.to_dict()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in emb.items()}, str(out), metadata={"model": str(args.model)})
    print(f"wrote {len(emb)} embeddings to {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# svlib score
# ----------------------------------------------------------------------------------------------------------------
def _cohort_files(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(wav.scp, utt2spk)`` of the AS-norm cohort: ``--cohort-wav-scp`` / ``--cohort-utt2spk``, else those of
    ``--cohort-dir``; with ``--asnorm`` and ``--profile`` but no cohort flag at all, those of the profile's
    ``cohort_dir`` (``configs/<profile>/data.yaml``, :func:`svlib.data.profiles.profile_cohort_dir`)."""
    cohort_dir = args.cohort_dir
    if (cohort_dir is None and args.asnorm and args.profile
            and not (args.cohort_wav_scp or args.cohort_utt2spk or args.cohort_embeddings)):
        cohort_dir = profile_cohort_dir(args.profile)
        logger.info("AS-norm cohort: %s (cohort_dir of the %s profile)", cohort_dir, args.profile)
    wav_scp = args.cohort_wav_scp or (str(Path(cohort_dir) / "wav.scp") if cohort_dir else None)
    utt2spk = args.cohort_utt2spk or (str(Path(cohort_dir) / "utt2spk") if cohort_dir else None)
    return wav_scp, utt2spk


def _score(args: argparse.Namespace) -> dict | None:
    """Extract (on every rank), then score (rank 0): the payload, or ``None`` on the other torchrun ranks."""
    if args.qmf and not args.asnorm:
        raise ValueError("--qmf uses the AS-norm cohort statistics: add --asnorm and its cohort options")
    cohort_scp_file, utt2spk_file = _cohort_files(args)
    if args.asnorm and not utt2spk_file:
        raise ValueError("--asnorm needs a cohort (training-set speakers): --cohort-dir DIR, or --cohort-utt2spk with "
                         "--cohort-wav-scp or --cohort-embeddings, or --profile P whose data.yaml names a cohort_dir")
    if not args.embeddings and not args.wav_scp:
        raise ValueError("evaluation set: give --wav-scp to extract embeddings from, or --embeddings (.safetensors)")
    if args.qmf and not args.wav_scp:
        raise ValueError("QMF needs the durations of the evaluation utterances: give --wav-scp with their audio paths")
    if args.bootstrap:
        _eval_utt2spk(args)  # fail before the extraction
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
    eval_scp = read_key_value(args.wav_scp, "wav.scp") if args.wav_scp else None
    settings = _extraction_settings(args)
    rank, _ = init_distributed(args.device)
    with embedding_cache(args.cache_dir, args.device) as root:

        def extract(utt2path):
            if "model_id" not in settings:
                settings["model_id"] = model_fingerprint(get_model())  # once for the three caches
            return extract_cached(get_model(), utt2path, root, **settings)

        # 1. Extraction, shared by the torchrun ranks: evaluation set, cohort, QMF calibration crops.
        eval_cache = None if args.embeddings else extract(eval_scp)
        utt2spk = cohort_scp = cohort_emb = calibration = crop_cache = None
        if args.asnorm:
            utt2spk = read_key_value(utt2spk_file, "utt2spk")
            cohort_scp = read_key_value(cohort_scp_file, "wav.scp") if cohort_scp_file else None
            if args.cohort_embeddings:
                cohort_emb = load_file(args.cohort_embeddings)
            elif cohort_scp is None:
                raise ValueError("cohort: give --cohort-wav-scp (or --cohort-dir) to extract embeddings from, or "
                                 "--cohort-embeddings (.safetensors)")
            else:
                missing = sorted(set(utt2spk) - set(cohort_scp))
                if missing:
                    raise KeyError(f"{cohort_scp_file} lacks {len(missing)} utterances of {utt2spk_file}, "
                                   f"e.g. {missing[:5]}")
                cohort_emb = extract({u: cohort_scp[u] for u in utt2spk})
        if args.qmf and not args.qmf_model:
            if cohort_scp is None:
                raise ValueError("QMF calibration crops training utterances: give --cohort-wav-scp or --cohort-dir "
                                 "with their audio paths (or --qmf-model with a fitted QMF)")
            durations = (cohort_emb.durations() if not isinstance(cohort_emb, dict)
                         else utterance_durations(cohort_scp, utt2spk, args.max_seconds))
            calibration = make_calibration_trials(utt2spk, durations, args.calibration_trials,
                                                  seed=args.calibration_seed)
            crops = calibration_crops(calibration, cohort_scp)
            crop_cache = extract(crops) if crops else None
        if rank != 0:
            return None

        # 2. Scoring, on rank 0 only.
        emb = load_file(args.embeddings) if args.embeddings else eval_cache.to_dict()
        payload = {"model": args.model, "trials": args.trials, "max_seconds": args.max_seconds}
        if not args.asnorm:
            return {**payload, **_with_intervals(score_trials(emb, trials), trials, args).to_dict()}
        cached = not isinstance(cohort_emb, dict)
        cohort = cohort_from_shards(cohort_emb.iter_shards(), utt2spk) if cached else make_cohort(cohort_emb, utt2spk)
        qmf = durations = None
        if args.qmf:
            if eval_cache is not None:
                durations = eval_cache.durations()
            else:
                durations = utterance_durations(eval_scp, emb, args.max_seconds)
            if args.qmf_model:
                qmf = QMF.load(args.qmf_model)
            else:
                qmf = fit_qmf(lambda sources: crop_cache.load(sources), cohort_emb, utt2spk, cohort_scp,
                              top_n=args.top_n, max_seconds=args.max_seconds, cohort=cohort, calibration=calibration)
                if args.qmf_out:
                    qmf.save(args.qmf_out)
        result = score_trials(emb, trials, cohort=cohort, top_n=args.top_n, qmf=qmf, durations=durations)
        return {**payload, "top_n": args.top_n, **_with_intervals(result, trials, args).to_dict()}


def _eval_utt2spk(args: argparse.Namespace) -> str:
    """The evaluation set's utt2spk for ``--bootstrap``: ``--utt2spk``, else the one next to ``--wav-scp``."""
    path = args.utt2spk or (str(Path(args.wav_scp).with_name("utt2spk")) if args.wav_scp else None)
    if path is None or not Path(path).is_file():
        raise ValueError(f"--bootstrap resamples speakers: give --utt2spk (no utt2spk at {path})")
    return path


def _with_intervals(result, trials, args: argparse.Namespace):
    """``result`` with speaker-level bootstrap intervals when ``--bootstrap N`` asks for them."""
    if args.bootstrap:
        result.add_intervals(trials, read_key_value(_eval_utt2spk(args), "utt2spk"), n_boot=args.bootstrap)
    return result


def _code(text: str) -> str:
    """``text`` as a record-name code: lower case, characters other than letters, digits and ``_+-`` made ``-``."""
    return re.sub(r"[^a-z0-9_+-]", "-", text.lower()).strip("-_+") or "x"


def _record_target(args: argparse.Namespace) -> tuple[str, str]:
    """``(profile, name)`` of the ``eval`` record of this run, worked out before any scoring (a bad flag fails
    before minutes of extraction).

    The profile: ``--profile``, else the one in the model's ``done.json`` (written by ``svlib train``), else
    ``custom``. The name: ``--record``; else, with ``--system``, the book's convention
    (:func:`svlib.analysis.tables.eval_record_name`) from ``--system``, ``--stage`` (default: the model's stage from
    ``done.json``), ``--train-name`` (default: the profile's ``train_name`` in ``configs/<profile>/data.yaml``) and
    ``--test-name`` (default: the trial file's name); else ``<model folder>.<trial file>``, kept in the store but
    not placed in Tables 1–3.
    """
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
        data = config_root() / profile / "data.yaml"
        train = (yaml.safe_load(data.read_text()) or {}).get("train_name") if data.is_file() else None
    return profile, eval_record_name(args.system, train or "custom", stage, args.test_name or trials)


def _cmd_score(args: argparse.Namespace) -> int:
    record = None if args.no_record else _record_target(args)
    try:
        payload = _score(args)
    except KeyError as e:  # a key missing from embeddings, durations or lists: a user-input error
        raise ValueError(e.args[0] if e.args else str(e)) from e
    if payload is None:  # a torchrun rank other than 0: it extracted its shards; rank 0 reports
        return 0
    if record is not None:
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
        if "eer_percent_low" in r:
            ci = [f"[{r[f'{k}_low']:.{d}f}, {r[f'{k}_high']:.{d}f}]" for k, d in
                  (("eer_percent", 2), ("min_dcf_0.01", 3), ("min_dcf_0.05", 3))]
            print(f"{'':<14}{ci[0]:>10}{ci[1]:>15}{ci[2]:>15}")
    if "bootstrap" in payload:
        b = payload["bootstrap"]
        print(f"intervals: {b['level']:.0%} speaker-level bootstrap, {b['resamples']} resamples of {b['speakers']} "
              "speakers")
    if record is not None:
        print(f"recorded as eval/{record[1]} ({record[0]} profile): {payload['record']}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
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
    p.add_argument("--cohort-dir", help="Kaldi data directory of the training set (wav.scp + utt2spk): the AS-norm "
                   "cohort and QMF calibration source (default with --asnorm and --profile: the profile's cohort_dir)")
    p.add_argument("--cohort-wav-scp", help="training-set 'utt path' lines (cohort, QMF calibration)")
    p.add_argument("--cohort-embeddings", help="precomputed cohort embeddings (.safetensors)")
    p.add_argument("--cohort-utt2spk", help="training-set 'utt speaker' lines")
    p.add_argument("--top-n", type=int, default=300, help="AS-norm top-N cohort scores per side (default 300)")
    p.add_argument("--qmf", action="store_true", help="also report AS-norm + QMF calibrated scores")
    p.add_argument("--qmf-model", help="a fitted QMF (.json) instead of fitting on calibration trials")
    p.add_argument("--qmf-out", help="write the fitted QMF to this .json")
    p.add_argument("--calibration-trials", type=int, default=10_000, help="QMF calibration trials (default 10000)")
    p.add_argument("--calibration-seed", type=int, default=0, help="seed of the calibration-trial draw")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="speaker-level bootstrap with N resamples: a 95 %% interval on every EER and minDCF "
                   "(svlib.scoring.bootstrap; speakers from --utt2spk; default 0: none)")
    p.add_argument("--utt2spk", help="'utt speaker' lines of the evaluation utterances, for --bootstrap (default: "
                   "utt2spk next to --wav-scp)")
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
    add_record_args(p, "the eval record (EER, minDCF per scoring)",
                    profile_default="the model's, from the done.json that svlib train wrote, else custom")
    _add_extraction_args(p)
    p.set_defaults(func=_cmd_score)
