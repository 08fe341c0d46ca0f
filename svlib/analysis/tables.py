"""The paper's Tables 1–3 next to this project's numbers: the reference CSV, the record-name conventions, the join.

:func:`book_tables` joins the paper's numbers (:func:`paper_reference`) with the records of the results store
(:func:`svlib.core.results.load_results`).

Record conventions
------------------
Chapters and the ``svlib train|prune|score`` commands record what they measure with
:func:`svlib.core.results.record_result`; these ``kind``/``name`` pairs are what
:func:`book_tables` joins to the paper's rows (the ``record`` column of ``results/paper_reference.csv``):

* ``kind="eval"`` — one model scored on one trial list. ``name`` = :func:`eval_record_name` =
  ``<system>.<train>.<stage>.<test>``:

  - ``system``: a Table 2 model (``ECAPA-TDNN``, ``MFA``, ``Adapter_MFA``, ``LoRA_Adapter_MFA``: the keys of
    :data:`svlib.analysis.complexity.TABLE2_VARIANTS`), with ``-pruned<NN>`` for a model pruned to NN % sparsity
    (``LoRA_Adapter_MFA-pruned80``, Table 3);
  - ``train``: the training data of the model's stage 1 (:data:`TRAIN_DATA`: ``vox2``, ``vox2+vb2``, ``cnceleb``),
    or any other code such as ``demo``;
  - ``stage``: the model's last stage (:data:`STAGES`): ``s1_freeze``, ``s2_joint``, ``s3_lmft``, or
    ``s3_lmft_after_s1`` (LMFT straight after stage 1, Table 2's "+ LMFT (Joint Fine-tuning)");
  - ``test``: the trial list (:data:`TEST_SETS`: ``vox1-o``, ``vox1-e``, ``vox1-h``, ``cnceleb``), or another code
    such as ``demo``.

  ``metrics`` = :attr:`svlib.scoring.evaluate.Evaluation.metrics` (``{"cosine": {...}, "asnorm": {...},
  "asnorm+qmf": {...}}``, each with ``eer_percent`` and ``min_dcf_0.01``); a flat dict counts as cosine scoring.
  Example::

      record_result(default_results_dir(), kind="eval", profile=profile, config=configs / "s3_lmft.yaml",
                    name=eval_record_name("LoRA_Adapter_MFA", "demo", "s3_lmft", "demo"),
                    metrics=evaluation.metrics)

* ``kind="train"`` — one training or pruning stage, written by :func:`svlib.training.stage.record_stage` whenever
  a stage runs (chapter, ``svlib train`` or ``svlib prune``). ``name`` = the stage's ``name``; ``metrics`` =
  :func:`svlib.training.stage.stage_summary` plus ``model_params``. Shown by the Results chapter, not joined to a
  paper row.

* ``kind="complexity"`` — a model's size and cost. ``name`` = the ``system`` as above; ``metrics`` =
  :class:`svlib.analysis.complexity.Complexity`'s ``to_dict()`` (``encoder_params``, ``head_params``, ``macs``,
  ``flops`` for 1 s) plus ``sparsity`` as a fraction.

How a record meets a paper number: "score calibration" no/yes is cosine / AS-norm + QMF scoring; the paper's mDCF is
compared with ``min_dcf_0.01`` (p_target = 0.01); MACs and FLOPs in G, parameters in M, sparsity in %. A record whose
``train`` or ``test`` is not the paper's (the ``demo`` profile's) is shown as its own row right after the first paper
row of the same system, stage, scoring and metric, with an empty paper value: next to the paper's number, never in its place.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from svlib.core.paths import default_results_dir, reference_csv
from svlib.core.results import load_results

logger = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "SYSTEMS",
    "TABLE_COLUMNS",
    "TEST_SETS",
    "TRAIN_DATA",
    "book_tables",
    "eval_record_name",
    "ours_rows",
    "paper_reference",
    "parse_eval_record_name",
]

SYSTEMS = ("ECAPA-TDNN", "MFA", "Adapter_MFA", "LoRA_Adapter_MFA")
"""The Table 2 models (the keys of :data:`svlib.analysis.complexity.TABLE2_VARIANTS`)."""

STAGES = ("s1_freeze", "s2_joint", "s3_lmft", "s3_lmft_after_s1")
"""Last training stage of an evaluated model (record names, see the module docstring)."""

TRAIN_DATA = {"vox2": "VoxCeleb2", "vox2+vb2": "VoxCeleb2 & VoxBlink2", "cnceleb": "CN-Celeb1&2"}
"""Training-data codes of record names and the paper's labels (``train_data`` of the reference CSV)."""

