"""Figures for the book. Each function draws one figure from computed values and returns the ``Figure``.

Plotting code lives here, not in the chapters, so the notebooks stay narrative + calls. Axes carry units and
titles name the profile that produced the numbers. Every figure is drawn in one style (:data:`STYLE`): at most
:data:`MAX_WIDTH_IN` inches wide, the width of the book's content column, at :data:`DPI` dots per inch, with no
text smaller than :data:`MIN_FONT_PT` points, so that a figure is shown at about its natural size and its text stays
readable; :func:`book_figure` checks each figure as it is made.
"""

from __future__ import annotations

from pathlib import Path

import functools

import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.ticker import NullFormatter
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from scipy.special import ndtri  # the probit (the standard normal quantile) of the DET axes

from svlib.core.atomic import atomic_write
from svlib.scoring.metrics import compute_eer, det_curve


MAX_WIDTH_IN = 7.0
"""The widest figure (inches): at :data:`DPI` it is about the 740-px content column of a 1280-px window."""
DPI = 150
"""Dots per inch of the figures, on screen and in the PNGs :func:`save_figure` writes."""
MIN_FONT_PT = 9.0
"""The smallest text (points) in a figure."""
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
}
"""matplotlib settings of every book figure."""


def book_figure(plot):
    """Draw ``plot``'s figure in :data:`STYLE`, then check its width and the size of every text in it.

    Raises:
        ValueError: naming the figure function, when the figure is wider than :data:`MAX_WIDTH_IN` or a text is
            smaller than :data:`MIN_FONT_PT`.
    """

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        # only the style's own settings are set and restored (plt.rc_context would also restore "interactive" as it
        # was before the inline backend started, and Jupyter would stop showing figures after the first)
        saved = {key: plt.rcParams[key] for key in STYLE}
        plt.rcParams.update(STYLE)
        try:
            fig = plot(*args, **kwargs)
        finally:
            plt.rcParams.update(saved)
        width = fig.get_size_inches()[0]
        if width > MAX_WIDTH_IN + 1e-6:
            raise ValueError(f"{plot.__name__}: figure {width:.2f} in wide; the book's column takes {MAX_WIDTH_IN} in")
        small = sorted({t.get_fontsize() for t in fig.findobj(Text) if t.get_text() and t.get_fontsize() < MIN_FONT_PT})
        if small:
            raise ValueError(f"{plot.__name__}: text of {small} pt; the book's smallest is {MIN_FONT_PT} pt")
        return fig

    return draw


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@book_figure
def plot_features(wav, fbank, normalized, stacked, sample_rate: int = 16_000, title: str = ""):
    """Waveform, log-mel fbank (80 bins, 100 frames/s), its per-utterance normalisation, and the stacked
    160-dim input at 50 frames/s, on a shared time axis in seconds."""
    wav, fbank, normalized, stacked = map(_np, (wav, fbank, normalized, stacked))
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True, constrained_layout=True)
    t = np.arange(len(wav)) / sample_rate
    axes[0].plot(t, wav, lw=0.5)
    axes[0].set_ylabel("amplitude")
    axes[0].set_title("waveform (16 kHz)")
    dur = len(wav) / sample_rate
    for ax, img, name, ylabel in [
        (axes[1], fbank, "log-mel fbank, 80 Kaldi-mel bins, hop 10 ms", "mel bin"),
        (axes[2], normalized, "after per-utterance mean/variance normalisation", "mel bin"),
        (axes[3], stacked, "stacked frame pairs: 160 dims at 50 frames/s (encoder input)", "feature dim"),
    ]:
        frame_s = dur / img.shape[0] if img.shape[0] else 1.0
        im = ax.imshow(img.T, origin="lower", aspect="auto", extent=[0, img.shape[0] * frame_s, 0, img.shape[1]])
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_layer_similarity(hidden_states, title: str = ""):
    """Mean frame-wise cosine similarity between every pair of hidden states ``h_i``, ``h_j`` of Eq. (1).

    Args:
        hidden_states: ``(L+1, B, T, D)``.
    """
    h = torch.nn.functional.normalize(hidden_states.detach().float(), dim=-1)
    sim = torch.einsum("ibtd,jbtd->ij", h, h) / (h.shape[1] * h.shape[2])  # -> (L+1, L+1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    im = ax.imshow(_np(sim), vmin=-1, vmax=1, cmap="RdBu_r", origin="lower")
    ax.set_xlabel("hidden state j (0 = feature projection)")
    ax.set_ylabel("hidden state i")
    ax.set_title(title or "cosine similarity between hidden states")
    fig.colorbar(im, ax=ax, label="mean cosine similarity")
    return fig


