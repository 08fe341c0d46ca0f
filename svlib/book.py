"""Running the book's chapters with papermill, and the results tables that put this project's numbers next to the
paper's (``svlib book run`` and ``svlib book tables``).

:func:`run_book` executes the chapters (the notebooks listed in ``_toc.yml``, in toc order) with a profile,
writing the executed notebooks under ``_build/runs/<profile>/`` (never back into ``book/``), and stops at the first
failing chapter with a :class:`ChapterError` that names the chapter, the cell and the exception. Before any work it
checks the paths the profile's configs read from the environment (:func:`check_required_paths`).

:func:`book_tables` joins the paper's numbers (:func:`svlib.results.paper_reference`) with the records of the
results store (:func:`svlib.results.load_results`).

Record conventions
------------------
Chapters and the ``svlib train|prune|score`` commands record what they measure with
:func:`svlib.results.record_result`; these ``kind``/``name`` pairs are what
:func:`book_tables` joins to the paper's rows (the ``record`` column of ``results/paper_reference.csv``):

* ``kind="eval"`` — one model scored on one trial list. ``name`` = :func:`eval_record_name` =
  ``<system>.<train>.<stage>.<test>``:

  - ``system``: a Table 2 model (``ECAPA-TDNN``, ``MFA``, ``Adapter_MFA``, ``LoRA_Adapter_MFA``: the keys of
    :data:`svlib.complexity.TABLE2_VARIANTS`), with ``-pruned<NN>`` for a model pruned to NN % sparsity
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

* ``kind="train"`` — one training or pruning stage, written by :func:`svlib.train.record_stage` whenever a stage
  runs (chapter, ``svlib train`` or ``svlib prune``). ``name`` = the stage's ``name``; ``metrics`` =
  :func:`svlib.train.stage_summary` plus ``model_params``. Shown by the Results chapter, not joined to a paper row.

* ``kind="complexity"`` — a model's size and cost. ``name`` = the ``system`` as above; ``metrics`` =
  :class:`svlib.complexity.Complexity`'s ``to_dict()`` (``encoder_params``, ``head_params``, ``macs``, ``flops``
  for 1 s) plus ``sparsity`` as a fraction.

How a record meets a paper number: "score calibration" no/yes is cosine / AS-norm + QMF scoring; the paper's mDCF is
compared with ``min_dcf_0.01`` (p_target = 0.01); MACs and FLOPs in G, parameters in M, sparsity in %. A record whose
``train`` or ``test`` is not the paper's (the ``demo`` profile's) is shown as its own row right after the first paper
row of the same system, stage, scoring and metric, with an empty paper value: next to the paper's number, never in its place.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from svlib.atomic import atomic_write
from svlib.profiles import CONFIG_ROOT
from svlib.results import REPO_ROOT, default_results_dir, load_results, paper_reference

logger = logging.getLogger(__name__)

__all__ = [
    "CHAPTERS",
    "STAGES",
    "TEST_SETS",
    "TRAIN_DATA",
    "ChapterError",
    "MissingPath",
    "MissingPathsError",
    "add_book_parser",
    "book_tables",
    "chapter_parameters",
    "check_required_paths",
    "eval_record_name",
    "ours_rows",
    "parse_eval_record_name",
    "required_paths",
    "run_book",
    "run_stage",
    "toc_chapters",
]

TOC = REPO_ROOT / "_toc.yml"

SYSTEMS = ("ECAPA-TDNN", "MFA", "Adapter_MFA", "LoRA_Adapter_MFA")
"""The Table 2 models (the keys of :data:`svlib.complexity.TABLE2_VARIANTS`)."""

STAGES = ("s1_freeze", "s2_joint", "s3_lmft", "s3_lmft_after_s1")
"""Last training stage of an evaluated model (record names, see the module docstring)."""

TRAIN_DATA = {"vox2": "VoxCeleb2", "vox2+vb2": "VoxCeleb2 & VoxBlink2", "cnceleb": "CN-Celeb1&2"}
"""Training-data codes of record names and the paper's labels (``train_data`` of the reference CSV)."""

TEST_SETS = {"vox1-o": "Vox1-O", "vox1-e": "Vox1-E", "vox1-h": "Vox1-H", "cnceleb": "CN-Celeb"}
"""Trial-list codes of record names and the paper's labels (``test_set`` of the reference CSV)."""

