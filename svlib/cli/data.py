"""``svlib data ...``: build the offline demo corpus, prepare real corpora, check trial lists.

The main CLI registers this with :func:`add_parser`. Like the rest of the CLI, these commands print results (JSON
with ``--json``); the work lives in :mod:`svlib.data.demo`, :mod:`svlib.data.prepare` and :mod:`svlib.data.lists`.

- ``svlib data demo [--root DIR] [--seed N] [--json]`` — build (or find cached) the demo corpus and its cross-channel
  trial list (:mod:`svlib.data.cross_channel`), print their summary.
- ``svlib data prepare DATASET --root DIR [--root DIR] --out DIR [--trials FILE ...] [--durations] [--json]`` —
  Kaldi data directories (and Kaldi-format trial lists) for voxceleb1, voxceleb2, voxblink2, cnceleb1, cnceleb2.
- ``svlib data combine --out DIR IN [IN ...]`` — one data directory holding the utterances of several (VoxCeleb2 +
  VoxBlink2, CN-Celeb1 + 2).
- ``svlib data check --data DIR --trials FILE [--enroll-map FILE]`` — every trial names an existing utterance.
"""

from __future__ import annotations

import argparse
import json
import sys

from svlib.data.cross_channel import build_cross_channel
from svlib.data.demo import build_demo_corpus
from svlib.data.lists import combine_data_dirs, read_data_dir, read_trials, write_data_dir
from svlib.data.prepare import DATASETS, prepare_dataset

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``data`` command (with ``demo``, ``prepare``, ``combine`` and ``check``) to the main CLI's subparsers."""
    data = subparsers.add_parser("data", help="demo corpus, dataset preparation (Kaldi data dirs), trial checks")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("demo", help="build the offline demo corpus from Debian packages (idempotent)")
    p.add_argument("--root", default=None, help="data root (default: $SVLIB_DATA or <repo>/data); corpus in ROOT/demo")
    p.add_argument("--seed", type=int, default=0, help="seed of clip order, speaker split and trials (default 0)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(4, CPUs))")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("prepare", help="Kaldi data directories for a real corpus from its usual on-disk layout")
    p.add_argument("dataset", choices=DATASETS, help="which corpus (layouts: see svlib.data.prepare)")
    p.add_argument("--root", action="append", required=True,
                   help="corpus root; give it twice for VoxCeleb1 dev + test")
    p.add_argument("--out", required=True, help="output folder for the data directories and trial lists")
    p.add_argument("--trials", nargs="*", default=[],
                   help="VoxCeleb1 trial lists to check and convert (veri_test2.txt, list_test_all2.txt, ...)")
    p.add_argument("--durations", action="store_true", help="also write utt2dur (reads every audio header)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")

    p = sub.add_parser("combine", help="one Kaldi data directory holding the utterances of several")
    p.add_argument("inputs", nargs="+", metavar="IN", help="Kaldi data directories (wav.scp, utt2spk)")
    p.add_argument("--out", required=True, help="output data directory")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")

    p = sub.add_parser("check", help="check that every trial names an utterance of a data directory")
    p.add_argument("--data", required=True, help="Kaldi data directory (wav.scp, utt2spk)")
    p.add_argument("--trials", required=True, help="trial list (VGG, Kaldi or CN-Celeb format)")
    p.add_argument("--enroll-map", default=None, help="enrollment map for multi-utterance enrollment (CN-Celeb)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")

    data.set_defaults(func=_cmd_data)
    return data


def _cmd_data(args: argparse.Namespace) -> int:
    """Run ``svlib data <demo|prepare|check>``; returns the exit status."""
    handlers = {"demo": _demo, "prepare": _prepare, "combine": _combine, "check": _check}
    return handlers[args.data_command](args)


def _demo(args: argparse.Namespace) -> int:
    try:
        s = build_demo_corpus(args.root, seed=args.seed, workers=args.workers, progress=not args.no_progress)
        cross = build_cross_channel(s, seed=args.seed, progress=not args.no_progress)
    except RuntimeError as err:  # apt-get missing or a package unavailable: the message says what to do
        print(f"svlib data demo: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        payload = {**s.to_dict(), "cross_channel": {"data_dir": str(cross.data_dir), "trials": str(cross.trials),
                                                     "channels": cross.channel_counts()}}
        print(json.dumps(payload, indent=2))
        return 0
    print(f"demo corpus in {s.root} (seed {s.seed}, built in {s.build_seconds:.1f} s)")
    print(f"{'split':<8}{'speakers':>10}{'utterances':>12}{'minutes':>10}")
    for name, split in (("train", s.train), ("test", s.test)):
        print(f"{name:<8}{split.speakers:>10}{split.utterances:>12}{split.minutes:>10.2f}")
    print(f"trials: {s.target_trials} target + {s.nontarget_trials} nontarget ({s.trials})")
    counts = ", ".join(f"{k} {n}" for k, n in sorted(cross.channel_counts().items()))
    print(f"cross-channel trials (test side through another channel: {counts}): {cross.trials}")
    print(f"sources, licenses and speaker evidence: {s.readme}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    result = prepare_dataset(args.dataset, args.root, args.out, trials=args.trials, durations=args.durations)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    for split, path in result.data_dirs.items():
        print(f"{split}: {result.utterances[split]} utterances, {result.speakers[split]} speakers -> {path}")
    for name, path in result.trials.items():
        print(f"trials {name}: {result.n_trials[name]} -> {path}")
    return 0


def _combine(args: argparse.Namespace) -> int:
    combined = combine_data_dirs(*(read_data_dir(d) for d in args.inputs))
    write_data_dir(combined, args.out)
    counts = {"utterances": len(combined), "speakers": len(set(combined.utt2spk.values())), "out": args.out}
    print(json.dumps(counts, indent=2) if args.json else
          f"{counts['utterances']} utterances of {counts['speakers']} speakers -> {args.out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    data = read_data_dir(args.data)
    trials = read_trials(args.trials, enroll_map=args.enroll_map)
    trials.check(data)  # raises MissingUtterancesError (a ValueError) listing what is missing
    counts = {"trials": len(trials), "target": trials.n_target, "nontarget": trials.n_nontarget,
              "utterances_needed": len(trials.utterances()), "data_utterances": len(data)}
    print(json.dumps(counts, indent=2) if args.json else
          f"ok: {counts['trials']} trials ({counts['target']} target, {counts['nontarget']} nontarget) "
          f"use {counts['utterances_needed']} of the {counts['data_utterances']} utterances in {args.data}")
    return 0