@book_figure
def plot_parameter_breakdown(counts: dict[str, int], title: str = ""):
    """Horizontal bars of parameter counts in millions, largest first."""
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1), constrained_layout=True)
    values = [v / 1e6 for _, v in items]
    ax.barh([k for k, _ in items], values)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}M", va="center")
    ax.set_xlabel("parameters (M)")
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_title(title)
    return fig


def _box(ax, xy, w, h, text, color):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.008", fc=color, ec="black", lw=0.8))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def _arrow(ax, a, b):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=0.8, color="0.2"))


@book_figure
def plot_head_dataflow(num_states: int = 25, hidden_size: int = 1024, adapter_dim: int = 128, embed_dim: int = 256):
    """Diagrams of the three heads' data flow with the tensor widths they use (paper Fig. 1), one above the other."""
    n, d, a = num_states, hidden_size, adapter_dim
    fig, axes = plt.subplots(3, 1, figsize=(7, 14), constrained_layout=True)
    specs = [
        ("(a) weighted average + ECAPA-TDNN (Eq. 2)", [
            (f"softmax(w)·h, {n} weights", "#cde"), ("InstanceNorm", "#eee"), ("ECAPA-TDNN C=512", "#fdc"),
            ("ASP (global context)", "#dfd"), (f"Linear → {embed_dim}", "#fdd")], f"{d}"),
        ("(b) MFA (Eq. 3)", [
            (f"concat → {n}·{d} = {n * d}", "#cde"), (f"ASP, hidden {d}", "#dfd"),
            (f"mean ‖ std → {2 * n * d}", "#eee"), (f"Linear → {embed_dim}", "#fdd")], f"{d}"),
        ("(c) Layer Adapter + MFA (§2.4)", [
            (f"{n} adapters: {d}→{a}, LN, ReLU, {a}→{a}", "#ffd"), (f"concat → {n}·{a} = {n * a}", "#cde"),
            (f"ASP, hidden {a}", "#dfd"), (f"mean ‖ std → {2 * n * a}", "#eee"), (f"Linear → {embed_dim}", "#fdd")],
         f"{d}"),
    ]
    for ax, (title, boxes, width) in zip(axes, specs):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        # the hidden states h_0 … h_L, drawn as a row of small boxes with an ellipsis
        for i, label in enumerate(["h0", "h1", "h2", "h3", "…", f"h{n - 1}"]):
            if label == "…":
                ax.text(0.1 + i * 0.15 + 0.045, 0.89, label, ha="center", va="center", fontsize=10)
            else:
                _box(ax, (0.1 + i * 0.15, 0.86), 0.09, 0.06, label, "#ccc")
        ax.text(0.5, 0.96, f"{n} hidden states, each (T, {width})", ha="center", fontsize=9)
        y, h, step = 0.70, 0.08, 0.135
        _arrow(ax, (0.5, 0.85), (0.5, y + h + 0.01))
        for i, (text, color) in enumerate(boxes):
            _box(ax, (0.12, y), 0.76, h, text, color)
            if i + 1 < len(boxes):
                _arrow(ax, (0.5, y - 0.01), (0.5, y - step + h + 0.01))
            y -= step
        ax.text(0.5, y + step - 0.045, f"speaker embedding E ({embed_dim})", ha="center", fontsize=9, weight="bold")
    return fig


