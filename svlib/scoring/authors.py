"""Load the authors' released speaker models (``model_*.pth``, ZXHY-82/w2v-BERT-2.0_SV) into svlib.

The authors publish LoRA_Adapter_MFA checkpoints (e.g. ``model_base_0.23.pth`` and ``model_lmft_0.14.pth``,
Table 1). This module reads one into a :class:`~svlib.model.speaker.SpeakerModel` with ``head="adapter_mfa"`` so that it
can be scored with :func:`svlib.scoring.evaluate.evaluate_model` and compared with the paper.

Checkpoint layout (read from the authors' ``recipes/DeepASV/local/spk_model.py`` (``Audio2Vec_based_Adapter``),
``deeplab/pretrained/audio2vector/api.py`` (``AudioEncoder``) and ``utils/get_embd_w2v.py`` / ``lora_merge.py``):

* the file is ``dict(modules={name: state_dict}, epoch_idx=…)`` (``deeplab/core/trainer.py``, DDP wrappers
  removed before saving): ``"spk_model"`` is the speaker model and ``"classifier"`` the ArcFace weights (not part
  of the speaker model, ignored here);
* the speaker model is ``front.encoder`` (transformers' ``Wav2Vec2BertModel``, same parameter names as
  transformers — the authors' fork only adds pruning gates, absent when ``prune`` is false — with
  ``masked_spec_embed`` deleted), wrapped by peft as ``front.encoder.base_model.model.…`` while LoRA is attached
  (stage 1; ``lora_A.default`` / ``lora_B.default`` / ``base_layer``); the released stage-2/LMFT models are merged;
* ``adapter_layers.{i}`` = ``nn.Sequential(Linear(1024→128), LayerNorm(128), ReLU, Linear(128→128))`` for the
  25 hidden states, indices 0, 1 and 3 holding weights;
* ``pooling`` = ASP whose ``attention`` is ``nn.Sequential(Conv1d(3200→128), ReLU, BatchNorm1d(128),
  Conv1d(128→3200), Softmax(dim=2))``, indices 0, 2 and 3 holding weights (the key names of ``pooling_v2.ASP``
  were read from a third-party repackaging of the authors' module, cairo-project/w2v-BERT-2.0_SV,
  ``packages/w2vbert_speaker/src/w2vbert_speaker/local/modules/pooling_v2.py``: the authors' own file is not
  public in the index searched);
* ``bottleneck`` = ``Linear(6400→256)``.

Their forward matches svlib's Adapter-MFA head: adapter ``i`` reads hidden state ``h_i`` (``i = 0`` is the
feature projection), the adapter outputs are concatenated state-major (channels ``128·i … 128·i+127``), ASP
weights are softmax-normalised over time per channel, and the std is ``sqrt(clamp(E[x²] − μ², 1e-5))``.

Loading is strict: every checkpoint key must map through :data:`AUTHORS_KEY_MAP`, every svlib key must be
filled, and shapes must agree. (``masked_spec_embed``, which the authors delete, is not in svlib's encoder either:
see :func:`svlib.model.encoder.drop_spec_augment_embedding`.) Pruned checkpoints (other
layer sizes) are not supported by the default encoder config.

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from svlib.model.encoder import LoRAConfig
from svlib.model import SpeakerModel

logger = logging.getLogger(__name__)

__all__ = [
    "AUTHORS_KEY_MAP",
    "unwrap_state_dict",
    "map_authors_key",
    "map_authors_state_dict",
    "load_authors_checkpoint",
]

AUTHORS_KEY_MAP: tuple[tuple[str, str], ...] = (
    # authors' key (regular expression, full match)                   svlib key (groups substituted in order)
    (r"front\.encoder\.base_model\.model\.(.+)", "encoder.model.base_model.model.{0}"),  # peft-wrapped (LoRA attached)
    (r"front\.encoder\.(.+)", "encoder.model.{0}"),  # transformers Wav2Vec2BertModel
    (r"adapter_layers\.(\d+)\.0\.(weight|bias)", "head.adapters.{0}.linear1.{1}"),  # Linear(1024→128)
    (r"adapter_layers\.(\d+)\.1\.(weight|bias)", "head.adapters.{0}.norm.{1}"),  # LayerNorm(128)
    (r"adapter_layers\.(\d+)\.3\.(weight|bias)", "head.adapters.{0}.linear2.{1}"),  # Linear(128→128)
    (r"pooling\.attention\.0\.(weight|bias)", "head.pooling.conv1.{0}"),  # Conv1d(3200→128, k=1)
    (
        r"pooling\.attention\.2\.(weight|bias|running_mean|running_var|num_batches_tracked)",
        "head.pooling.norm.{0}",
    ),  # BatchNorm1d(128)
    (r"pooling\.attention\.3\.(weight|bias)", "head.pooling.conv2.{0}"),  # Conv1d(128→3200, k=1)
    (r"bottleneck\.(weight|bias)", "head.fc.{0}"),  # Linear(6400→256)
)
"""Authors' ``spk_model`` key → svlib :class:`~svlib.model.speaker.SpeakerModel` key, first matching rule wins."""

_WRAPPERS = ("model", "state_dict", "spk_model")


