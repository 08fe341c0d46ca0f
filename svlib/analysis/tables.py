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
row of the same system, stage, scoring and metric, with an empty paper value: next to the paper's number, never
in its place. The tables in the paper's own layout are :func:`table1`, :func:`table1_ours`, :func:`table2` and
:func:`table3`.
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
    "complexity_points",
    "eer_by_stage",
    "eval_record_name",
    "ours_rows",
    "paper_reference",
    "paper_value",
    "parse_eval_record_name",
    "style_table",
    "table1",
    "table1_ours",
    "table2",
    "table3",
]

SYSTEMS = ("ECAPA-TDNN", "MFA", "Adapter_MFA", "LoRA_Adapter_MFA")
"""The Table 2 models (the keys of :data:`svlib.analysis.complexity.TABLE2_VARIANTS`)."""

STAGES = ("s1_freeze", "s2_joint", "s3_lmft", "s3_lmft_after_s1")
"""Last training stage of an evaluated model (record names, see the module docstring)."""

TRAIN_DATA = {"vox2": "VoxCeleb2", "vox2+vb2": "VoxCeleb2 & VoxBlink2", "cnceleb": "CN-Celeb1&2"}
"""Training-data codes of record names and the paper's labels (``train_data`` of the reference CSV)."""

TEST_SETS = {"vox1-o": "Vox1-O", "vox1-e": "Vox1-E", "vox1-h": "Vox1-H", "cnceleb": "CN-Celeb",
             "demo-cross": "demo, cross-channel"}
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
                        low, high = (r.get(f"{column}_{end}", float("nan")) for end in ("low", "high"))
                        rows.append({**base, "metric": metric, "calibration": calibration, "ours": float(value),
                                     "low": float(low), "high": float(high)})
        elif r["kind"] == "complexity":
            for key, (metric, scale) in _COMPLEXITY_METRICS.items():
                value = r.get(key)
                if value is not None and not pd.isna(value):
                    rows.append({**base, "metric": metric, "calibration": "", "ours": float(value) * scale})
    return pd.DataFrame(rows, columns=["record", "profile", "metric", "calibration", "ours", "low", "high"])


def _cell(row) -> float | str:
    """This project's number as a table shows it: the value, or ``"value [low, high]"`` where the record holds its
    speaker-bootstrap interval (``<metric>_low``/``_high``, :meth:`svlib.scoring.evaluate.Evaluation.add_intervals`)."""
    low, high = row.get("low", float("nan")), row.get("high", float("nan"))
    if pd.isna(low) or pd.isna(high):
        return row["ours"]
    digits = 3 if row["metric"] == "min_dcf" else 2
    return f"{row['ours']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


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


# ----------------------------------------------------------------------------------------------------------------
# The tables in the paper's layout (the Results chapter)
# ----------------------------------------------------------------------------------------------------------------
_METRIC_LABELS = {"eer": "EER (%)", "min_dcf": "minDCF"}
_TEST_ORDER = ["Vox1-O", "Vox1-E", "Vox1-H", "CN-Celeb"]
_YES_NO = {"yes": "✓", "no": "×", "": ""}


def _is_paper(df: pd.DataFrame) -> pd.Series:
    return df["source"].str.startswith("paper Table")


def paper_value(reference: pd.DataFrame | None = None, **key) -> float:
    """The one number the paper prints at ``key``, read from the reference CSV by an explicit key.

    Args:
        reference: :func:`paper_reference` (read when ``None``).
        key: reference columns and values, e.g. ``table=2, system="MFA", variant="freeze PTM",
            train_data="VoxCeleb2", test_set="Vox1-O", metric="eer"``.

    Raises:
        KeyError: no row or several rows of the paper's own numbers (``source`` "paper Table N") match: a key must
            name exactly one printed number.
    """
    ref = paper_reference() if reference is None else reference
    rows = ref[_is_paper(ref)]
    for column, value in key.items():
        if column not in ref.columns:
            raise KeyError(f"paper_value: {column!r} is not a column of the reference CSV")
        rows = rows[rows[column] == value]
    if len(rows) != 1:
        raise KeyError(f"paper_value{key}: {len(rows)} of the paper's numbers match; a key must name exactly one")
    return float(rows["value"].iloc[0])


def _stage_of(record: str) -> tuple[str, str] | None:
    """(system, stage) of a reference CSV ``record`` of an evaluation, else None."""
    return _slot(record) if record else None


def _ours_by_slot(results_dir) -> pd.DataFrame:
    """Every recorded evaluation value with its (system, train, stage, test) and profile."""
    ours = _our_values(load_results(results_dir if results_dir is not None else default_results_dir()))
    rows = []
    for _, r in ours.iterrows():
        try:
            system, train, stage, test = parse_eval_record_name(r["record"])
        except ValueError:
            continue
        rows.append({**r.to_dict(), "system": system, "train": train, "stage": stage, "test": test})
    return pd.DataFrame(rows, columns=[*ours.columns, "system", "train", "stage", "test"])


