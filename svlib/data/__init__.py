"""Data for svlib: Kaldi-style lists and trials (:mod:`~svlib.data.lists`), preparation of VoxCeleb, VoxBlink2 and
CN-Celeb (:mod:`~svlib.data.prepare`), the offline demo corpus from Debian packages and its cross-channel trials
(:mod:`~svlib.data.demo`, :mod:`~svlib.data.debian`, :mod:`~svlib.data.cross_channel`), training datasets and
samplers (:mod:`~svlib.data.dataset`, :mod:`~svlib.data.loader`), augmentation (:mod:`~svlib.data.augment`) and
recording-channel simulation (:mod:`~svlib.data.channel`)."""