_SYSTEM = re.compile(r"^(%s)(-pruned\d+)?$" % "|".join(re.escape(s) for s in SYSTEMS))
_CODE = re.compile(r"^[a-z0-9][a-z0-9_+-]*$")
_VAR = re.compile(r"^\$\{(\w+)\}$")  # the form svlib.profiles.expand_env replaces
_METHODS = {"cosine": "no", "asnorm+qmf": "yes"}  # scoring method -> the paper's "score calibration"
_EVAL_METRICS = {"eer_percent": "eer", "min_dcf_0.01": "min_dcf"}
_COMPLEXITY_METRICS = {"sparsity": ("sparsity", 100.0), "encoder_params": ("params_encoder", 1e-6),
                       "head_params": ("params_head", 1e-6), "macs": ("macs", 1e-9), "flops": ("flops", 1e-9)}
TABLE_COLUMNS = ["frontend", "system", "variant", "params", "lmft", "calibration", "train_data", "test_set", "metric",
                 "unit", "paper", "ours", "profile", "source", "record"]
"""Columns of every table of :func:`book_tables`."""


# ----------------------------------------------------------------------------------------------------------------
# Chapters
# ----------------------------------------------------------------------------------------------------------------
def toc_chapters(toc: str | os.PathLike | None = None) -> list[Path]:
    """The chapter notebooks of a Jupyter Book toc (default ``<repo>/_toc.yml``), in toc order.

    Entries name files relative to the toc's folder, with or without suffix (``.ipynb`` is tried before ``.md``,
    as Jupyter Book does); markdown pages are not chapters and are left out.

    Raises:
        FileNotFoundError: the toc, or a file it lists, is missing.
    """
    toc = Path(toc) if toc is not None else TOC
    if not toc.is_file():
        raise FileNotFoundError(f"table of contents {toc} not found")
    tree = yaml.safe_load(toc.read_text(encoding="utf8")) or {}
    chapters = []
    for entry in _toc_entries(tree):
        path = toc.parent / entry
        candidates = [path] if path.suffix in (".ipynb", ".md") else [path.with_suffix(s) for s in (".ipynb", ".md")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{toc}: entry {entry!r} names no file (tried {[str(p) for p in candidates]})")
        if found.suffix == ".ipynb":
            chapters.append(found)
    return chapters


def _toc_entries(node) -> list[str]:
    """``root`` and every ``file:`` of a toc tree (parts, chapters, sections), in order."""
    out = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                out.append(str(node[key]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out.extend(_toc_entries(child))
    return out


def _default_chapters() -> list[str]:
    try:
        return [p.stem for p in toc_chapters()]
    except FileNotFoundError:  # an installed svlib without the book next to it
        return []


CHAPTERS: list[str] = _default_chapters()
"""Names of the book's chapters in dependency (= toc) order, read from ``_toc.yml`` at import."""


def chapter_parameters(notebook: str | os.PathLike) -> dict[str, str]:
    """``{name: default source}`` of the first code cell tagged ``parameters`` of ``notebook``.

    Raises:
        ValueError: no code cell is tagged ``parameters`` (names the notebook).
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = _source(cell)
            out = {}
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                else:
                    continue
                for target in targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = ast.get_source_segment(source, node.value) if node.value else ""
            return out
    raise ValueError(f"{notebook}: no code cell is tagged 'parameters' (papermill injects parameters after it)")


def _source(cell: Mapping) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _select(available: Sequence[Path], names: Sequence[str] | None, what: str) -> list[Path]:
    """Chapters named by ``names`` (stem, file name, toc entry, or a unique stem prefix), in toc order."""
    if names is None:
        return list(available)
    chosen = set()
    for name in names:
        chosen.add(_find(available, name, what))
    return [p for p in available if p in chosen]


def _find(available: Sequence[Path], name: str, what: str) -> Path:
    key = Path(str(name)).name
    key = key[: -len(".ipynb")] if key.endswith(".ipynb") else key
    exact = [p for p in available if p.stem == key]
    matches = exact or [p for p in available if p.stem.startswith(key)]
    if len(matches) != 1:
        problem = "matches several chapters" if matches else "is not a chapter"
        raise ValueError(f"{what} {name!r} {problem}; chapters in toc order: {[p.stem for p in available]}")
    return matches[0]


# ----------------------------------------------------------------------------------------------------------------
# Required paths
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class MissingPath:
    """An environment variable a profile's configs read as a path, which is unset or names nothing."""

    variable: str
    value: str | None
    """the variable's value, ``None`` when unset."""
    used_by: list[str]
    """``<config file>: <key>`` of every use."""

    def __str__(self) -> str:
        state = " not set" if self.value is None else f"={self.value}: no such file or directory"
        return f"{self.variable}{state} (used by {'; '.join(self.used_by)})"


class MissingPathsError(ValueError):
    """Every path a profile needs that is missing, reported at once (:attr:`missing`)."""

    def __init__(self, profile: str, missing: list[MissingPath]):
        self.profile = profile
        self.missing = missing
        lines = "\n".join(f"  {m}" for m in missing)
        super().__init__(
            f"profile {profile!r} needs {len(missing)} path(s) that are missing; set each environment variable to an "
            f"existing file or folder before running the book:\n{lines}"
        )


def required_paths(profile: str, config_root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """``{VAR: ["<config>: <key>", ...]}`` for every ``${VAR}`` value in ``<config_root>/<profile>/**/*.yaml``.

    Raises:
        ValueError: the profile has no ``profile.yaml`` under ``config_root`` (default ``svlib.profiles.CONFIG_ROOT``).
    """
    root = Path(config_root) if config_root is not None else CONFIG_ROOT
    folder = root / profile
    if not (folder / "profile.yaml").is_file():
        known = sorted(p.parent.name for p in root.glob("*/profile.yaml"))
        raise ValueError(f"unknown profile {profile!r}: expected one of {known} (files {root}/*/profile.yaml)")
    uses: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.yaml")):
        for key, var in _env_values(yaml.safe_load(path.read_text(encoding="utf8"))):
            uses.setdefault(var, []).append(f"{path.relative_to(root.parent)}: {key}")
    return uses


def _env_values(node, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, VAR) of every value ``${VAR}`` in a YAML tree."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_env_values(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_env_values(value, f"{prefix}[{i}]"))
    elif isinstance(node, str) and _VAR.match(node):
        out.append((prefix, _VAR.match(node).group(1)))
    return out


def check_required_paths(profile: str, config_root: str | os.PathLike | None = None) -> dict[str, str]:
    """Check that every ``${VAR}`` path of the profile's configs is set and exists; returns ``{VAR: path}``.

    Raises:
        MissingPathsError: listing every missing variable at once (unset, or naming nothing), with its uses.
    """
    missing, found = [], {}
    for var, used_by in required_paths(profile, config_root).items():
        value = os.environ.get(var)
        if value is None or not value.strip() or not Path(value).exists():
            missing.append(MissingPath(var, value, used_by))
        else:
            found[var] = value
    if missing:
        raise MissingPathsError(profile, missing)
    return found


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------
class ChapterError(RuntimeError):
    """A chapter failed: which one, at which cell of the chapter notebook, with which exception."""

    def __init__(self, chapter: str, message: str, cell_index: int | None = None, cell_line: str | None = None,
                 notebook: Path | None = None):
        self.chapter = chapter
        self.cell_index = cell_index
        """index of the failing cell in the chapter notebook (as in ``book/``), ``None`` if unknown."""
        self.cell_line = cell_line
        """first source line of the failing cell."""
        self.message = message
        self.notebook = notebook
        """the executed notebook, outputs and traceback included."""
        where = f" at cell {cell_index} ({cell_line!r})" if cell_index is not None else ""
        saved = f"; executed notebook: {notebook}" if notebook else ""
        super().__init__(f"chapter {chapter} failed{where}: {message}{saved}")


def run_book(
    profile: str,
    chapters: Sequence[str] | None = None,
    resume_from: str | None = None,
    parameters: Mapping | None = None,
    output_dir: str | os.PathLike | None = None,
    kernel: str | None = None,
    *,
    toc: str | os.PathLike | None = None,
    config_root: str | os.PathLike | None = None,
    check_paths: bool = True,
    log_output: bool = False,
) -> list[Path]:
    """Execute the book's chapters in toc order with papermill; returns the executed notebooks' paths.

    Each chapter gets ``profile`` and those of ``parameters`` that its ``parameters`` cell defines (a parameter no
    selected chapter defines is logged as a warning). Chapters run in their own folder (as in the book build) and
    are written to ``output_dir/<chapter>.ipynb`` (a failed one to ``<chapter>.failed.ipynb``).

    Args:
        profile: ``demo``, ``paper`` or any profile under ``config_root``.
        chapters: names of the chapters to run (stem such as ``05_training``, or a unique prefix such as ``05``);
            ``None``: all. They run in toc order whatever the order given.
        resume_from: skip the selected chapters before this one.
        parameters: ``{name: value}`` for the chapters' parameters cells (not ``profile``).
        output_dir: default ``<book root>/_build/runs/<profile>``.
        kernel: Jupyter kernel name (default: each notebook's own).
        toc: the ``_toc.yml`` (default the repository's); the book root is its folder.
        config_root: folder of the profiles (default ``svlib.profiles.CONFIG_ROOT``).
        check_paths: first check the profile's environment paths (:func:`check_required_paths`).
        log_output: stream the cells' outputs to the log.

    Raises:
        MissingPathsError: before running anything, when the profile's paths are missing.
        ValueError: unknown profile or chapter name, a chapter without a parameters cell or without ``profile``.
        ChapterError: the first failing chapter (the chapters after it are not run).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    parameters = dict(parameters or {})
    if "profile" in parameters:
        raise ValueError("give the profile as run_book's profile argument, not as a parameter")
    toc = Path(toc) if toc is not None else TOC
    if check_paths:
        check_required_paths(profile, config_root)
    else:
        required_paths(profile, config_root)  # still rejects an unknown profile
    available = toc_chapters(toc)
    selected = _select(available, chapters, "chapter")
    if resume_from is not None:
        first = _find(selected, resume_from, "--from chapter")
        selected = selected[selected.index(first):]
    accepted = {p: chapter_parameters(p) for p in selected}
    for path, names in accepted.items():
        if "profile" not in names:
            raise ValueError(f"{path}: its parameters cell does not define `profile`")
    unused = sorted(set(parameters) - set().union(*accepted.values())) if accepted else sorted(parameters)
    if unused:
        logger.warning("no selected chapter defines parameter(s) %s; they are ignored", unused)
    out_dir = Path(output_dir) if output_dir is not None else toc.parent / "_build" / "runs" / profile
    out_dir.mkdir(parents=True, exist_ok=True)

    done = []
    for i, src in enumerate(selected, 1):
        params = {"profile": profile, **{k: v for k, v in parameters.items() if k in accepted[src]}}
        dest, failed = out_dir / f"{src.stem}.ipynb", out_dir / f"{src.stem}.failed.ipynb"
        failed.unlink(missing_ok=True)  # a previous run's failure
        logger.info("[%d/%d] %s: running with %s", i, len(selected), src.stem, params)
        start = time.perf_counter()

        def execute(tmp: str) -> None:
            try:
                pm.execute_notebook(str(src), tmp, parameters=params, kernel_name=kernel, cwd=str(src.parent),
                                    progress_bar=False, log_output=log_output)
            except BaseException:
                if Path(tmp).is_file() and Path(tmp).stat().st_size:
                    atomic_write(failed, lambda t: shutil.copyfile(tmp, t), suffix=".ipynb")
                raise

        try:
            atomic_write(dest, execute, suffix=".ipynb")
        except PapermillExecutionError as err:
            index, line = _source_cell(src, failed, err.cell_index)
            raise ChapterError(src.stem, f"{err.ename}: {err.evalue}", index, line,
                               failed if failed.is_file() else None) from err
        except Exception as err:  # kernel died, timeout, bad notebook ...
            saved = failed if failed.is_file() else None
            raise ChapterError(src.stem, f"{type(err).__name__}: {err}", notebook=saved) from err
        logger.info("[%d/%d] %s: done in %.1f s -> %s", i, len(selected), src.stem, time.perf_counter() - start, dest)
        done.append(dest)
    return done


def _source_cell(src: Path, executed: Path, index: int) -> tuple[int, str]:
    """The failing cell's index in the chapter notebook and its first source line.

    Papermill's index counts the cell it injects after the parameters cell; the chapter's own index does not.
    """
    cells = []
    if executed.is_file():
        cells = json.loads(executed.read_text(encoding="utf8")).get("cells", [])
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    original = index - sum(1 for i in injected if i < index)
    source_cells = json.loads(src.read_text(encoding="utf8"))["cells"]
    lines = _source(source_cells[original]).splitlines() if 0 <= original < len(source_cells) else []
    return original, next((ln for ln in lines if ln.strip()), "")


def run_stage(command: str, config: str | os.PathLike, *, gpus: int = 1, overrides: Mapping | None = None,
              reuse: bool = True, profile: str | None = None, results_dir: str | os.PathLike | None = None) -> Path:
    """Run one stage the way a chapter needs it at its profile's scale; returns the stage's model directory.

    With ``gpus <= 1`` the stage runs in this process (:func:`svlib.train.train` or :func:`svlib.distill.prune`).
    With more, ``torchrun --standalone --nproc_per_node <gpus> -m svlib <command> --config … --reuse -o key=value``
    is launched and its output streamed line by line (progress bars and logs show in the notebook); a failure raises
    an error naming the stage, the exit code and the last lines of output.

    Args:
        command: ``"train"`` (SV stage) or ``"prune"`` (pruning stage).
        config: the stage YAML.
        gpus: processes to launch (the profile's ``gpus``).
        overrides: ``{"key.sub": value}`` replacing YAML keys.
        reuse: skip a stage already trained from the same configuration, data and upstream stage.
        profile, results_dir: the stage's ``train`` record (:func:`svlib.train.record_stage`); the profile defaults
            to the config's folder ``configs/<profile>/``.
    """
    if command not in ("train", "prune"):
        raise ValueError(f"command {command!r}: expected 'train' or 'prune'")
    overrides = dict(overrides or {})
    if gpus <= 1:
        if command == "train":
            from svlib.train import train

            return train(config, overrides=overrides, reuse=reuse, profile=profile, results_dir=results_dir)
        from svlib.distill import prune

        return prune(config, overrides=overrides, reuse=reuse, profile=profile, results_dir=results_dir)
    import subprocess
    from collections import deque

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nproc_per_node", str(int(gpus)),
           "-m", "svlib", command, "--config", str(config)]
    cmd += ["--reuse"] if reuse else []
    cmd += ["--profile", profile] if profile else []
    cmd += ["--results-dir", str(results_dir)] if results_dir is not None else []
    for key, value in overrides.items():
        cmd += ["-o", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    logger.info("launching %s", " ".join(cmd))
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {config} failed under torchrun (exit code {proc.returncode}):\n{''.join(tail)}")
    from svlib.train import StageConfig

    if command == "train":
        exp_dir = StageConfig.from_yaml(config, overrides).exp_dir
    else:
        from svlib.distill import DistillConfig

        exp_dir = DistillConfig.from_yaml(config, overrides).exp_dir
    return Path(exp_dir) / "model"


# ----------------------------------------------------------------------------------------------------------------
# Results tables
# ----------------------------------------------------------------------------------------------------------------
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
        results_dir: the results store (default :func:`svlib.results.default_results_dir`).
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


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def add_book_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``svlib book run`` and ``svlib book tables`` to the main CLI's subparsers."""
    book = subparsers.add_parser("book", help="run the book's chapters (papermill); the results tables")
    sub = book.add_subparsers(dest="book_command", required=True)

    p = sub.add_parser("run", help="execute chapters in toc order into _build/runs/<profile>/ (never into book/)")
    p.add_argument("--profile", required=True, help="demo or paper (configs/<profile>/profile.yaml)")
    p.add_argument("--chapter", action="extend", nargs="+", default=None, metavar="NAME",
                   help="only these chapters, e.g. 05_training or 05 (repeatable; default: all, in toc order)")
    p.add_argument("--from", dest="resume_from", metavar="NAME", help="skip the chapters before NAME")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a chapter parameter (value read as YAML: 3, 1e-3, true, null, [a, b]); only chapters "
                   "whose parameters cell defines KEY get it")
    p.add_argument("--output-dir", default=None, help="executed notebooks (default _build/runs/<profile>)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebooks' own)")
    p.add_argument("--skip-path-check", action="store_true",
                   help="do not check the profile's ${VAR} paths first (e.g. to run one chapter that needs fewer)")
    p.add_argument("--log-output", action="store_true", help="stream the cells' outputs")

    p = sub.add_parser("tables", help="Tables 1-3: the paper's numbers next to the recorded results")
    p.add_argument("--results", default=None, help="results store (default $SVLIB_RESULTS or _build/results)")
    p.add_argument("--ours", action="store_true",
                   help="only the rows with this project's numbers, each demo-data row after the paper row it "
                   "sits next to")
    p.add_argument("--json", action="store_true", help="print JSON")
    book.set_defaults(func=cmd_book)
    return book


def cmd_book(args: argparse.Namespace) -> int:
    """Run ``svlib book run|tables``; returns the exit status (1 when a chapter fails)."""
    if args.book_command == "tables":
        tables = book_tables(args.results)
        if args.ours:
            tables = {name: ours_rows(df) for name, df in tables.items()}
        if args.json:
            payload = {name: df.astype(object).where(df.notna(), None).to_dict(orient="records")
                       for name, df in tables.items()}
            print(json.dumps(payload, indent=2, ensure_ascii=False))
        else:
            with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
                for name, df in tables.items():
                    print(f"{name}\n{df.to_string(index=False)}\n")
        return 0

    parameters = {key: yaml.safe_load(value) for key, value in args.parameter}
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # progress is the point of this command
    try:
        notebooks = run_book(args.profile, chapters=args.chapter, resume_from=args.resume_from,
                             parameters=parameters, output_dir=args.output_dir, kernel=args.kernel,
                             check_paths=not args.skip_path_check, log_output=args.log_output)
    except ChapterError as err:
        print(f"svlib book run: error: {err}", file=sys.stderr)
        return 1
    for path in notebooks:
        print(path)
    return 0
