"""Infrastructure every layer uses: atomic writes, torchrun helpers, the roots of configs/data/results
(:mod:`~svlib.core.paths`) and the results store (:mod:`~svlib.core.results`)."""
