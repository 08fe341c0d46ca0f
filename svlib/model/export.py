"""The speaker model as an ONNX graph, and that graph run in onnxruntime with svlib's front end.

:func:`export_onnx` writes the network of a :class:`~svlib.model.speaker.SpeakerModel` (encoder and head: Eq. (1)'s
``Encoder`` and the pooling of Eq. (3), from fbank features to the ``(E,)`` embedding) as one ONNX graph with a
dynamic time axis, LoRA merged first. The front end, Eq. (1)'s ``Fbank`` (Kaldi fbank, CMN, frame stacking), stays
svlib's own :class:`~svlib.frontend.features.FeatureExtractor`: the graph's input is its output, so the features the
exported model sees are those the PyTorch model sees. ``int8=True`` adds onnxruntime's dynamic quantisation
(weights of the matrix multiplications as int8, activations quantised per call).

The graph is traced by torch's TorchScript-based exporter (``dynamo=False``): with torch 2.14.1 the
``torch.export``-based exporter fails on transformers' Wav2Vec2-BERT self-attention once the time axis is dynamic
(its decomposition of the reshape after the heads' transpose cannot form the view), while the traced graph matches
the PyTorch model to float rounding at every length (``tests/test_export.py``).

:class:`OnnxSpeakerModel` loads such a file into an onnxruntime session and behaves like the PyTorch model where
svlib's scoring needs it (``frontend``, ``model(features, mask)``, ``embed``), so
:func:`~svlib.scoring.extract.extract_embeddings`, ``svlib embed --model FILE.onnx`` and ``svlib score`` run it
unchanged. Typical use::

    export_onnx(load_model("exp/demo/pruned/s3_lmft/model"), "pruned.onnx", int8=True)
    onnx_model = OnnxSpeakerModel("pruned.onnx")
    onnx_model.embed("utt.wav")          # (E,) float32
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svlib._version import __version__
from svlib.core.atomic import atomic_write
from svlib.frontend.audio import one_waveform
from svlib.frontend.features import FeatureExtractor

logger = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "OnnxSpeakerModel", "export_onnx"]

ONNX_OPSET = 18
"""The ONNX opset of :func:`export_onnx` (onnxruntime ≥ 1.14 runs it)."""
_INPUT, _OUTPUT = "input_features", "embedding"
_EXAMPLE_FRAMES = 200  # the trace's example length; the time axis of the graph is dynamic


class _Network(nn.Module):
    """``features (1, T, 160) -> embedding (1, E)`` of a speaker model with nothing padded (the exported graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model(input_features, None)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, int8: bool = False, opset: int = ONNX_OPSET) -> Path:
    """Write ``model``'s network (encoder + head) to ``path`` as ONNX, written atomically.

    Args:
        model: a :class:`~svlib.model.speaker.SpeakerModel` (full or pruned; a LoRA adapter is merged into a copy
            first, the model itself is left as it was).
        path: the ``.onnx`` file.
        int8: quantise the weights of the matrix multiplications to int8 (onnxruntime's ``quantize_dynamic``).
        opset: the ONNX opset.

    Returns:
        ``path``. Its metadata holds the svlib version, the embedding size, ``int8`` and the front end it expects.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = copy.deepcopy(model).float().cpu().eval()
    if getattr(model.encoder, "lora", None) is not None:
        model.encoder.merge_lora()
    example = torch.randn(1, _EXAMPLE_FRAMES, 160)
    with torch.no_grad():
        embedding_dim = int(model(example, None).shape[-1])

    def write(tmp: str) -> None:
        traced = f"{tmp}.fp32.onnx" if int8 else tmp
        try:
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
                warnings.simplefilter("ignore")
                torch.onnx.export(_Network(model), (example,), traced, dynamo=False, opset_version=opset,
                                  input_names=[_INPUT], output_names=[_OUTPUT],
                                  dynamic_axes={_INPUT: {1: "frames"}})
            if int8:
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)  # its notes on shape tensors it leaves in int64, through the root logger
                try:
                    quantize_dynamic(traced, tmp, weight_type=QuantType.QInt8)
                finally:
                    root.setLevel(level)
        finally:
            if int8 and os.path.exists(traced):
                os.remove(traced)
        graph = onnx.load(tmp)
        metadata = {"svlib_version": __version__, "embedding_dim": str(embedding_dim), "int8": json.dumps(int8),
                    "frontend": "svlib.frontend.features.FeatureExtractor (fbank 80 x 2 stacked, CMN)"}
        del graph.metadata_props[:]
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)

    path = atomic_write(path, write, suffix=".onnx")
    logger.info("wrote %s (%s, embedding %d)", path, "int8" if int8 else "fp32", embedding_dim)
    return path


class OnnxSpeakerModel(nn.Module):
    """An exported speaker model (:func:`export_onnx`) run by onnxruntime on the CPU, behind the interface of
    :class:`~svlib.model.speaker.SpeakerModel` that scoring uses.

    ``frontend`` is svlib's :class:`~svlib.frontend.features.FeatureExtractor`; ``model(features, mask)`` runs the
    graph once per utterance on its valid frames (the graph takes one unpadded utterance); ``embed`` and
    ``embed_waveforms`` as for the PyTorch model. The file's SHA-256 is a buffer, so the embedding caches of
    :mod:`svlib.scoring.extract` tell two exported models apart.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (``None``: its default).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime

        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file (write one with svlib export)")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([_INPUT], [_OUTPUT]):
            raise ValueError(f"{self.path}: inputs/outputs {names}; expected ([{_INPUT!r}], [{_OUTPUT!r}]), "
                             "a file written by svlib export")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.frontend = FeatureExtractor()
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        self.register_buffer("onnx_sha256", torch.frombuffer(bytearray(digest), dtype=torch.uint8))

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, E)`` embeddings of ``(B, T, 160)`` features (``attention_mask (B, T)``: 1 for valid frames)."""
        features = input_features.detach().float().cpu()
        lengths = (attention_mask.sum(dim=1).tolist() if attention_mask is not None
                   else [features.shape[1]] * features.shape[0])
        out = [self.session.run(None, {_INPUT: features[i: i + 1, : int(n)].numpy()})[0][0]
               for i, n in enumerate(lengths)]
        return torch.from_numpy(np.stack(out))

    def embed_waveforms(self, wavs: torch.Tensor | list[torch.Tensor], lengths: torch.Tensor | None = None):
        """Embeddings of 16 kHz waveforms: a list of 1-D tensors or a padded ``(B, N)`` tensor with ``lengths``."""
        features, attention_mask = self.frontend(wavs, lengths)
        return self(features, attention_mask)

    @torch.no_grad()
    def embed(self, wav_or_path: torch.Tensor | str | Path) -> torch.Tensor:
        """The ``(E,)`` embedding of one utterance: a path or a 1-D 16 kHz waveform."""
        wav = one_waveform(wav_or_path)
        return self.embed_waveforms([wav])[0]
