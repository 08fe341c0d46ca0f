"""``svlib bench``: benchmarks that print JSON (timings measured in one process; see bench/README.md)."""

from __future__ import annotations

import argparse
import json

from svlib.bench import bench_deploy, bench_extract, bench_features, bench_prune_speedup

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (timings measured in one process)")
    p.add_argument("benchmark", choices=["features", "extract", "prune-speedup", "deploy"],
                   help="features: svlib's fbank vs transformers' extractor; extract: full-size embedding extraction "
                   "vs a bare Wav2Vec2BertModel forward (CPU, 4 s and 10 s); prune-speedup: full-size encoder vs "
                   "a pruned one (CPU, batch 1, 1 s and 4 s); deploy: full and pruned speaker model in torch fp32, "
                   "onnxruntime fp32 and int8 (CPU, batch 1, 1 s, 4 s and 10 s)")
    p.add_argument("--structure", metavar="FILE", default=None,
                   help="prune-speedup, deploy: pruned structure JSON (default: the authors' 80 %% structure, shipped with "
                   "svlib)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--batch", type=int, default=8, help="utterances per batch (default 8)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance (default 4)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs; the median is reported (default 7)")
    p.add_argument("--lengths", type=float, nargs="+", default=None, metavar="SECONDS",
                   help="prune-speedup: input lengths in seconds (default 1 4; e.g. 1 4 10 30 to see the quadratic "
                   "attention); deploy: default 1 4 10")
    p.add_argument("--align", type=int, nargs="+", default=[], metavar="MULTIPLE",
                   help="prune-speedup: also time the structure with its FFN units and conv channels rounded to "
                   "these multiples (e.g. 8 16), interleaved with the others")
    p.add_argument("--threads", type=int, default=None,
                   help="prune-speedup, deploy: CPU threads for the timed forwards (default: torch's; deploy: 2; 1 "
                   "on a busy machine)")
    p.add_argument("--encoder", default="w2v-bert-2.0",
                   help="deploy: the encoder config (default w2v-bert-2.0, the released size; tiny with --structure "
                   "for a quick run)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.benchmark == "features":
        result = bench_features(batch=args.batch, seconds=args.seconds, repeats=args.repeats)
    elif args.benchmark == "extract":
        result = bench_extract(seconds=(4, 10), repeats=args.repeats)
    elif args.benchmark == "prune-speedup":
        result = bench_prune_speedup(args.structure, seconds=tuple(args.lengths or (1.0, 4.0)), repeats=args.repeats,
                                     threads=args.threads, align=tuple(args.align))
        if not args.json:
            print(f"full {result['full_params']:,} vs pruned {result['pruned_params']:,} parameters "
                  f"(sparsity {result['sparsity']:.1%}), structure {result['structure']}")
            print(f"CPU, {result['threads']} threads, batch 1, median of {result['repeats']} runs")
            for r in result["rows"]:
                print(f"{r['seconds']:g} s: full {r['full_s']:.3f} s ({r['full_gmacs']:.2f} GMACs)")
                for name, v in r["variants"].items():
                    paired = v["speedup_paired"]
                    print(f"  {name}: {v['s']:.3f} s, speed-up {paired['median']:.2f}x (paired, IQR "
                          f"{paired['q1']:.2f}-{paired['q3']:.2f}), MAC ratio {v['mac_ratio']:.2f}x "
                          f"({v['gmacs']:.2f}G), speed-up / MAC ratio {paired['median'] / v['mac_ratio']:.2f}")
            return 0
    elif args.benchmark == "deploy":
        result = bench_deploy(args.structure, seconds=tuple(args.lengths or (1.0, 4.0, 10.0)), repeats=args.repeats,
                              threads=args.threads or 2, encoder=args.encoder)
        if not args.json:
            print(f"full {result['full_params']:,} vs pruned {result['pruned_params']:,} parameters "
                  f"({result['encoder']}, structure {result['structure']})")
            print(f"CPU, {result['threads']} threads, batch 1, median of {result['repeats']} interleaved rounds")
            for r in result["rows"]:
                print(f"{r['seconds']:g} s: MAC ratio {r['mac_ratio']:.2f}x ({r['full_gmacs']:.2f} vs "
                      f"{r['pruned_gmacs']:.2f} GMACs)")
                for name, v in r["variants"].items():
                    paired = v["speedup_paired"]
                    print(f"  {name:18s} {v['s_per_audio_s']:.4f} s per audio s, speed-up {paired['median']:.2f}x "
                          f"(IQR {paired['q1']:.2f}-{paired['q3']:.2f})")
            return 0
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0