def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The speaker-model state dict inside a loaded checkpoint.

    Accepts the authors' ``{"modules": {"spk_model": sd, "classifier": ...}, ...}``, ``{"model": sd}``,
    ``{"state_dict": sd}``, ``{"spk_model": sd}`` or a bare state dict, and strips DDP ``module.`` prefixes.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict, found {type(obj).__name__}")
    if "modules" in obj:
        modules = obj["modules"]
        if not isinstance(modules, Mapping) or "spk_model" not in modules:
            found = list(modules) if isinstance(modules, Mapping) else type(modules).__name__
            raise ValueError(f"{source}: 'modules' has no 'spk_model' entry (found {found})")
        ignored = [k for k in modules if k != "spk_model"]
        if ignored:
            logger.info("%s: ignoring modules %s (not part of the speaker model)", source, ignored)
        obj = modules["spk_model"]
    else:
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{source}: entries {not_tensors[:10]} are not tensors; expected a state dict, "
            f"wrapped as {{'modules': {{'spk_model': ...}}}}, {{'model': ...}} or {{'state_dict': ...}}"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def map_authors_key(key: str) -> str | None:
    """The svlib key for one authors' key (``None`` if no rule of :data:`AUTHORS_KEY_MAP` matches)."""
    for pattern, template in AUTHORS_KEY_MAP:
        m = re.fullmatch(pattern, key)
        if m:
            return template.format(*m.groups())
    return None


def map_authors_state_dict(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename every key with :func:`map_authors_key`; keys no rule maps are an error listing them."""
    mapped, unmapped = {}, []
    for key, value in state.items():
        new = map_authors_key(key)
        if new is None:
            unmapped.append(key)
        else:
            mapped[new] = value
    if unmapped:
        raise ValueError(
            f"{source}: {len(unmapped)} keys match no rule of svlib.scoring.authors.AUTHORS_KEY_MAP "
            f"(expected an Adapter-MFA speaker model), e.g. {unmapped[:20]}"
        )
    return mapped


def _detect_lora(state: Mapping[str, torch.Tensor], alpha: float) -> LoRAConfig | None:
    """LoRA config from peft keys ``….<target>.lora_A.default.weight`` of shape ``(r, d_in)``."""
    lora_a = {k: v for k, v in state.items() if ".lora_A." in k}
    if not lora_a:
        return None
    ranks = {v.shape[0] for v in lora_a.values()}
    if len(ranks) != 1:
        raise ValueError(f"LoRA weights have several ranks {sorted(ranks)}; expected one r for every module")
    targets = sorted({k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in lora_a})
    return LoRAConfig(r=ranks.pop(), alpha=alpha, dropout=0.0, target_modules=tuple(targets))


def _read_checkpoint(path: Path, trust_pickle: bool):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: authors' checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused objects in the checkpoint ({e}). If you trust the "
            "file, load it with trust_pickle=True"
        ) from e


def load_authors_checkpoint(
    path: str | Path,
    encoder_config: str | Path = "w2v-bert-2.0",
    *,
    lora_alpha: float = 128.0,
    merge_lora: bool = False,
    encoder_overrides: dict | None = None,
    trust_pickle: bool = False,
) -> SpeakerModel:
    """A :class:`~svlib.model.speaker.SpeakerModel` (Adapter-MFA head) holding the weights of an authors' checkpoint.

    Args:
        path: the authors' ``model_*.pth`` (or any state dict in their key layout, see :func:`unwrap_state_dict`).
        encoder_config: the encoder's named config or ``config.json``/checkpoint directory (its weights are not
            read: the checkpoint holds them all).
        lora_alpha: LoRA α if the checkpoint holds unmerged LoRA weights (r is read from their shapes; α is not
            stored, the paper uses 128).
        merge_lora: fold such LoRA weights into the encoder after loading.
        encoder_overrides: ``Wav2Vec2BertConfig`` fields to override.
        trust_pickle: allow arbitrary pickled objects in the file (``torch.load(weights_only=False)``).

    Returns:
        The model in eval mode, on the CPU.
    """
    path = Path(path)
    source = str(path)
    state = map_authors_state_dict(unwrap_state_dict(_read_checkpoint(path, trust_pickle), source), source)
    lora = _detect_lora(state, lora_alpha)
    head_kwargs = {}
    if "head.adapters.0.linear1.weight" in state:
        head_kwargs["adapter_dim"] = state["head.adapters.0.linear1.weight"].shape[0]
    if "head.fc.weight" in state:
        head_kwargs["embed_dim"] = state["head.fc.weight"].shape[0]
    model = SpeakerModel.build(
        encoder_config, head="adapter_mfa", lora=lora, meta=True, encoder_overrides=encoder_overrides, **head_kwargs
    )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} weights of the svlib model are absent from the checkpoint, e.g. {missing[:20]} "
            f"(encoder config {encoder_config!r})"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(f"{source}: {len(unexpected)} mapped keys are not in the svlib model, e.g. {unexpected[:20]}")
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)}, svlib {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError(
            f"{source}: {len(wrong)} shape mismatches (is encoder_config {encoder_config!r} the right size?): "
            + "; ".join(wrong[:10])
        )
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"{source}: tensors not restored: {left_on_meta[:10]}")
    if lora is not None and merge_lora:
        model.encoder.merge_lora()
    logger.info(
        "loaded %d weights from %s (LoRA %s)", len(state), source,
        "none" if lora is None else f"r={lora.r}, alpha={lora.alpha}{', merged' if merge_lora else ''}",
    )
    return model.eval()
