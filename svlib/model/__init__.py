"""The speaker model of §2: the w2v-BERT 2.0 encoder (:mod:`~svlib.model.encoder`, LoRA included), the speaker heads
(:mod:`~svlib.model.heads`), the AAM-softmax loss (:mod:`~svlib.model.losses`), the model that joins them with the
front end (:mod:`~svlib.model.speaker`), and the architecture of a pruned encoder (:mod:`~svlib.model.structure`,
:mod:`~svlib.model.resize`), so that a pruned model loads like any other.
"""

from svlib.model.speaker import SpeakerModel, SpeakerModelConfig, load_model

__all__ = ["SpeakerModel", "SpeakerModelConfig", "load_model"]