@book_figure
def plot_singular_values(values, rank: int, title: str = ""):
    """Singular values of a weight update on a log scale, with the LoRA rank marked."""
    values = _np(values)
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-12), ".-", ms=3)
    ax.axvline(rank, color="C3", ls="--", label=f"LoRA rank r = {rank}")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value of ΔW")
    ax.set_title(title)
    ax.legend()
    return fig


@book_figure
def plot_curves(lines: dict, xlabel: str, ylabel: str, title: str = ""):
    """Line plots on one axis (training losses, margins, schedules), one line per entry.

    Args:
        lines: ``{label: (xs, ys)}``; a single line may have the label ``""`` (no legend then).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    for label, (xs, ys) in lines.items():
        ax.plot(_np(xs), _np(ys), label=label or None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if any(lines):
        ax.legend()
    return fig


@book_figure
def plot_spectrogram_grid(spectrograms: dict, title: str = "", frame_shift_s: float = 0.01, ncols: int = 2):
    """Log-mel spectrograms side by side, one panel per entry, on a common colour scale and time axis in seconds.

    Args:
        spectrograms: panel title -> log-mel energies ``(F, M)`` (frames, mel bins), e.g. ``fbank(wav[None])[0][0]``.
        frame_shift_s: seconds per frame (10 ms fbank hop).
        ncols: panels per row.
    """
    images = {name: _np(s) for name, s in spectrograms.items()}
    values = np.concatenate([img.ravel() for img in images.values()])
    # colour range from the frames above the log floor (digital silence sits at log(1.19e-7) = -15.9 and would
    # wash out the colours of everything else)
    vmin, vmax = np.percentile(values[values > -15.0] if (values > -15.0).any() else values, [2, 99.8])
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH_IN, (2.3 if ncols == 1 else 1.9) * nrows + 0.6),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    for ax, (name, img) in zip(axes.flat, images.items()):
        im = ax.imshow(img.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                       extent=[0, img.shape[0] * frame_shift_s, 0, img.shape[1]])
        ax.set_title(name, fontsize=10)
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    axes[0, 0].set_xlim(0, max(img.shape[0] for img in images.values()) * frame_shift_s)  # shared: the longest
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("mel bin")
    fig.colorbar(im, ax=axes, shrink=0.8, pad=0.01, label="log mel energy")
    if title:
        fig.suptitle(title)
    return fig


_SPLIT_COLOURS = {"train": "C0", "test": "C1"}


@book_figure
def plot_corpus_overview(durations: dict, speakers, title: str = ""):
    """Utterance durations per split (histogram, s), utterances per speaker (histogram) and minutes of audio per
    speaker (bars coloured by split).

    Args:
        durations: split name -> utterance durations in seconds.
        speakers: a table (pandas ``DataFrame`` or list of dicts) with columns ``speaker``, ``split``,
            ``utterances`` and ``minutes``.
    """
    rows = speakers.to_dict("records") if hasattr(speakers, "to_dict") else list(speakers)
    rows = sorted(rows, key=lambda r: (r["split"] != "test", r["minutes"]))
    colours = [_SPLIT_COLOURS.get(s, "C2") for s in durations]
    fig = plt.figure(figsize=(MAX_WIDTH_IN, 0.19 * len(rows) + 1.2), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1])
    ax = fig.add_subplot(grid[0, 0])
    all_d = np.concatenate([_np(d) for d in durations.values()])
    bins = np.linspace(np.floor(all_d.min()), np.ceil(all_d.max()), 30)
    for (split, d), colour in zip(durations.items(), colours):
        ax.hist(_np(d), bins=bins, alpha=0.7, color=colour, label=f"{split} ({len(d)} utterances)")
    ax.set_xlabel("utterance duration (s)")
    ax.set_ylabel("utterances")
    ax.set_title("utterance durations per split")
    ax.legend()
    ax = fig.add_subplot(grid[1, 0])
    counts = {split: [r["utterances"] for r in rows if r["split"] == split] for split in durations}
    top = max(max(c) for c in counts.values() if c)
    for (split, c), colour in zip(counts.items(), colours):
        ax.hist(c, bins=np.arange(0.5, top + 1.5), alpha=0.7, color=colour, label=f"{split} ({len(c)} speakers)")
    ax.set_xlabel("utterances per speaker")
    ax.set_ylabel("speakers")
    ax.set_title("utterances per speaker")
    ax.legend()
    bar = fig.add_subplot(grid[:, 1])
    y = np.arange(len(rows))
    bar.barh(y, [r["minutes"] for r in rows], color=[_SPLIT_COLOURS.get(r["split"], "C2") for r in rows])
    bar.set_yticks(y, [r["speaker"] for r in rows], fontsize=MIN_FONT_PT)
    bar.set_ylim(-0.6, len(rows) - 0.4)
    bar.set_xlabel("audio per speaker (min)")
    bar.set_title("minutes per speaker")
    bar.legend(handles=[Patch(color=c, label=split) for split, c in _SPLIT_COLOURS.items()], loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_crop_lengths(crops: dict, ranges: dict | None = None, title: str = ""):
    """Crop length of every batch of one epoch (s) against the batch index, one series per setting.

    Args:
        crops: series label -> crop length in seconds of each batch.
        ranges: series label -> ``(shortest, longest)`` allowed crop in seconds, drawn as a shaded band.
    """
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 3.6), constrained_layout=True)
    for i, (label, seconds) in enumerate(crops.items()):
        seconds = _np(seconds)
        if ranges and label in ranges:
            ax.axhspan(*ranges[label], color=f"C{i}", alpha=0.12, lw=0)
        ax.plot(np.arange(len(seconds)), seconds, ".", ms=2.5, color=f"C{i}", label=f"{label} ({len(seconds)} batches)")
    ax.set_xlabel("batch index within the epoch")
    ax.set_ylabel("crop length (s)")
    ax.legend(loc="center right", markerscale=4)
    if title:
        ax.set_title(title)
    return fig


@book_figure
def plot_training_curves(stages: dict, title: str = ""):
    """Loss, training accuracy, learning rate and validation EER of consecutive stages on one epoch axis.

    Args:
        stages: ``{stage name: list of metrics.jsonl records}`` in training order (see
            :func:`svlib.training.stage.read_metrics`); training records carry ``loss``/``accuracy``/``lr``, validation
            records ``valid_eer_percent``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(MAX_WIDTH_IN, 5.4), sharex=True, constrained_layout=True)
    offset = 0.0
    for i, (name, records) in enumerate(stages.items()):
        steps = [r for r in records if "loss" in r]
        valid = [r for r in records if "valid_eer_percent" in r]
        color = f"C{i}"
        x = [offset + r["epoch"] for r in steps]
        for ax, key in zip(axes.flat[:3], ("loss", "accuracy", "lr")):
            ax.plot(x, [r[key] for r in steps], color=color, lw=1, label=name)
        axes.flat[3].plot([offset + r["epoch"] for r in valid], [r["valid_eer_percent"] for r in valid], "o-",
                          color=color, label=name)
        end = offset + max((r["epoch"] for r in records), default=0.0)
        for ax in axes.flat:
            ax.axvline(end, color="0.8", lw=0.8)
        offset = end
    for ax, label in zip(axes.flat, ("ArcFace loss", "training accuracy", "learning rate", "validation EER (%)")):
        ax.set_ylabel(label)
    axes.flat[2].set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("epoch (stages one after another)")
    axes.flat[0].legend()
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_det(curves: dict, title: str = ""):
    """DET curves (miss vs false-alarm rate on normal-deviate axes) with each curve's EER point.

    Args:
        curves: ``{label: (scores, labels)}``, labels True for target trials; each EER is
            :func:`~svlib.scoring.metrics.compute_eer` of the scores, the number the tables show.
    """
    points, eers = {}, {}
    for label, (scores, labels) in curves.items():
        fpr, fnr, _ = det_curve(scores, labels)
        points[label] = (fpr, fnr)
        eers[label] = 100 * compute_eer(scores, labels)[0]
    return plot_det_points(points, eers=eers, title=title)


