"""``svlib params``: the structure columns of Tables 2 and 3 (parameters, MACs, FLOPs) at full size; ``svlib export``:
a saved speaker model as ONNX (:mod:`svlib.model.export`)."""

from __future__ import annotations

import argparse
import json

from svlib.analysis.complexity import (
    PAPER_PARAMS_M,
    PAPER_TABLE3_FULL,
    PAPER_TABLE3_PRUNED,
    structure_complexity,
    table2_complexity,
)
from svlib.model import load_model
from svlib.model.export import export_onnx
from svlib.model.structure import load_structure
from svlib.pruning.params import structure_sparsity

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    p = sub.add_parser("params", help="Table 2/3 params, MACs and FLOPs of every model variant at full size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--encoder", default="w2v-bert-2.0", help="named config (w2v-bert-2.0, tiny) or checkpoint dir")
    p.add_argument("--seconds", type=float, default=1.0, help="audio length the MACs are counted for (default 1)")
    p.add_argument("--structure", metavar="FILE",
                   help="count a pruned structure (JSON, authors' format) with the Adapter-MFA head: Table 3's row")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("export", help="a saved speaker model (encoder + head) as ONNX, for onnxruntime")
    p.add_argument("--model", required=True, help="a saved svlib model directory (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the matrix multiplications")
    p.set_defaults(func=_cmd_export)


def _cmd_params(args: argparse.Namespace) -> int:
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


def _cmd_export(args: argparse.Namespace) -> int:
    if not str(args.out).endswith(".onnx"):
        raise SystemExit(f"svlib export: --out {args.out}: expected a file name ending in .onnx")
    path = export_onnx(load_model(args.model), args.out, int8=args.int8)
    print(f"wrote {path} ({'int8' if args.int8 else 'fp32'}); run it with svlib embed --model {path}")
    return 0
