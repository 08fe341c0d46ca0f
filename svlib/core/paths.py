"""Where svlib finds its configs and reference numbers, and where runs write: every root in one place.

svlib works the same from a source checkout (``pip install -e .``) and from an installed wheel, and never writes into
its own installed tree. The roots, each overridable by an environment variable:

======================  =====================  ==============================================================
root                    variable               default
======================  =====================  ==============================================================
profiles' configs       ``SVLIB_CONFIGS``      ``<checkout>/configs``; in a wheel the copy packaged with svlib
paper reference CSV     ``SVLIB_REFERENCE``    ``<checkout>/results/paper_reference.csv``; in a wheel, packaged
workspace               ``SVLIB_HOME``         ``${XDG_DATA_HOME:-~/.local/share}/svlib`` (experiments: ``exp/``)
data                    ``SVLIB_DATA``         ``$SVLIB_HOME/data`` (the demo corpus, Debian packages)
results store           ``SVLIB_RESULTS``      ``$SVLIB_HOME/records`` (one JSON record per run)
======================  =====================  ==============================================================

``make book`` and ``make test`` set ``SVLIB_HOME`` to the checkout (so the book's models land in ``exp/`` and its
corpus in ``data/``) and ``SVLIB_RESULTS`` to ``_build/results``; a command run elsewhere writes under the per-user
workspace unless told otherwise (``--results-dir``, ``exp_dir`` in a stage config, the variables above).

Stage configs name these roots as ``${SVLIB_HOME}`` and ``${SVLIB_DATA}`` (:func:`expand_env` gives them their
defaults); other ``${VAR}`` values (``${W2V_BERT_2_0}``, ``${VOX_TRAIN_DIR}``…) must be set.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULTED_VARIABLES",
    "checkout_root",
    "config_root",
    "default_data_root",
    "default_embedding_cache",
    "default_results_dir",
    "expand_env",
    "home",
    "profile_of_config",
    "reference_csv",
    "shown",
]

_VAR = re.compile(r"\$\{(\w+)\}")


def checkout_root() -> Path | None:
    """The source checkout svlib runs from (the folder with ``pyproject.toml``, ``configs/`` and ``book/``), or
    ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "configs").is_dir() else None


def _packaged(name: str) -> Path:
    return Path(str(resources.files("svlib") / name))


def config_root() -> Path:
    """The folder of the profiles' configs (``<profile>/profile.yaml``, stage YAMLs): ``$SVLIB_CONFIGS``, else the
    checkout's ``configs/``, else the copy installed with svlib (``svlib/profile_configs``)."""
    if os.environ.get("SVLIB_CONFIGS"):
        return Path(os.environ["SVLIB_CONFIGS"])
    checkout = checkout_root()
    return checkout / "configs" if checkout is not None else _packaged("profile_configs")


def reference_csv() -> Path:
    """The paper's reference numbers: ``$SVLIB_REFERENCE``, else ``results/paper_reference.csv`` of the checkout,
    else the copy installed with svlib."""
    if os.environ.get("SVLIB_REFERENCE"):
        return Path(os.environ["SVLIB_REFERENCE"])
    checkout = checkout_root()
    base = checkout / "results" if checkout is not None else _packaged("reference")
    return base / "paper_reference.csv"


def home() -> Path:
    """The workspace runs write to: ``$SVLIB_HOME``, else ``${XDG_DATA_HOME:-~/.local/share}/svlib``."""
    if os.environ.get("SVLIB_HOME"):
        return Path(os.environ["SVLIB_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "svlib"


def default_data_root() -> Path:
    """Where the demo corpus and downloaded Debian packages live: ``$SVLIB_DATA``, else ``$SVLIB_HOME/data``."""
    env = os.environ.get("SVLIB_DATA")
    return Path(env) if env else home() / "data"


def default_results_dir() -> Path:
    """Where runs record their results: ``$SVLIB_RESULTS``, else ``$SVLIB_HOME/records`` (not ``results/``: in the
    checkout that folder holds the paper's reference numbers)."""
    env = os.environ.get("SVLIB_RESULTS")
    return Path(env) if env else home() / "records"


def default_embedding_cache() -> Path:
    """The workspace's embedding cache, ``$SVLIB_HOME/cache/embeddings``: one folder per model, named by its weights
    (:func:`svlib.scoring.extract.model_cache_dir`), so an evaluation of a model that was evaluated before, in
    another chapter or command, reads its embeddings back instead of extracting them again. Safe to delete."""
    return home() / "cache" / "embeddings"


DEFAULTED_VARIABLES = {"SVLIB_HOME": home, "SVLIB_DATA": default_data_root}
"""Variables a config may use without setting them, with the functions that give their defaults."""


def _expand(value: str, source: str, key: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name in os.environ:
            return os.environ[name]
        if name in DEFAULTED_VARIABLES:
            return str(DEFAULTED_VARIABLES[name]())
        raise ValueError(f"{source} needs {key!r}: set the environment variable {name} or pass {key} explicitly (e.g. "
                         f"papermill -p {key} PATH, or a config override)")

    return _VAR.sub(repl, value)


def expand_env(settings: dict, source: str) -> dict:
    """Replace every ``${VAR}`` inside string values (also in nested dicts) by the environment variable ``VAR``;
    ``SVLIB_HOME`` and ``SVLIB_DATA`` have defaults (:func:`home`, :func:`default_data_root`).

    Raises:
        ValueError: naming ``source``, the key and the variable, when another variable is unset.
    """
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            value = expand_env(value, source)
        elif isinstance(value, str):
            value = _expand(value, source, key)
        out[key] = value
    return out


def profile_of_config(path: str | os.PathLike) -> str | None:
    """The profile a config file belongs to: ``<name>`` for a file anywhere under a folder ``<name>/`` that holds a
    ``profile.yaml`` (``configs/paper/prune/p1_prune.yaml`` → ``paper``, also in a copy of ``configs/``), else
    ``None`` (a config kept elsewhere says nothing about its profile)."""
    return next((d.name for d in Path(path).resolve().parents if (d / "profile.yaml").is_file()), None)


def shown(path: str | os.PathLike) -> str:
    """``path`` as a page or a log shows it: relative to the root it lies under (``$SVLIB_RESULTS/…``,
    ``$SVLIB_DATA/…``, ``$SVLIB_HOME/…``), so that no machine's absolute paths end up in the book; a path under
    none of them is shown by its name."""
    p = Path(path).resolve()
    for root, label in ((default_results_dir(), "$SVLIB_RESULTS"), (default_data_root(), "$SVLIB_DATA"),
                        (home(), "$SVLIB_HOME")):
        try:
            return f"{label}/{p.relative_to(Path(root).resolve())}"
        except ValueError:
            continue
    return p.name