def _group_label(profile: str, train: str, test: str) -> str:
    """The column group of this project's numbers from ``profile``, trained on ``train``, tested on ``test``."""
    test_label, train_label = TEST_SETS.get(test, test), TRAIN_DATA.get(train, train)
    same = train == test or test_label.startswith(f"{train_label},")  # "demo" and "demo, cross-channel"
    return f"this project ({profile}): " + (test_label if same else f"{train_label} → {test_label}")


def table1(reference: pd.DataFrame | None = None, test_sets: tuple[str, ...] = ("Vox1-O", "Vox1-E", "Vox1-H")
           ) -> pd.DataFrame:
    """The paper's Table 1 as printed: one row per system, EER (%) and minDCF per test set.

    Index: ``(front end, system, params, LMFT, cal.)``, LMFT and score calibration ✓/× as in the paper; columns:
    ``(test set, metric)`` for ``test_sets`` (the VoxCeleb1 lists by default; ``("CN-Celeb",)`` for the last column
    group, printed for few systems). Rows without a number in these columns are left out. Only the paper's own
    numbers (reproductions are in :func:`table1_ours`).
    """
    ref = paper_reference() if reference is None else reference
    paper = ref[(ref["table"] == 1) & _is_paper(ref) & ref["test_set"].isin(test_sets)].copy()
    paper["LMFT"] = paper["lmft"].map(_YES_NO)
    paper["calibration"] = paper["calibration"].map(_YES_NO)
    index = ["frontend", "system", "params", "LMFT", "calibration"]
    paper["order"] = range(len(paper))
    rows = paper.groupby(index, sort=False)["order"].min().sort_values().index
    table = paper.pivot_table(index=index, columns=["test_set", "metric"], values="value", aggfunc="first")
    columns = [(t, m) for t in test_sets for m in ("eer", "min_dcf") if (t, m) in table.columns]
    table = table.reindex(index=rows, columns=pd.MultiIndex.from_tuples(columns))
    table.columns = pd.MultiIndex.from_tuples([(t, _METRIC_LABELS[m]) for t, m in columns])
    table.index.names = ["front end", "system", "params", "LMFT", "cal."]
    return table


_T1_STAGES = {("no", "no"): ("s2_joint", "no"), ("yes", "no"): ("s3_lmft", "no"), ("yes", "yes"): ("s3_lmft", "yes")}
"""Table 1's LoRA_Adapter_MFA rows (LMFT, calibration) → the recorded (stage, calibration)."""


def table1_ours(results_dir: str | os.PathLike | None = None, reference: pd.DataFrame | None = None,
                test_set: str = "Vox1-O") -> pd.DataFrame:
    """Table 1's LoRA_Adapter_MFA rows next to this project's numbers and the reproductions listed with the paper.

    Rows: (LMFT, calibration). Column groups: ``paper`` (``test_set``), each reproduction by its source (WeSpeaker's
    is without calibration and without LMFT), and one group per profile and trial list this project recorded, with
    EER (%) and minDCF.
    """
    ref = paper_reference() if reference is None else reference
    ours = _ours_by_slot(results_dir)
    out = {}
    for (lmft, calibration), (stage, method) in _T1_STAGES.items():
        row = {}
        for metric in ("eer", "min_dcf"):
            key = dict(table=1, system="LoRA_Adapter_MFA", lmft=lmft, calibration=calibration, test_set=test_set,
                       train_data="VoxCeleb2 & VoxBlink2", metric=metric)
            row[("paper", f"{test_set} {_METRIC_LABELS[metric]}")] = paper_value(ref, **key)
        others = ref[(ref["table"] == 1) & ~_is_paper(ref) & (ref["system"] == "LoRA_Adapter_MFA")
                     & (ref["test_set"] == test_set)]
        if (lmft, calibration) == ("no", "no"):
            for _, r in others.iterrows():
                row[(r["source"], f"{test_set} {_METRIC_LABELS[r['metric']]}")] = float(r["value"])
        mine = ours[(ours["system"] == "LoRA_Adapter_MFA") & (ours["stage"] == stage)
                    & (ours["calibration"] == method)]
        for _, r in mine.iterrows():
            row[(_group_label(r["profile"], r["train"], r["test"]), _METRIC_LABELS[r["metric"]])] = _cell(r)
        out[(_YES_NO[lmft], _YES_NO[calibration])] = row
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.names = ["LMFT", "calibration"]
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


