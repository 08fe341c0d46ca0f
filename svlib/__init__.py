"""svlib: speaker verification with w2v-BERT 2.0, LoRA, Layer-Adapter MFA and KD-guided structured pruning.

The library behind the companion book of Li, Cheng & Li, "Enhancing speaker verification with w2v-BERT 2.0 and
knowledge distillation guided structured pruning". Layers (imports only point down):

1. :mod:`svlib.audio`, :mod:`svlib.features` — audio I/O and the SeamlessM4T fbank front end (Eq. 1's ``Fbank``).
2. :mod:`svlib.encoder` — the w2v-BERT 2.0 encoder (transformers ``Wav2Vec2BertModel``), LoRA (Eq. 4).
3. :mod:`svlib.heads`, :mod:`svlib.losses`, :mod:`svlib.model` — speaker heads (Eqs. 2–3), ArcFace, the speaker model.
4. :mod:`svlib.complexity` — parameter and MAC/FLOP counting for Tables 2 and 3.
"""

__version__ = "0.1.0"


def load_model(path, map_location="cpu"):
    """Load a speaker model saved with :meth:`svlib.model.SpeakerModel.save` (a directory or its ``config.json``)."""
    from svlib.model import load_model as _load

    return _load(path, map_location=map_location)


__all__ = ["load_model", "__version__"]
