"""Running the book: chapters with papermill and their stages in or out of process (:mod:`~svlib.book.run`), the
chapters' figures (:mod:`~svlib.book.plots`), and the rehearsal of the full-scale reproduction
(:mod:`~svlib.book.rehearse`)."""
