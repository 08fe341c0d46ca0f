"""Running the book's chapters with papermill (``svlib book run``), and a chapter's training stage in this process or
under torchrun (:func:`run_stage`).

:func:`run_book` executes the chapters (the notebooks listed in ``_toc.yml``, in toc order) with a profile,
writing the executed notebooks under ``_build/runs/<profile>/`` (never back into ``book/``), and stops at the first
failing chapter with a :class:`ChapterError` that names the chapter, the cell and the exception. Before any work it
checks the paths the profile's configs read from the environment (:func:`check_required_paths`).

The results tables that put the recorded numbers next to the paper's are in :mod:`svlib.analysis.tables`.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from svlib.core.atomic import atomic_write
from svlib.core.paths import DEFAULTED_VARIABLES, checkout_root, config_root
from svlib.training import StageConfig, train
from svlib.training.distill import DistillConfig, prune

logger = logging.getLogger(__name__)

__all__ = [
    "CHAPTERS",
    "ChapterError",
    "MissingPath",
    "MissingPathsError",
    "chapter_parameters",
    "check_required_paths",
    "required_paths",
    "run_book",
    "run_chain",
    "run_seeded_chain",
    "run_sparsity_sweep",
    "run_stage",
    "toc_chapters",
]

_config_root = config_root  # run_book and required_paths take a config_root argument of that name
_VAR = re.compile(r"\$\{(\w+)\}")  # the variables svlib.core.paths.expand_env replaces

# ----------------------------------------------------------------------------------------------------------------
# Chapters
# ----------------------------------------------------------------------------------------------------------------
def default_toc() -> Path:
    """The checkout's ``_toc.yml``: the chapters live in the source checkout, not in an installed svlib."""
    root = checkout_root()
    if root is None:
        raise FileNotFoundError("the book's chapters are in the svlib source checkout (book/, _toc.yml), which this "
                                "installed svlib is not part of: run from a clone, or pass toc=")
    return root / "_toc.yml"