@book_figure
def plot_det_points(curves: dict, eers: dict | None = None, title: str = ""):
    """DET curves from precomputed operating points, each with its EER point.

    Args:
        curves: ``{label: (false-alarm rates, miss rates)}``, the rates as fractions along the curve.
        eers: ``{label: EER in %}``, the EERs computed from the scores (e.g. a record's ``eer_percent``), shown in
            the legend and as the points on the diagonal; without it the EER is read off the given points (an
            approximation when they are a thinned curve).
    """
    fig, ax = plt.subplots(figsize=(5.5, 5.5), constrained_layout=True)
    ticks = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6])
    lo, hi = ndtri(0.005), ndtri(0.7)
    eps = 1e-4
    for i, (label, (fpr, fnr)) in enumerate(curves.items()):
        fpr, fnr = _np(fpr), _np(fnr)
        if eers is not None and label in eers:
            eer = eers[label] / 100
        else:
            k = int(np.argmin(np.abs(fpr - fnr)))
            eer = (fpr[k] + fnr[k]) / 2
        ax.plot(ndtri(np.clip(fpr, eps, 1 - eps)), ndtri(np.clip(fnr, eps, 1 - eps)), color=f"C{i}",
                label=f"{label} (EER {100 * eer:.2f} %)")
        ax.plot(ndtri(max(eer, eps)), ndtri(max(eer, eps)), "o", color=f"C{i}")
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=0.8, ls="--")
    ax.set_xticks(ndtri(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(ndtri(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("false-alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.legend(loc="upper right")
    ax.set_title(title or "DET curves")
    return fig


@book_figure
def plot_score_distributions(scores: dict, labels, title: str = ""):
    """Histograms of target and non-target scores, one panel per scoring method.

    Args:
        scores: ``{method: (n_trials,) scores}``.
        labels: ``(n_trials,)`` bool, True for target trials.
    """
    labels = _np(labels).astype(bool)
    ncols = min(len(scores), 3)
    nrows = -(-len(scores) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH_IN, 2.6 * nrows), constrained_layout=True,
                             squeeze=False)
    for ax in axes.flat[len(scores):]:
        ax.axis("off")
    for ax, (name, s) in zip(axes.flat, scores.items()):
        s = _np(s)
        bins = np.linspace(s.min(), s.max(), 40)
        ax.hist(s[~labels], bins=bins, alpha=0.6, label="non-target", color="C0")
        ax.hist(s[labels], bins=bins, alpha=0.6, label="target", color="C1")
        ax.set_xlabel(f"{name} score")
        ax.set_ylabel("trials")
    axes[0, 0].legend()
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_hard_concrete(samples: dict, title: str = ""):
    """Histograms of Hard Concrete gate samples (Eq. 7), one panel per ``log α``.

    The stretched-and-clamped distribution has point masses at exactly 0 and 1 (drawn as bars at the ends, their
    probability written above them) and a continuous density in between.

    Args:
        samples: ``{log α: (n,) samples of z}``.
    """
    ncols = min(len(samples), 3)
    nrows = -(-len(samples) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH_IN, 2.5 * nrows), sharey=True, constrained_layout=True,
                             squeeze=False)
    for ax in axes.flat[len(samples):]:
        ax.axis("off")
    for ax, (log_alpha, z) in zip(axes.flat, samples.items()):
        z = _np(z)
        inner = z[(z > 0) & (z < 1)]
        bins = np.linspace(0, 1, 41)
        density = np.histogram(inner, bins=bins)[0] / len(z)
        ax.bar(bins[:-1], density, width=bins[1] - bins[0], align="edge", color="C0", alpha=0.7, label="0 < z < 1")
        for x, p in ((0.0, float((z == 0).mean())), (1.0, float((z == 1).mean()))):
            ax.bar(x, p, width=0.04, color="C3", alpha=0.8)
            ax.annotate(f"{p:.2f}", (x, p), ha="center", va="bottom", fontsize=MIN_FONT_PT)
        ax.set_xlabel("gate value z")
        ax.set_title(f"log α = {log_alpha:g}")
    for ax in axes[:, 0]:
        ax.set_ylabel("probability per bin")
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_pruning_curves(records: list, title: str = ""):
    """Expected sparsity vs target, the multipliers λ1, λ2, and the distillation loss over a pruning run.

    Args:
        records: ``metrics.jsonl`` records of a distill + prune stage (``sparsity``, ``target``, ``lambda1``,
            ``lambda2``, ``distill`` per step).
    """
    steps = [r for r in records if "sparsity" in r and "final_sparsity" not in r]
    x = [r["step"] for r in steps]
    fig, axes = plt.subplots(3, 1, figsize=(MAX_WIDTH_IN, 7.2), sharex=True, constrained_layout=True)
    axes[0].plot(x, [r["target"] for r in steps], "--", color="0.4", label="target t")
    axes[0].plot(x, [r["sparsity"] for r in steps], color="C0", label="expected sparsity s")
    final = [r for r in records if "final_sparsity" in r]
    if final:
        axes[0].plot(x[-1], final[-1]["final_sparsity"], "o", color="C3", label="after pruning")
    axes[0].set_ylabel("sparsity")
    axes[0].legend()
    axes[1].plot(x, [r["lambda1"] for r in steps], label="λ1")
    axes[1].plot(x, [r["lambda2"] for r in steps], label="λ2")
    axes[1].axhline(0, color="0.8", lw=0.8)
    axes[1].set_ylabel("Lagrange multiplier")
    axes[1].legend()
    axes[2].plot(x, [r["distill"] for r in steps], color="C2")
    axes[2].set_ylabel("distillation loss (Eq. 5)")
    axes[2].set_xlabel("optimizer step")
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_pruned_structure(structures: dict, title: str = ""):
    """Kept fraction of FFN units (both FFNs), attention heads and conv channels per layer, one row per structure.

    Args:
        structures: ``{label: PrunedStructure}`` (see :class:`svlib.model.structure.PrunedStructure`).
    """
    fig, axes = plt.subplots(len(structures), 1, figsize=(MAX_WIDTH_IN, 2.6 * len(structures) + 0.5),
                             constrained_layout=True, squeeze=False)
    for ax, (label, s) in zip(axes[:, 0], structures.items()):
        layers = np.arange(1, s.num_layers + 1)
        fractions = s.kept_fractions(per_layer=True)
        series = {kind: fractions[kind] for kind in ("FFN 1 units", "FFN 2 units", "attention heads", "conv channels")}
        width = 0.2
        for i, (name, values) in enumerate(series.items()):
            ax.bar(layers + (i - 1.5) * width, values, width=width, label=name)
        ax.set_ylim(0, 1.05)
        ax.set_xticks(layers[::2] if s.num_layers > 12 else layers)
        ax.set_ylabel("kept fraction")
        ax.set_title(label, fontsize=10)
    axes[-1, 0].set_xlabel("Conformer layer")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), ncol=4, loc="outside lower center")
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_eer_by_stage(series: dict, title: str = ""):
    """EER after each training stage, one line per system and scoring, one panel per source (paper, this run).

    Args:
        series: ``{panel title: {line label: {stage: EER in %}}}``; a value ``(EER, low, high)`` is drawn with
            its interval as an error bar.
    """
    fig, axes = plt.subplots(len(series), 1, figsize=(MAX_WIDTH_IN, 3.0 * len(series)), constrained_layout=True,
                             squeeze=False)
    for ax, (panel, lines) in zip(axes[:, 0], series.items()):
        stages = sorted({s for line in lines.values() for s in line}, key=lambda s: s.split("_")[0])
        for i, (label, values) in enumerate(lines.items()):
            xs = np.array([stages.index(s) for s in values]) + 0.04 * (i - (len(lines) - 1) / 2)  # bars side by side
            points = [v if isinstance(v, tuple) else (v, v, v) for v in values.values()]
            eer, low, high = (np.array(c, dtype=float) for c in zip(*points))
            ax.errorbar(xs, eer, yerr=[eer - low, high - eer], fmt="o-", color=f"C{i}", capsize=3, label=label)
        ax.set_xticks(range(len(stages)), stages)
        ax.set_ylabel("EER (%)")
        ax.set_title(panel, fontsize=10)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


@book_figure
def plot_complexity_vs_sparsity(points: dict, title: str = ""):
    """Encoder parameters and MACs (1 s of audio) against sparsity, this project's counts next to the paper's.

    Args:
        points: ``{label: [(sparsity %, encoder params in M, GMACs), ...]}``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 3.4), constrained_layout=True)
    markers = ["o", "s", "^", "D"]
    for i, (label, rows) in enumerate(points.items()):
        rows = sorted(rows)
        x = [r[0] for r in rows]
        axes[0].plot(x, [r[1] for r in rows], marker=markers[i % 4], ls="-", label=label)
        axes[1].plot(x, [r[2] for r in rows], marker=markers[i % 4], ls="-", label=label)
    axes[0].set_ylabel("encoder parameters (M)")
    axes[1].set_ylabel("GMACs per second of audio")
    for ax in axes:
        ax.set_xlabel("sparsity (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center")
    if title:
        fig.suptitle(title)
    return fig


_SWEEP_X_MARGIN = 0.15
"""Margin of :func:`plot_sparsity_sweep`'s x axes on each side, as a fraction of the data range (``ax.margins``)."""


def _spaced(values: list[float], gap: float = 0.12, margin: float = _SWEEP_X_MARGIN) -> list[float]:
    """The sorted positive ``values`` a log axis can label without the labels running into each other: each kept one
    at least ``gap`` of the axis (the values' log range plus ``margin`` of it on each side) from the previous one; the
    smallest is kept, and the largest in place of a too-close neighbour (unless that is the smallest)."""
    logs = np.log10(values)
    span = max(float(logs[-1] - logs[0]), 1e-12) * (1 + 2 * margin)
    kept = [0]
    for i in range(1, len(values)):
        if logs[i] - logs[kept[-1]] >= gap * span:
            kept.append(i)
        elif i == len(values) - 1 and len(kept) > 1:
            kept[-1] = i  # the largest replaces a too-close neighbour
    return [values[i] for i in kept]


@book_figure
def plot_sparsity_sweep(points: dict, title: str = ""):
    """EER with its interval against MACs (left) and measured forward time (right), one point per sparsity.

    Args:
        points: ``{trial list: [(sparsity %, GMACs, milliseconds, EER, low, high), ...]}``; each point is labelled
            with its sparsity.
    """
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 3.6), sharey=True, constrained_layout=True)
    markers = ["o", "s", "^", "D"]
    for i, (name, rows) in enumerate(points.items()):
        rows = sorted(rows)
        eer, low, high = (np.array([r[k] for r in rows], dtype=float) for k in (3, 4, 5))
        for ax, k in zip(axes, (1, 2)):
            x = np.array([r[k] for r in rows], dtype=float)
            ax.errorbar(x, eer, yerr=[eer - low, high - eer], fmt=markers[i % 4] + "-", color=f"C{i}", capsize=3,
                        label=name)
            if i == 0:
                for xi, yi, r in zip(x, eer, rows):
                    ax.annotate(f"{r[0]:g} %", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=9)
    axes[0].set_xlabel("GMACs per second of audio")
    axes[1].set_xlabel("forward time (ms, CPU, measured)")
    axes[0].set_ylabel("EER (%)")
    for ax, k in zip(axes, (1, 2)):
        # log axes ticked at the points themselves: over a narrow range matplotlib's minor labels (1.1×10¹, …)
        # ran into each other; a margin keeps the sparsity labels inside the axes
        ax.set_xscale("log")
        values = _spaced(sorted({float(r[k]) for rows in points.values() for r in rows}))
        ax.set_xticks(values, [f"{v:.3g}" for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=_SWEEP_X_MARGIN)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=max(1, len(points)))
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, directory, name: str):
    """Write ``fig`` to ``directory/name.png`` (:data:`DPI`, atomically) and return the path."""
    path = Path(directory) / f"{name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"), suffix=".png")
    return path
