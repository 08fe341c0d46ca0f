"""svlib: speaker verification with w2v-BERT 2.0, LoRA, Layer-Adapter MFA and KD-guided structured pruning.

The library behind the companion book of Li, Cheng & Li, "Enhancing speaker verification with w2v-BERT 2.0 and
knowledge distillation guided structured pruning". Its packages, each importing only from those before it:

=================  ===================================================================================================
:mod:`~svlib.core`       atomic writes, torchrun helpers, the roots of configs/data/results, the results store
:mod:`~svlib.frontend`   audio I/O and the SeamlessM4T fbank front end (Eq. 1's ``Fbank``)
:mod:`~svlib.model`      the w2v-BERT 2.0 encoder and LoRA (Eqs. 1, 4), heads (Eqs. 2–3), ArcFace, the speaker model,
                         the architecture of a pruned encoder
:mod:`~svlib.pruning`    Hard Concrete gates, the gated encoder, expected parameters, distillation and the augmented
                         Lagrangian (Eqs. 5–9)
:mod:`~svlib.data`       Kaldi lists, corpus preparation, augmentation, speed perturbation, the demo corpus, profiles
:mod:`~svlib.scoring`    embedding extraction, cosine scoring, AS-norm, QMF, EER and minDCF
:mod:`~svlib.training`   the SV stages (§3.3) and the pruning stages (§3.4) under one runner (torchrun, resume)
:mod:`~svlib.analysis`   parameters, MACs and FLOPs (Tables 2–3); the paper's tables next to the recorded results
:mod:`~svlib.bench`      benchmarks on one timing helper
:mod:`~svlib.book`       running the chapters, their figures, the rehearsal of the full-scale commands
:mod:`~svlib.cli`        the ``svlib`` command
=================  ===================================================================================================
"""

from svlib._version import __version__
from svlib.model import load_model

__all__ = ["__version__", "load_model"]