_T2_BLOCKS = [("VoxCeleb2", "Vox1-O"), ("VoxCeleb2 & VoxBlink2", "Vox1-O"), ("CN-Celeb1&2", "CN-Celeb")]


def table2(results_dir: str | os.PathLike | None = None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 2 as printed (one row per architecture and schedule, its EER per training set) next to this project's.

    Index: ``(model, variant)`` in the paper's order; columns: ``("paper", "params")``, ``("paper", "<training
    data> → <test set>")`` for the paper's three blocks (EER, %), and one group per profile and trial list this
    project recorded (cosine EER, %).
    """
    ref = paper_reference() if reference is None else reference
    paper = ref[(ref["table"] == 2) & _is_paper(ref)].copy()
    ours = _ours_by_slot(results_dir)
    ours = ours[(ours["metric"] == "eer") & (ours["calibration"] == "no")]
    paper["order"] = range(len(paper))
    rows = {}
    for _, r in paper.sort_values("order").iterrows():
        key = (r["system"], r["variant"])
        row = rows.setdefault(key, {})
        if (r["train_data"], r["test_set"]) == _T2_BLOCKS[0] or ("paper", "params") not in row:
            row[("paper", "params")] = r["params"]
        row[("paper", f"{r['train_data']} → {r['test_set']}")] = float(r["value"])
        slot = _stage_of(r["record"])
        if slot is None:
            continue
        mine = ours[(ours["system"] == slot[0]) & (ours["stage"] == slot[1])]
        for _, m in mine.iterrows():
            if TRAIN_DATA.get(m["train"]) in {b for b, _ in _T2_BLOCKS}:
                continue  # a paper-profile record sits in the paper's own block, under "this project … → …" below
            row[(_group_label(m["profile"], m["train"], m["test"]), "EER (%)")] = _cell(m)
        for _, m in ours[(ours["system"] == slot[0]) & (ours["stage"] == slot[1])
                         & (ours["train"].map(TRAIN_DATA) == r["train_data"])
                         & (ours["test"].map(TEST_SETS) == r["test_set"])].iterrows():
            row[(f"this project ({m['profile']})", f"{r['train_data']} → {r['test_set']}")] = _cell(m)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "variant"])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    paper_cols = [("paper", "params")] + [("paper", f"{b} → {t}") for b, t in _T2_BLOCKS]
    return table[paper_cols + [c for c in table.columns if c not in paper_cols]]


def table3(results_dir: str | os.PathLike | None = None, reference: pd.DataFrame | None = None
           ) -> dict[str, pd.DataFrame]:
    """Table 3 in two parts: ``"size"`` (parameters, MACs and FLOPs for 1 s, encoder + head) and ``"eer"`` (Vox1-O
    EER without and with LMFT), one row per sparsity, the paper's numbers next to this project's; and ``"other"``,
    the speed-ups of structured pruning published for other models, each with its source.
    """
    ref = paper_reference() if reference is None else reference
    paper = ref[(ref["table"] == 3) & _is_paper(ref)]
    results = load_results(results_dir if results_dir is not None else default_results_dir())
    ours = _ours_by_slot(results_dir)
    size, eer = {}, {}
    for variant, record in (("0 %", "LoRA_Adapter_MFA"), ("≈ 80 %", "LoRA_Adapter_MFA-pruned80")):
        rows = paper[paper["record"].str.startswith(record + ".") | (paper["record"] == record)]
        value = {m: float(rows[rows["metric"] == m]["value"].iloc[0]) for m in ("params_encoder", "params_head",
                                                                              "macs", "flops", "sparsity")}
        s = {("paper", "sparsity (%)"): value["sparsity"],
             ("paper", "params (M)"): rows["params"].iloc[0],
             ("paper", "GMACs"): value["macs"], ("paper", "GFLOPs"): value["flops"]}
        counted = results[(results["kind"] == "complexity") & (results["name"] == record)]
        for _, c in counted.iterrows():
            group = "this project (counted at full size)"
            s[(group, "sparsity (%)")] = 100 * c["sparsity"]
            s[(group, "params (M)")] = f"{c['encoder_params'] / 1e6:.0f}+{c['head_params'] / 1e6:.1f}M"
            s[(group, "GMACs")] = c["macs"] / 1e9
            s[(group, "GFLOPs")] = c["flops"] / 1e9
        size[variant] = s
        e = {}
        for lmft, stage in (("no", "s2_joint"), ("yes", "s3_lmft")):
            label = "LMFT ✓" if lmft == "yes" else "LMFT ×"
            eers = rows[(rows["metric"] == "eer") & (rows["lmft"] == lmft)]
            e[("paper, Vox1-O", label)] = float(eers["value"].iloc[0])
            mine = ours[(ours["system"] == record) & (ours["stage"] == stage) & (ours["metric"] == "eer")
                        & (ours["calibration"] == "no")]
            for _, m in mine.iterrows():
                e[(_group_label(m["profile"], m["train"], m["test"]), label)] = _cell(m)
        eer[variant] = e
    out = {}
    for name, rows in (("size", size), ("eer", eer)):
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "sparsity"
        groups = list(dict.fromkeys(g for g, _ in table.columns))  # paper first, then this project's groups
        table = table[sorted(table.columns, key=lambda c: groups.index(c[0]))]
        table.columns = pd.MultiIndex.from_tuples(table.columns)
        out[name] = table
    others = ref[(ref["table"] == 3) & ~_is_paper(ref)]
    out["other"] = others[["frontend", "system", "variant", "metric", "value", "unit", "source"]].rename(
        columns={"frontend": "model"}).reset_index(drop=True)
    return out


def style_table(table: pd.DataFrame, digits: int = 2):
    """A pandas ``Styler`` for the book: numbers with ``digits`` decimals (minDCF with 3), a missing number shown as
    "–", text (a value with its interval) as it is, column groups centred."""

    def number(v, d):
        if isinstance(v, str):
            return v
        return "–" if v is None or pd.isna(v) else f"{v:.{d}f}"

    formats = {c: (lambda v, d=(3 if "minDCF" in str(c) else digits): number(v, d))
               for c in table.columns if table[c].map(lambda v: isinstance(v, float)).any()}
    return (table.style.format(formats, na_rep="–")
            .set_table_styles([{"selector": "th.col_heading", "props": "text-align: center;"}]))


def eer_by_stage(results_dir: str | os.PathLike | None = None, profile: str = "demo",
                 reference: pd.DataFrame | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """The EER after joint fine-tuning and after LMFT of the unpruned and the pruned LoRA_Adapter_MFA: the paper's
    (Table 3, Vox1-O) and ``profile``'s (each recorded trial list, cosine and AS-norm + QMF), as
    :func:`svlib.book.plots.plot_eer_by_stage` draws them: ``{panel: {line: {stage: EER %}}}``, one panel for the
    paper and one per trial list of ``profile`` (:func:`_group_label`). A recorded interval makes the value
    ``(EER, low, high)``."""
    ref = paper_reference() if reference is None else reference
    paper = {}
    for system in ("LoRA_Adapter_MFA", "LoRA_Adapter_MFA-pruned80"):
        paper[system] = {stage: paper_value(ref, table=3, record=f"{system}.vox2+vb2.{stage}.vox1-o", metric="eer")
                         for stage in ("s2_joint", "s3_lmft")}
    ours = _ours_by_slot(results_dir)
    ours = ours[(ours["profile"] == profile) & (ours["metric"] == "eer")
                & ours["system"].str.startswith("LoRA_Adapter_MFA") & ours["stage"].isin(["s2_joint", "s3_lmft"])]
    panels: dict[str, dict[str, dict[str, float]]] = {"paper, Vox1-O": paper}
    # lines in the paper's order: the unpruned system before the pruned one, cosine ("no") before AS-norm + QMF
    for _, r in ours.sort_values(["system", "calibration"], kind="stable").iterrows():
        method = "cosine" if r["calibration"] == "no" else "AS-norm + QMF"
        lines = panels.setdefault(_group_label(r["profile"], r["train"], r["test"]), {})
        value = r["ours"] if pd.isna(r["low"]) or pd.isna(r["high"]) else (r["ours"], r["low"], r["high"])
        lines.setdefault(f"{r['system']}, {method}", {})[r["stage"]] = value
    return panels


def complexity_points(results_dir: str | os.PathLike | None = None, profile: str = "demo",
                      reference: pd.DataFrame | None = None) -> dict[str, list[tuple[float, float, float]]]:
    """(sparsity %, encoder parameters M, GMACs for 1 s) of the unpruned and the 80 % model: the paper's Table 3 and
    the full-size counts ``profile``'s chapters recorded, as :func:`svlib.book.plots.plot_complexity_vs_sparsity`
    draws them."""
    ref = paper_reference() if reference is None else reference
    paper = [tuple(paper_value(ref, table=3, record=record, metric=m) for m in ("sparsity", "params_encoder", "macs"))
             for record in ("LoRA_Adapter_MFA", "LoRA_Adapter_MFA-pruned80")]
    results = load_results(results_dir if results_dir is not None else default_results_dir())
    counted = results[(results["profile"] == profile) & (results["kind"] == "complexity")]
    ours = [(100 * r["sparsity"], r["encoder_params"] / 1e6, r["macs"] / 1e9) for _, r in counted.iterrows()]
    return {"paper (Table 3)": paper, "this project (FlopCounterMode, encoder + head)": ours}
