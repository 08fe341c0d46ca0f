"""Audio in, features out: soundfile I/O with validation and resampling (:mod:`~svlib.frontend.audio`), the
SeamlessM4T-exact fbank front end of w2v-BERT 2.0 (:mod:`~svlib.frontend.features`)."""