TEST_SETS = {"vox1-o": "Vox1-O", "vox1-e": "Vox1-E", "vox1-h": "Vox1-H", "cnceleb": "CN-Celeb"}
"""Trial-list codes of record names and the paper's labels (``test_set`` of the reference CSV)."""

_SYSTEM = re.compile(r"^(%s)(-pruned\d+)?$" % "|".join(re.escape(s) for s in SYSTEMS))
_CODE = re.compile(r"^[a-z0-9][a-z0-9_+-]*$")
_METHODS = {"cosine": "no", "asnorm+qmf": "yes"}  # scoring method -> the paper's "score calibration"
_EVAL_METRICS = {"eer_percent": "eer", "min_dcf_0.01": "min_dcf"}
_COMPLEXITY_METRICS = {"sparsity": ("sparsity", 100.0), "encoder_params": ("params_encoder", 1e-6),
                       "head_params": ("params_head", 1e-6), "macs": ("macs", 1e-9), "flops": ("flops", 1e-9)}
TABLE_COLUMNS = ["frontend", "system", "variant", "params", "lmft", "calibration", "train_data", "test_set", "metric",
                 "unit", "paper", "ours", "profile", "source", "record"]
"""Columns of every table of :func:`book_tables`."""



_REFERENCE_COLUMNS = (
    "table", "frontend", "system", "variant", "params", "lmft", "calibration", "train_data", "test_set",
    "metric", "value", "unit", "source", "record", "note",
)


