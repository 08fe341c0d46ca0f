"""The ``svlib`` command. Subcommands print results (JSON with ``--json``); the work lives in the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _cmd_params(args: argparse.Namespace) -> int:
    from svlib.complexity import PAPER_PARAMS_M, PAPER_TABLE3_FULL, table2_complexity

    if args.structure:
        return _cmd_params_structure(args)
    rows = table2_complexity(args.encoder, seconds=args.seconds)
    payload = {
        "encoder": args.encoder,
        "seconds": args.seconds,
        "counter": "torch.utils.flop_counter.FlopCounterMode on the meta device; MACs = FLOPs/2; "
        "encoder + head, fbank front end excluded; LoRA merged for inference MACs",
        "variants": [
            {**r.to_dict(), "paper_params_m": list(PAPER_PARAMS_M[r.model])} for r in rows
        ],
        "paper_table3_full": PAPER_TABLE3_FULL,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    print(f"Table 2/3 structure columns for {args.encoder} ({args.seconds:g} s of audio, {rows[0].frames} frames)")
    header = f"{'model':<18}{'encoder':>12}{'head':>12}{'LoRA':>11}{'params':>12}{'paper':>12}{'GMACs':>9}{'GFLOPs':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        enc_m, extra_m = PAPER_PARAMS_M[r.model]
        print(
            f"{r.model:<18}{r.encoder_params:>12,}{r.head_params:>12,}{r.lora_params:>11,}"
            f"{r.params_label:>12}{f'{enc_m:g}+{extra_m:g}M':>12}{r.macs / 1e9:>9.2f}{r.flops / 1e9:>9.2f}"
        )
    print(f"paper, Table 3 (0 % sparsity): {PAPER_TABLE3_FULL['macs_g']} GMACs, {PAPER_TABLE3_FULL['flops_g']} GFLOPs")
    return 0


def _cmd_params_structure(args: argparse.Namespace) -> int:
    """``svlib params --structure FILE``: Table 3's pruned row for a pruned structure (authors' JSON format)."""
    from svlib.complexity import PAPER_TABLE3_PRUNED, structure_complexity
    from svlib.pruning import load_structure, structure_sparsity

    structure = load_structure(args.structure)
    r = structure_complexity(structure, seconds=args.seconds)
    sparsity = structure_sparsity(structure)
    payload = {
        "structure": str(args.structure),
        "seconds": args.seconds,
        "counter": "torch.utils.flop_counter.FlopCounterMode on the meta device; MACs = FLOPs/2; "
        "pruned encoder + Adapter-MFA head, fbank front end excluded",
        "sparsity": sparsity,
        **r.to_dict(),
        "paper_table3_pruned": PAPER_TABLE3_PRUNED,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    enc_m, head_m = PAPER_TABLE3_PRUNED["params_m"]
    print(f"Table 3 structure columns for {args.structure} ({args.seconds:g} s of audio, {r.frames} frames)")
    header = f"{'':<10}{'sparsity':>10}{'encoder':>14}{'head':>12}{'params':>12}{'GMACs':>9}{'GFLOPs':>9}"
    print(header)
    print("-" * len(header))
    print(
        f"{'svlib':<10}{sparsity:>10.1%}{r.encoder_params:>14,}{r.head_params:>12,}{r.params_label:>12}"
        f"{r.macs / 1e9:>9.2f}{r.flops / 1e9:>9.2f}"
    )
    print(
        f"{'paper':<10}{'≈' + format(PAPER_TABLE3_PRUNED['sparsity'], '.0%'):>10}{'':>14}{'':>12}"
        f"{f'{enc_m:g}+{head_m:g}M':>12}{PAPER_TABLE3_PRUNED['macs_g']:>9.2f}{PAPER_TABLE3_PRUNED['flops_g']:>9.2f}"
    )
    print(f"MACs: encoder {r.encoder_macs / 1e9:.2f}G + head {r.head_macs / 1e9:.2f}G")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from svlib import bench

    if args.benchmark == "features":
        result = bench.bench_features(batch=args.batch, seconds=args.seconds, repeats=args.repeats)
    elif args.benchmark == "extract":
        from svlib.scoring.bench import bench_extract

        result = bench_extract(seconds=(4, 10), repeats=args.repeats)
    elif args.benchmark == "prune-speedup":
        from svlib.pruning.bench import bench_prune_speedup

        result = bench_prune_speedup(args.structure, seconds=(1.0, 4.0), repeats=args.repeats, threads=args.threads)
        if not args.json:
            print(f"full {result['full_params']:,} vs pruned {result['pruned_params']:,} parameters "
                  f"(sparsity {result['sparsity']:.1%}), structure {result['structure']}")
            print(f"CPU, {result['threads']} threads, batch 1, median of {result['repeats']} runs")
            for r in result["rows"]:
                print(f"{r['seconds']:g} s: full {r['full_s']:.3f} s, pruned {r['pruned_s']:.3f} s, "
                      f"speed-up {r['speedup']:.2f}x, MAC ratio {r['mac_ratio']:.2f}x "
                      f"({r['full_gmacs']:.2f}G / {r['pruned_gmacs']:.2f}G)")
            return 0
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML: numbers, booleans, null, lists) for config overrides."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. schedule.lr=1e-3)")
        overrides[key] = yaml.safe_load(value)
    return overrides


def _is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process: the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def _cmd_train(args: argparse.Namespace) -> int:
    from svlib.train import train

    out = train(args.config, resume=args.resume, overrides=_parse_overrides(args.override), reuse=args.reuse,
                profile=args.profile, results_dir=args.results_dir, record=not args.no_record)
    if _is_main_process():
        print(f"trained model written to {out}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from svlib.distill import prune

    out = prune(args.config, resume=args.resume, overrides=_parse_overrides(args.override), reuse=args.reuse,
                profile=args.profile, results_dir=args.results_dir, record=not args.no_record)
    if _is_main_process():
        print(f"pruned/distilled model written to {out}")
    return 0


def add_record_args(p: argparse.ArgumentParser, what: str,
                    profile_default: str = "<name> for a config under configs/<name>/, else custom") -> None:
    """``--profile``, ``--results-dir`` and ``--no-record``: where a command records its run (svlib.results)."""
    p.add_argument("--profile", default=None, help=f"profile written with {what} (default: {profile_default})")
    p.add_argument("--results-dir", default=None,
                   help="results store (default: $SVLIB_RESULTS, else <repo>/_build/results)")
    p.add_argument("--no-record", action="store_true", help=f"do not write {what}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svlib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="Table 2/3 params, MACs and FLOPs of every model variant at full size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--encoder", default="w2v-bert-2.0", help="named config (w2v-bert-2.0, tiny) or checkpoint dir")
    p.add_argument("--seconds", type=float, default=1.0, help="audio length the MACs are counted for (default 1)")
    p.add_argument("--structure", metavar="FILE",
                   help="count a pruned structure (JSON, authors' format) with the Adapter-MFA head: Table 3's row")
    p.set_defaults(func=_cmd_params)

    from svlib.data.cli import add_data_parser
    from svlib.scoring.cli import add_scoring_parsers

    add_data_parser(sub)
    add_scoring_parsers(sub)
    from svlib.book import add_book_parser

    add_book_parser(sub)

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

    p = sub.add_parser("rehearse", help="run every full-scale command of the reproduction page on synthetic "
                       "corpora and a random checkpoint, under torchrun, shrunk (svlib.rehearse)")
    p.add_argument("--scale", choices=["tiny", "full"], default="tiny",
                   help="checkpoint size: tiny (CPU sizes) or full (the released config); same structure")
    p.add_argument("--nproc", type=int, default=2, help="processes per torchrun (default 2; gloo on CPU, NCCL on GPU)")
    p.add_argument("--batch-size", type=int, default=2, help="utterances per process and step (default 2)")
    p.add_argument("--workdir", default=None,
                   help="the rehearsal's folder, replaced if present (default: _build/rehearsal/<scale> here)")
    p.add_argument("--json", action="store_true", help="print the record of every command as JSON")
    p.set_defaults(func=_cmd_rehearse)

    p = sub.add_parser("bench", help="benchmarks (timings measured in one process)")
    p.add_argument("benchmark", choices=["features", "extract", "prune-speedup"],
                   help="features: svlib's fbank vs transformers' extractor; extract: full-size embedding extraction "
                   "vs a bare Wav2Vec2BertModel forward (CPU, 4 s and 10 s); prune-speedup: full-size encoder vs "
                   "a pruned one (CPU, batch 1, 1 s and 4 s)")
    p.add_argument("--structure", metavar="FILE", default=None,
                   help="prune-speedup: pruned structure JSON (default: the authors' 80 %% structure, shipped with "
                   "svlib)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--batch", type=int, default=8, help="utterances per batch (default 8)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance (default 4)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs; the median is reported (default 7)")
    p.add_argument("--threads", type=int, default=None,
                   help="prune-speedup: CPU threads for the timed forwards (default: torch's; 1 on a busy machine)")
    p.set_defaults(func=_cmd_bench)
    return parser


def _cmd_rehearse(args: argparse.Namespace) -> int:
    from svlib.rehearse import rehearse

    workdir = args.workdir or f"_build/rehearsal/{args.scale}"
    result = rehearse(workdir, scale=args.scale, nproc=args.nproc, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0 if result.ok else 1
    print(f"{'section':<8}{'exit':>5}{'seconds':>9}{'peak MiB':>10}  command")
    for c in result.commands:
        print(f"{c['section']:<8}{c['exit_code']:>5}{c['seconds']:>9.1f}{c['peak_rss_mib']:>10.0f}  {c['command']}")
    print(f"{'ok' if result.ok else 'FAILED'}: {len(result.commands)} commands, {result.seconds:.0f} s "
          f"({args.scale} scale, {args.nproc} processes); output in {result.workdir}/output.log")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"svlib {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
