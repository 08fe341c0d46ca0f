"""Numbers about models and runs: parameters, MACs and FLOPs of every variant (:mod:`~svlib.analysis.complexity`),
the paper's Tables 1–3 joined with the recorded results (:mod:`~svlib.analysis.tables`)."""