def paper_reference(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's numbers (default ``results/paper_reference.csv``), one printed number per row.

    Columns: ``table`` (1–3), ``frontend``, ``system``, ``variant`` (the row label as printed), ``params`` (as
    printed), ``lmft`` and ``calibration`` (``yes``/``no``), ``train_data``, ``test_set``, ``metric`` (``eer``,
    ``min_dcf``, ``macs``, ``flops``, ``speedup``), ``value`` (float), ``unit``, ``source`` (``paper Table N`` or
    the reproduction it comes from), ``record`` (the :mod:`svlib.book.run` record it compares with, or empty) and
    ``note``. Text cells are strings (empty when blank).

    Raises:
        ValueError: the CSV lacks one of these columns or has a non-numeric value.
    """
    path = Path(path) if path is not None else reference_csv()
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(_REFERENCE_COLUMNS)}")
    try:
        df["value"] = df["value"].astype(float)
        df["table"] = df["table"].astype(int)
    except ValueError as err:
        raise ValueError(f"{path}: columns value and table must be numeric ({err})") from err
    return df



def eval_record_name(system: str, train: str, stage: str, test: str) -> str:
    """The ``name`` of an ``eval`` record: ``<system>.<train>.<stage>.<test>`` (see the module docstring).

    Raises:
        ValueError: an unknown system or stage, or a train/test code that is not lower-case letters, digits, ``_+-``.
    """
    if not _SYSTEM.match(system):
        raise ValueError(f"system {system!r}: expected one of {list(SYSTEMS)}, optionally with -pruned<NN>")
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {list(STAGES)}")
    for label, code in (("train", train), ("test", test)):
        if not _CODE.match(code):
            raise ValueError(f"{label} code {code!r}: expected lower-case letters, digits and '_+-', e.g. "
                             f"{list(TRAIN_DATA if label == 'train' else TEST_SETS)} or 'demo'")
    return f"{system}.{train}.{stage}.{test}"


def parse_eval_record_name(name: str) -> tuple[str, str, str, str]:
    """``(system, train, stage, test)`` of an ``eval`` record name (inverse of :func:`eval_record_name`).

    Raises:
        ValueError: ``name`` does not follow the convention.
    """
    parts = name.split(".")
    if len(parts) != 4:
        raise ValueError(f"eval record name {name!r}: expected <system>.<train>.<stage>.<test>")
    eval_record_name(*parts)
    return tuple(parts)


def book_tables(results_dir: str | os.PathLike | None = None,
                reference: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """Tables 1–3 with the paper's numbers next to this project's: ``{"Table 1": df, "Table 2": df, "Table 3": df}``.

    One row per printed number (columns :data:`TABLE_COLUMNS`): ``paper`` is the paper's value, ``ours`` the value of
    the matching record and ``profile`` the profile that made it (one row per profile when several did). Records of
    other training or test data (e.g. the ``demo`` profile's) follow the first paper row of the same system, stage,
    scoring and metric, with ``paper`` empty. Reproductions listed next to the paper keep their ``source``.

    Args:
        results_dir: the results store (default :func:`svlib.core.paths.default_results_dir`).
        reference: the reference CSV (default ``results/paper_reference.csv``).
    """
    paper = paper_reference(reference)
    ours = _our_values(load_results(results_dir if results_dir is not None else default_results_dir()))
    return {f"Table {n}": _join(paper[paper["table"] == n].reset_index(drop=True), ours) for n in (1, 2, 3)}


def _our_values(results: pd.DataFrame) -> pd.DataFrame:
    """Records as (record, metric, calibration, ours, profile) rows in the reference CSV's units."""
    rows = []
    for _, r in results.iterrows():
        base = {"record": r["name"], "profile": r["profile"]}
        if r["kind"] == "eval":
            try:
                parse_eval_record_name(r["name"])
            except ValueError as err:
                logger.warning("results: %s (profile %s) is left out of the tables: %s", r["name"], r["profile"], err)
                continue
            for method, calibration in _METHODS.items():
                for key, metric in _EVAL_METRICS.items():
                    column = f"{method}.{key}"
                    value = r.get(column)
                    if (value is None or pd.isna(value)) and method == "cosine":
                        value = r.get(key)  # a flat metrics dict: cosine scoring
                    if value is not None and not pd.isna(value):
                        rows.append({**base, "metric": metric, "calibration": calibration, "ours": float(value)})
        elif r["kind"] == "complexity":
            for key, (metric, scale) in _COMPLEXITY_METRICS.items():
                value = r.get(key)
                if value is not None and not pd.isna(value):
                    rows.append({**base, "metric": metric, "calibration": "", "ours": float(value) * scale})
    return pd.DataFrame(rows, columns=["record", "profile", "metric", "calibration", "ours"])


def _slot(record: str) -> tuple | None:
    """(system, stage) of an eval record name; None for other names."""
    try:
        system, _, stage, _ = parse_eval_record_name(record)
    except ValueError:
        return None
    return system, stage


def _join(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    key = ["record", "metric", "calibration"]
    paper = paper.rename(columns={"value": "paper"}).assign(order=lambda d: d.index.astype(float))
    merged = paper.merge(ours, on=key, how="left")
    # records of other data (demo): after the first paper row of the same (system, stage, calibration, metric),
    # i.e. next to the table's headline block (VoxCeleb2 / Vox1-O) rather than after its CN-Celeb rows
    slots = {}
    for i, row in paper.iterrows():
        slot = _slot(row["record"])
        if slot is not None:
            slots.setdefault((*slot, row["calibration"], row["metric"]), i)
    extra = []
    for _, row in ours[~ours["record"].isin(set(paper["record"]))].iterrows():
        slot = _slot(row["record"])
        i = slots.get((*slot, row["calibration"], row["metric"])) if slot else None
        if i is None:
            continue
        _, train, _, test = parse_eval_record_name(row["record"])
        at = paper.loc[i]
        extra.append({**at.to_dict(), "paper": float("nan"), "train_data": TRAIN_DATA.get(train, train),
                      "test_set": TEST_SETS.get(test, test), "source": "this project", "note": "",
                      "record": row["record"], "ours": row["ours"], "profile": row["profile"], "order": i + 0.5})
    table = pd.concat([merged, pd.DataFrame(extra, columns=merged.columns)], ignore_index=True) if extra else merged
    table = table.sort_values("order", kind="stable", ignore_index=True)
    table["profile"] = table["profile"].fillna("")
    return table[TABLE_COLUMNS]


def ours_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`book_tables` table that hold this project's numbers, each row of other data (the demo's)
    preceded by the paper row it follows, in the table's order; the reference-only columns are dropped."""
    mine = table["ours"].notna()
    other_data = table["source"].eq("this project")
    keep = mine | other_data.shift(-1, fill_value=False)
    columns = [c for c in TABLE_COLUMNS if c not in ("frontend", "params", "source", "record")]
    return table.loc[keep, columns].reset_index(drop=True)