def toc_chapters(toc: str | os.PathLike | None = None) -> list[Path]:
    """The chapter notebooks of a Jupyter Book toc (default ``<repo>/_toc.yml``), in toc order.

    Entries name files relative to the toc's folder, with or without suffix (``.ipynb`` is tried before ``.md``,
    as Jupyter Book does); markdown pages are not chapters and are left out.

    Raises:
        FileNotFoundError: the toc, or a file it lists, is missing.
    """
    toc = Path(toc) if toc is not None else default_toc()
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
        ValueError: the profile has no ``profile.yaml`` under ``config_root`` (default
            :func:`svlib.core.paths.config_root`).
    """
    root = Path(config_root) if config_root is not None else _config_root()
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
    """(dotted key, VAR) of every ``${VAR}`` in the values of a YAML tree, but for the variables with a default
    (``SVLIB_HOME``, ``SVLIB_DATA``: :data:`svlib.core.paths.DEFAULTED_VARIABLES`)."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_env_values(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_env_values(value, f"{prefix}[{i}]"))
    elif isinstance(node, str):
        out.extend((prefix, var) for var in _VAR.findall(node) if var not in DEFAULTED_VARIABLES)
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
    are written to ``output_dir/<chapter>.ipynb`` (a failed one to ``<chapter>.failed.ipynb``). Unless set, the
    chapters' workspace ``SVLIB_HOME`` is the book's checkout (models in ``exp/``, corpus in ``data/``) and their
    results store ``SVLIB_RESULTS`` its ``_build/results`` (what the Results chapter reads), as with ``make book``.

    Args:
        profile: ``demo``, ``paper`` or any profile under ``config_root``.
        chapters: names of the chapters to run (stem such as ``06_training``, or a unique prefix such as ``06``);
            ``None``: all. They run in toc order whatever the order given.
        resume_from: skip the selected chapters before this one.
        parameters: ``{name: value}`` for the chapters' parameters cells (not ``profile``).
        output_dir: default ``<book root>/_build/runs/<profile>``.
        kernel: Jupyter kernel name (default: each notebook's own).
        toc: the ``_toc.yml`` (default the repository's); the book root is its folder.
        config_root: folder of the profiles (default :func:`svlib.core.paths.config_root`).
        check_paths: first check the profile's environment paths (:func:`check_required_paths`).
        log_output: stream the cells' outputs to the log.

    Raises:
        MissingPathsError: before running anything, when the profile's paths are missing.
        ValueError: unknown profile or chapter name, a chapter without a parameters cell or without ``profile``.
        ChapterError: the first failing chapter (the chapters after it are not run).
    """
    import papermill as pm  # lazy: papermill comes with the optional `book` extra (pip install svlib[book])
    from papermill.exceptions import PapermillExecutionError

    parameters = dict(parameters or {})
    if "profile" in parameters:
        raise ValueError("give the profile as run_book's profile argument, not as a parameter")
    toc = Path(toc) if toc is not None else default_toc()
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
    # the book's own workspace and results store (as `make book` sets them), unless the caller chose others
    os.environ.setdefault("SVLIB_HOME", str(toc.parent))
    os.environ.setdefault("SVLIB_RESULTS", str(toc.parent / "_build" / "results"))

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

    With ``gpus <= 1`` the stage runs in this process (:func:`svlib.training.sv.train` or
    :func:`svlib.training.distill.prune`).
    With more, ``torchrun --standalone --nproc_per_node <gpus> -m svlib <command> --config … --reuse -o key=value``
    is launched and its output streamed line by line (progress bars and logs show in the notebook); a failure raises
    an error naming the stage, the exit code and the last lines of output.

    Args:
        command: ``"train"`` (SV stage) or ``"prune"`` (pruning stage).
        config: the stage YAML.
        gpus: processes to launch (the profile's ``gpus``).
        overrides: ``{"key.sub": value}`` replacing YAML keys.
        reuse: skip a stage already trained from the same configuration, data and upstream stage.
        profile, results_dir: the stage's ``train`` record (:func:`svlib.training.stage.record_stage`); the profile defaults
            to the config's folder ``configs/<profile>/``.
    """
    if command not in ("train", "prune"):
        raise ValueError(f"command {command!r}: expected 'train' or 'prune'")
    overrides = dict(overrides or {})
    if gpus <= 1:
        if command == "train":
            return train(config, overrides=overrides, reuse=reuse, profile=profile, results_dir=results_dir)
        return prune(config, overrides=overrides, reuse=reuse, profile=profile, results_dir=results_dir)
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
    if command == "train":
        exp_dir = StageConfig.from_yaml(config, overrides).exp_dir
    else:
        exp_dir = DistillConfig.from_yaml(config, overrides).exp_dir
    return Path(exp_dir) / "model"


def run_seeded_chain(configs: Sequence[str | os.PathLike], seed: int, *, tag: str | None = None,
                     overrides: Mapping | None = None, **kwargs) -> dict[str, Path]:
    """Run SV stages in order (each YAML's ``init_from`` naming an earlier stage of the list) with ``seed``.

    With ``tag`` (e.g. ``"seed7"``) each stage runs as ``<name>-<tag>`` in ``<exp_dir>-<tag>``, and an ``init_from``
    that points at an earlier stage of the chain points at that stage's tagged folder instead: a second seed's chain
    lives beside the first and reuses nothing of it (and its ``train`` records do not replace the first chain's).
    ``kwargs`` go to :func:`run_stage` (``gpus``, ``reuse``, ``profile``, ``results_dir``). Returns
    ``{stage name: model directory}`` in chain order.
    """
    stage_overrides = {**dict(overrides or {}), "seed": seed}
    return run_chain([("train", config, stage_overrides) for config in configs], tag=tag, **kwargs)


def run_chain(stages: Sequence[tuple[str, str | os.PathLike, Mapping | None]], *, tag: str | None = None,
              **kwargs) -> dict[str, Path]:
    """Run ``(command, config, overrides)`` stages in order, each ``init_from`` naming an earlier stage of the list
    (or a model outside it), optionally as a tagged copy of the chain.

    With ``tag`` each stage runs as ``<name>-<tag>`` in ``<exp_dir>-<tag>``, and an ``init_from`` that points at an
    earlier stage of the chain points at that stage's tagged folder instead (a ``teacher`` outside the chain stays).
    ``kwargs`` go to :func:`run_stage`. Returns ``{stage name (untagged): model directory}`` in chain order.
    """
    models: dict[str, Path] = {}
    moved: dict[Path, Path] = {}  # untagged exp_dir -> tagged exp_dir of the stages run so far
    for command, config, overrides in stages:
        stage_overrides = dict(overrides or {})
        stage = (StageConfig if command == "train" else DistillConfig).from_yaml(config, stage_overrides)
        if tag:
            exp_dir = Path(f"{stage.exp_dir}-{tag}")
            stage_overrides.update({"name": f"{stage.name}-{tag}", "exp_dir": str(exp_dir)})
            if stage.init_from and Path(stage.init_from) in moved:
                stage_overrides["init_from"] = str(moved[Path(stage.init_from)])
            moved[Path(stage.exp_dir)] = exp_dir
        models[stage.name] = run_stage(command, config, overrides=stage_overrides, **kwargs)
    return models


def run_sparsity_sweep(
    targets: Sequence[float],
    prune_configs: Sequence[str | os.PathLike],
    sv_configs: Sequence[str | os.PathLike],
    *,
    prune_overrides: Mapping | None = None,
    sv_overrides: Mapping | None = None,
    **kwargs,
) -> dict[float, dict[str, Path]]:
    """Table 3's chain (distill + prune, distill, the SV stages on the pruned encoder) at each target sparsity.

    The first pruning stage runs with ``pruning.target_sparsity`` set to the target; the chain of a target that its
    YAML already holds (0.8 in both profiles) runs untagged, so it is the chain of the chapter "Lagrangian pruning"
    (reused), every other one as a copy tagged ``sparsity<NN>`` (:func:`run_chain`) beside it.

    Args:
        targets: target sparsities, e.g. ``(0.5, 0.7, 0.8, 0.9, 0.95)``.
        prune_configs: the pruning stages in order (``p1_prune.yaml``, ``p2_distill.yaml``).
        sv_configs: the SV stages on the pruned encoder in order (``prune/s1_freeze.yaml`` …).
        prune_overrides, sv_overrides: overrides of every pruning / SV stage (data folders, seed).
        kwargs: to :func:`run_stage` (``gpus``, ``reuse``, ``profile``, ``results_dir``).

    Returns:
        ``{target: {stage name: model directory}}``.
    """
    first = DistillConfig.from_yaml(prune_configs[0], prune_overrides)
    out = {}
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target sparsity {target}: expected a fraction in (0, 1)")
        stages = [("prune", config, dict(prune_overrides or {})) for config in prune_configs]
        stages[0][2]["pruning.target_sparsity"] = float(target)
        stages += [("train", config, sv_overrides) for config in sv_configs]
        tag = None if target == first.pruning.target_sparsity else f"sparsity{round(100 * target)}"
        out[target] = run_chain(stages, tag=tag, **kwargs)
    return out
