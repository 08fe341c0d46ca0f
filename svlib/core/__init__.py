"""Infrastructure every layer uses: atomic writes, torchrun helpers, progress bars (:mod:`~svlib.core.progress`),
the roots of configs/data/results (:mod:`~svlib.core.paths`) and the results store (:mod:`~svlib.core.results`)."""
