"""Probe: does the expected sparsity reach its target when Eq. (5) is summed over the layers instead of averaged?

A measurement script, not a test. It runs svlib's own pruning objective — :func:`svlib.pruning.distill_loss_per_layer`
(Eq. 5), :class:`svlib.pruning.AugmentedLagrangian` (Eq. 9), the expected sparsity of the gates (Eq. 8) and
:func:`svlib.pruning.pruning_param_groups` with the paper's learning rates (weights 2e-4, log α 0.02, λ 0.02, AdamW
without weight decay) — on a randomly initialised 24-layer encoder of the ``tiny`` width (so that Eq. (5) has the 25
hidden states of w2v-BERT 2.0 and a step takes well under a second on a CPU), with random input features. The target
sparsity 0.8 is reached after ``--warmup`` steps instead of 10,000. The student weights' and log α's gradient norm is
clipped as ``svlib.training.distill`` does (``--grad-clip``, the authors' 1.0 by default).

The one switch is how the 25 per-layer terms of Eq. (5) are reduced: ``sum`` (svlib before the fix) or ``mean``
(svlib's :func:`~svlib.pruning.distill_loss`, the authors' and DPHuBERT's). It exists only in this script. Both runs
start from the same weights, gates and input sequence. The script prints the expected sparsity every
``--report`` steps for each, then the sparsity of the structure the deterministic masks select at the end.

    .venv/bin/python bench/probe_distill_sparsity.py                 # both reductions, 300 steps (~4 min, 2 cores)
    .venv/bin/python bench/probe_distill_sparsity.py --reduction mean --steps 100 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from svlib.model.encoder import W2VBertEncoder, build_hf_encoder
from svlib.pruning import (
    AugmentedLagrangian,
    GatedW2VBertEncoder,
    PruningConfig,
    distill_loss_per_layer,
    pruning_param_groups,
    structure_sparsity,
    target_sparsity,
)


def reduce_layers(per_layer: torch.Tensor, reduction: str) -> torch.Tensor:
    """Eq. (5) from its ``(L+1,)`` per-layer terms: ``sum`` (old svlib) or ``mean`` (``svlib.pruning.distill_loss``)."""
    return per_layer.sum() if reduction == "sum" else per_layer.mean()


def run(reduction: str, args: argparse.Namespace) -> dict:
    """Distil + prune for ``args.steps`` steps with one reduction; return the sparsity trajectory."""
    torch.manual_seed(args.seed)
    teacher_model = build_hf_encoder("tiny", num_hidden_layers=args.layers, layerdrop=0.0)
    teacher = W2VBertEncoder(teacher_model).eval().requires_grad_(False)
    config = PruningConfig(target_sparsity=args.target, warmup_steps=args.warmup)  # paper's learning rates
    student = GatedW2VBertEncoder.from_encoder(teacher, config).train()
    lagrangian = AugmentedLagrangian()
    optimizer = torch.optim.AdamW(pruning_param_groups(student, lagrangian, config))
    clipped = [p for g in optimizer.param_groups if g["name"] != "lambda" for p in g["params"]]
    inputs = torch.Generator().manual_seed(args.seed + 1)
    rows, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        features = torch.randn(args.batch, args.frames, 160, generator=inputs)  # -> (B, T, 160)
        with torch.no_grad():
            teacher_states = teacher(features)  # -> (L+1, B, T, D)
        per_layer = distill_loss_per_layer(student(features), teacher_states)  # -> (L+1,)
        loss_distill = reduce_layers(per_layer, reduction)
        t = target_sparsity(step - 1, config.target_sparsity, config.warmup_steps)
        s = student.expected_sparsity()
        loss = loss_distill + lagrangian(s, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(clipped, args.grad_clip)
        optimizer.step()
        if step % args.report == 0:
            with torch.no_grad():
                sparsity = student.expected_sparsity().item()
            rows.append({"step": step, "target": round(target_sparsity(step, args.target, args.warmup), 4),
                         "expected_sparsity": round(sparsity, 4), "distill_mean": round(per_layer.mean().item(), 4),
                         "lambda1": round(lagrangian.lambda1.item(), 4), "lambda2": round(lagrangian.lambda2.item(), 4),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps({"reduction": reduction, **rows[-1]}), flush=True)
    final = structure_sparsity(student.eval().structure())
    return {"reduction": reduction, "rows": rows, "final_structure_sparsity": round(final, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduction", choices=["sum", "mean", "both"], default="both",
                        help="reduction of Eq. (5) over the layers (probe-only switch; default both)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--report", type=int, default=50, help="print the expected sparsity every N steps")
    parser.add_argument("--warmup", type=int, default=150, help="steps of the linear target ramp (paper: 10,000)")
    parser.add_argument("--target", type=float, default=0.8, help="target sparsity (paper: 0.8)")
    parser.add_argument("--layers", type=int, default=24, help="Conformer layers (w2v-BERT 2.0: 24, so 25 states)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=50, help="model frames per example (50 = 1 s)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping (authors 1.0, DPHuBERT 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reductions = ["sum", "mean"] if args.reduction == "both" else [args.reduction]
    results = [run(r, args) for r in reductions]
    if args.json:
        print(json.dumps({"settings": vars(args), "results": results}, indent=2))
        return
    print(f"\nexpected sparsity (target {args.target}, ramp {args.warmup} steps, {args.layers} layers, "
          f"lr log alpha / lambda 0.02)")
    print("step  target  " + "  ".join(f"{r['reduction']:>6}" for r in results))
    for i, row in enumerate(results[0]["rows"]):
        print(f"{row['step']:4d}  {row['target']:6.3f}  " + "  ".join(f"{r['rows'][i]['expected_sparsity']:6.3f}"
                                                                 for r in results))
    print("pruned  " + " " * 6 + "  ".join(f"{r['final_structure_sparsity']:6.3f}" for r in results)
          + "   (sparsity of the structure the deterministic masks select)")


if __name__ == "__main__":
    main()
