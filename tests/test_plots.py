"""The book's figures: one style (width, dpi, smallest text) checked as each figure is made, and every figure of a
chapter shown in Jupyter (a style context once switched the inline backend off after the first figure)."""

import matplotlib
import pytest

from svlib.book import plots


def test_figures_fit_the_column_and_their_text_is_readable():
    fig = plots.plot_curves({"a": ([0, 1], [0, 1]), "b": ([0, 1], [1, 0])}, "x (s)", "y", title="t")
    assert fig.get_size_inches()[0] <= plots.MAX_WIDTH_IN and fig.dpi == plots.DPI
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= plots.MIN_FONT_PT

    @plots.book_figure
    def too_wide():
        return matplotlib.pyplot.figure(figsize=(9, 3))

    @plots.book_figure
    def too_small():
        fig = matplotlib.pyplot.figure(figsize=(5, 3))
        fig.text(0.5, 0.5, "tiny", fontsize=7)
        return fig

    with pytest.raises(ValueError, match="too_wide: figure 9.00 in wide"):
        too_wide()
    with pytest.raises(ValueError, match=r"too_small: text of \[7.0\] pt"):
        too_small()
    assert matplotlib.rcParams["figure.dpi"] != plots.DPI or plots.DPI == 100  # the style does not leak out


@pytest.mark.slow
def test_every_figure_of_a_notebook_is_shown():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    draw = "fig = plots.plot_curves({'a': ([0, 1], [0, 1])}, 'x', 'y')"
    nb.cells = [nbformat.v4.new_code_cell("from svlib.book import plots\n" + draw),
                nbformat.v4.new_code_cell(draw), nbformat.v4.new_code_cell(draw)]
    nbclient.NotebookClient(nb, timeout=300).execute()
    shown = [sum("image/png" in o.get("data", {}) for o in cell.outputs) for cell in nb.cells]
    assert shown == [1, 1, 1]


def test_sparsity_sweep_figure_has_both_axes_and_labels_every_point():
    points = {"demo": [(0, 1.2, 30.0, 5.0, 4.0, 6.0), (80, 0.3, 9.0, 7.0, 5.5, 8.0), (50, 0.6, 17.0, 5.5, 4.4, 6.5)],
              "cross-channel": [(0, 1.2, 30.0, 9.0, 8.0, 10.0), (80, 0.3, 9.0, 11.0, 9.0, 13.0),
                                (50, 0.6, 17.0, 10.0, 9.0, 11.0)]}
    fig = plots.plot_sparsity_sweep(points, title="demo scale")
    left, right = fig.axes[:2]
    assert left.get_xlabel().startswith("GMACs") and "measured" in right.get_xlabel()
    assert sorted(t.get_text() for t in left.texts) == ["0 %", "50 %", "80 %"]
    line = left.lines[0]
    assert list(line.get_xdata()) == [1.2, 0.6, 0.3], "points in order of sparsity"


def test_sparsity_sweep_tick_labels_do_not_overlap():
    """Forward times of 12.3, 14.4 and 14.7 ms (the demo's): the labels at the points would run into each other."""
    points = {"demo": [(0, 0.0343, 14.7, 12.3, 7.8, 16.8), (60, 0.0224, 14.4, 15.6, 10.1, 20.8),
                       (79, 0.0184, 12.3, 15.4, 9.8, 20.6)]}
    fig = plots.plot_sparsity_sweep(points)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:2]:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) >= 2
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_xticklabels()]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()] == ["12.3", "14.7"]

