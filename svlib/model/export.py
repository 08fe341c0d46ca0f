"""The speaker model as an ONNX graph, and that graph run in onnxruntime with svlib's front end.

:func:`export_onnx` writes the network of a :class:`~svlib.model.speaker.SpeakerModel` (encoder and head: Eq. (1)'s
``Encoder`` and the pooling of Eq. (3), from fbank features to the ``(E,)`` embedding) as one ONNX graph with a
dynamic time axis, LoRA merged first. The front end, Eq. (1)'s ``Fbank`` (Kaldi fbank, CMN, frame stacking), stays
svlib's own :class:`~svlib.frontend.features.FeatureExtractor`: the graph's input is its output, so the features the
exported model sees are those the PyTorch model sees. ``int8=True`` adds onnxruntime's dynamic quantisation
(weights of the matrix multiplications as int8, activations quantised per call). A graph whose weights pass 1 GiB
(the full-size fp32 model: 2.4 GB, over protobuf's 2 GiB limit) keeps them in one file beside it, ``FILE.onnx.data``.

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
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svlib._version import __version__
from svlib.core.atomic import default_file_mode
from svlib.frontend.audio import one_waveform
from svlib.frontend.features import FeatureExtractor

logger = logging.getLogger(__name__)

__all__ = ["EXTERNAL_DATA_BYTES", "ONNX_OPSET", "OnnxSpeakerModel", "export_onnx", "onnx_files"]

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


EXTERNAL_DATA_BYTES = 1 << 30
"""Weights above this size go to an external data file (``FILE.onnx.data``): protobuf cannot hold a file over 2 GiB,
and the full-size fp32 model (about 2.4 GB) is one."""


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    int8: bool = False,
    opset: int = ONNX_OPSET,
    external_data: bool | None = None,
) -> Path:
    """Write ``model``'s network (encoder + head) to ``path`` as ONNX, written atomically.

    Args:
        model: a :class:`~svlib.model.speaker.SpeakerModel` (full or pruned; a LoRA adapter is merged into a copy
            first, the model itself is left as it was).
        path: the ``.onnx`` file.
        int8: quantise the weights of the matrix multiplications to int8 (onnxruntime's ``quantize_dynamic``, with
            ``reduce_range``: 7-bit weights, which CPUs without VNNI need; see the comment in the code).
        opset: the ONNX opset.
        external_data: keep the weights in one file next to the graph, ``path`` + ``".data"`` (onnxruntime finds
            it by its name, so the two files move together). ``None``: when they exceed
            :data:`EXTERNAL_DATA_BYTES` (the full-size fp32 model; its pruned and int8 versions fit in one file).

    Returns:
        ``path``. Its metadata holds the svlib version, the embedding size, ``int8`` and the front end it expects.
        Both files are built in a temporary folder beside ``path`` and moved into place when complete (the data
        file first); a data file left from an earlier export to ``path`` is removed when the new one has none.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    model = copy.deepcopy(model).float().cpu().eval()
    if getattr(model.encoder, "lora", None) is not None:
        model.encoder.merge_lora()
    example = torch.randn(1, _EXAMPLE_FRAMES, 160)
    with torch.no_grad():
        embedding_dim = int(model(example, None).shape[-1])
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = _data_file(path).name
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp = Path(tmp)
        traced = tmp / "traced.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(_Network(model), (example,), str(traced), dynamo=False, opset_version=opset,
                              input_names=[_INPUT], output_names=[_OUTPUT], dynamic_axes={_INPUT: {1: "frames"}})
        del model
        if int8:
            quantised = tmp / "int8.onnx"
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its notes on shape tensors it leaves in int64, through the root logger
            try:
                # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) onnxruntime
                # multiplies uint8 activations by int8 weights with 16-bit intermediate sums that saturate: the
                # tiny test model's embeddings then fell to cosine 0.96-0.97 of PyTorch's on an AVX2 EPYC, and to
                # 0.9999 with reduce_range (tests/test_export.py); on VNNI CPUs it costs one bit of weight precision
                quantize_dynamic(traced, quantised, weight_type=QuantType.QInt8, reduce_range=True,
                                 use_external_data_format=weight_bytes / 4 > EXTERNAL_DATA_BYTES)
            finally:
                root.setLevel(level)
            traced = quantised
        graph = onnx.load(str(traced))
        metadata = {"svlib_version": __version__, "embedding_dim": str(embedding_dim), "int8": json.dumps(int8),
                    "frontend": "svlib.frontend.features.FeatureExtractor (fbank 80 x 2 stacked, CMN)"}
        del graph.metadata_props[:]
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        if external_data is None:
            external_data = sum(len(t.raw_data) for t in graph.graph.initializer) > EXTERNAL_DATA_BYTES
        final = tmp / path.name
        if external_data:
            onnx.save(graph, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data_name, size_threshold=1024)
        else:
            onnx.save(graph, str(final))
        del graph
        for written in (tmp / data_name, final):
            if written.exists():
                os.chmod(written, default_file_mode())
        if external_data:
            os.replace(tmp / data_name, path.parent / data_name)
        os.replace(final, path)
        if not external_data:
            (path.parent / data_name).unlink(missing_ok=True)
    logger.info("wrote %s (%s, embedding %d%s)", path, "int8" if int8 else "fp32", embedding_dim,
                f", weights in {data_name}" if external_data else "")
    return path


def _data_file(path: Path) -> Path:
    """Where :func:`export_onnx` keeps the external weights of ``path``: ``FILE.onnx.data`` beside it."""
    return path.with_name(f"{path.name}.data")


def onnx_files(path: str | os.PathLike) -> list[Path]:
    """The files of an exported model: the graph, and its external weights where it has them."""
    path = Path(path)
    return [path] + [f for f in (_data_file(path),) if f.is_file()]


class OnnxSpeakerModel(nn.Module):
    """An exported speaker model (:func:`export_onnx`) run by onnxruntime on the CPU, behind the interface of
    :class:`~svlib.model.speaker.SpeakerModel` that scoring uses.

    ``frontend`` is svlib's :class:`~svlib.frontend.features.FeatureExtractor`; ``model(features, mask)`` runs the
    graph once per utterance on its valid frames (the graph takes one unpadded utterance); ``embed`` and
    ``embed_waveforms`` as for the PyTorch model. The SHA-256 of the file (and of its external
    weights, ``FILE.onnx.data``, where it has them) is a buffer, so the embedding caches of
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
        digest = hashlib.sha256()
        for file in onnx_files(self.path):
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
        digest = digest.digest()
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
