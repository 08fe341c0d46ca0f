"""Probe (issue 14, first part): the demo models exported to ONNX (fp32 and int8) against PyTorch, on real audio.

For the unpruned and the pruned demo model after LMFT: the cosine between the PyTorch and the onnxruntime embedding
of every utterance of both demo trial lists (min and median), and the EER of each backend on both lists. Run from
the checkout after `make book`:

    .venv/bin/python bench/probe_onnx.py [--data data] [--exp exp/demo]

Measured numbers are in the closing note of issue 13/14.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import svlib
from svlib.data.lists import read_key_value
from svlib.data.profiles import profile_data
from svlib.model.export import OnnxSpeakerModel, export_onnx
from svlib.scoring import compute_eer, cosine_scores, extract_embeddings, read_trials

MODELS = {"s3": "lora_adapter_mfa/s3_lmft", "pruned s3": "pruned/s3_lmft"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="data root holding demo/ (default: data)")
    parser.add_argument("--exp", default="exp/demo", help="the demo models (default: exp/demo)")
    args = parser.parse_args()
    data = profile_data("demo", args.data)
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in MODELS.items():
            model = svlib.load_model(Path(args.exp) / folder / "model").eval()
            backends = {"torch": model}
            for int8 in (False, True):
                path = export_onnx(model, Path(tmp) / f"{name.replace(' ', '_')}{'-int8' if int8 else ''}.onnx",
                                   int8=int8)
                backends["onnx int8" if int8 else "onnx fp32"] = OnnxSpeakerModel(path)
                print(f"{name}: {path.name} {path.stat().st_size / 1e6:.2f} MB")
            for trial_set in data.trial_sets:
                trials = read_trials(trial_set.trials)
                wav_scp = read_key_value(Path(trial_set.eval_dir) / "wav.scp")
                wav_scp = {u: wav_scp[u] for u in sorted(trials.utterances())}
                emb = {b: extract_embeddings(m, wav_scp, progress=False) for b, m in backends.items()}
                for backend in ("onnx fp32", "onnx int8"):
                    cos = np.array([float(F.cosine_similarity(emb["torch"][u], emb[backend][u], dim=0))
                                    for u in wav_scp])
                    print(f"  {trial_set.name} {backend}: cosine to torch min {cos.min():.7f} median "
                          f"{np.median(cos):.7f} over {cos.size} utterances")
                eers = {b: 100 * compute_eer(cosine_scores(e, trials), trials.labels())[0] for b, e in emb.items()}
                print(f"  {trial_set.name} EER %: " + ", ".join(f"{b} {v:.2f}" for b, v in eers.items()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
