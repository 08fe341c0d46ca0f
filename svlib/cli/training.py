"""``svlib train`` and ``svlib prune``: one training or pruning stage from its YAML (runnable under torchrun)."""

from __future__ import annotations

import argparse

from svlib.cli.common import add_record_args, is_main_process, parse_overrides
from svlib.training import prune, train

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    for command, func, what, example, override in (
        ("train", _cmd_train, "training stage", "configs/demo/s1_freeze.yaml", "-o epochs=2 -o schedule.lr=1e-3"),
        ("prune", _cmd_prune, "pruning stage (distill + prune, or distill)", "configs/demo/prune/p1_prune.yaml",
         "-o pruning.target_sparsity=0.5"),
    ):
        p = sub.add_parser(command, help=f"run one {what} from its YAML config (works under torchrun)")
        p.add_argument("--config", required=True, help=f"stage YAML, e.g. {example}")
        p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of exp_dir")
        p.add_argument("--reuse", action="store_true",
                       help="skip the stage when exp_dir holds a model made from the same config, data and upstream stage")
        p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override a config key, e.g. {override} (repeatable)")
        add_record_args(p, "the run's train record (steps, final loss/accuracy, validation EER, parameters)")
        p.set_defaults(func=func)


def _cmd_train(args: argparse.Namespace) -> int:
    out = train(args.config, resume=args.resume, overrides=parse_overrides(args.override), reuse=args.reuse,
                profile=args.profile, results_dir=args.results_dir, record=not args.no_record)
    if is_main_process():
        print(f"trained model written to {out}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    out = prune(args.config, resume=args.resume, overrides=parse_overrides(args.override), reuse=args.reuse,
                profile=args.profile, results_dir=args.results_dir, record=not args.no_record)
    if is_main_process():
        print(f"pruned/distilled model written to {out}")
    return 0
