"""The results store: one small JSON file per run, labelled with the profile, config and code that made it.

:func:`record_result` writes ``<results_dir>/<profile>/<kind>/<name>.json`` atomically (a later run with the same
``kind`` and ``name`` replaces the file). Each record holds the run's metrics and what is needed to trust them:

* ``profile`` — the profile that made the numbers (``demo`` numbers never pass for the paper's);
* ``config_sha256`` — the SHA-256 of the config: of the file's bytes when a YAML/JSON path is given, else of the
  dict's canonical JSON (sorted keys, no whitespace);
* ``git_commit`` and ``git_dirty`` — ``git rev-parse HEAD`` of the svlib checkout and whether it had uncommitted
  changes (both ``null`` outside a git checkout);
* ``date`` (UTC, ISO 8601) and ``svlib_version``.

:func:`load_results` reads every record back as one table row (metrics flattened, nested keys joined by ``.``).
The store's default place is :func:`svlib.core.paths.default_results_dir`; the paper's numbers and the
``kind``/``name`` conventions the book's Results chapter relies on are in :mod:`svlib.analysis.tables`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from svlib._version import __version__
from svlib.core.atomic import atomic_write
from svlib.core.paths import checkout_root, default_results_dir

logger = logging.getLogger(__name__)

__all__ = ["RECORD_FIELDS", "default_results_dir", "load_record", "load_results", "record_result"]

RECORD_FIELDS = (
    "profile", "kind", "name", "date", "svlib_version", "git_commit", "git_dirty", "config_sha256", "config_path",
)
"""Metadata columns of :func:`load_results` (metric columns follow them); metric names may not reuse them."""

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+@=-]*$")



def record_result(
    results_dir: str | os.PathLike,
    *,
    kind: str,
    name: str,
    metrics: Mapping,
    profile: str,
    config: Mapping | str | os.PathLike | None = None,
    extra: Mapping | None = None,
) -> Path:
    """Write one run's metrics to ``results_dir/<profile>/<kind>/<name>.json`` (atomically) and return the path.

    Args:
        results_dir: root of the results store (e.g. :func:`default_results_dir`).
        kind: what was measured, e.g. ``eval`` or ``complexity`` (conventions: :mod:`svlib.analysis.tables`).
        name: which run, unique within ``kind``; letters, digits and ``_ . + @ = -`` (it is a file name).
        metrics: ``{name: number or str or None}``, possibly nested one level per scoring method, e.g.
            :attr:`svlib.scoring.evaluate.Evaluation.metrics`. Numpy and torch scalars are converted.
        profile: the profile that made the numbers.
        config: the run's config: a path (its bytes are hashed) or a dict (its canonical JSON is hashed and
            stored in the record).
        extra: anything else worth keeping with the record (JSON-ready), stored under ``extra``.

    Raises:
        ValueError: a malformed ``kind``/``name``/``profile``, a metric named like a metadata field, or a
            non-finite or non-numeric metric value.
        FileNotFoundError: ``config`` names a missing file.
    """
    for label, value in (("kind", kind), ("name", name), ("profile", profile)):
        if not isinstance(value, str) or not _SAFE.match(value):
            raise ValueError(f"record_result: {label}={value!r} must be a non-empty file name of letters, digits "
                             "and '_ . + @ = -' (no '/' or spaces)")
    clean = _clean_metrics(metrics, "metrics")
    clashes = sorted(set(_flatten(clean)) & set(RECORD_FIELDS))
    if clashes:
        raise ValueError(f"record_result: metric names {clashes} clash with metadata fields {list(RECORD_FIELDS)}")
    config_sha256, config_path, config_dict = _hash_config(config)
    commit, dirty = _git_state()
    record = {
        "profile": profile,
        "kind": kind,
        "name": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "svlib_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "config_sha256": config_sha256,
        "config_path": config_path,
        "metrics": clean,
    }
    if config_dict is not None:
        record["config"] = config_dict
    if extra is not None:
        record["extra"] = json.loads(json.dumps(extra, default=str))
    path = Path(results_dir) / profile / kind / f"{name}.json"
    text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf8"), suffix=".json")
    logger.info("recorded %s/%s (%s profile) in %s", kind, name, profile, path)
    return path


def load_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every record under ``results_dir`` as one row: the :data:`RECORD_FIELDS`, then the flattened metrics.

    Nested metrics become ``<method>.<metric>`` columns (e.g. ``asnorm+qmf.eer_percent``). A missing folder gives
    an empty table with the metadata columns. Rows are sorted by profile, kind and name.

    Raises:
        ValueError: a file that is not a record (names the file).
    """
    rows = []
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf8"))
            row = {key: record[key] for key in RECORD_FIELDS}
            metrics = record["metrics"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a results record written by record_result ({err!r})") from err
        rows.append({**row, **_flatten(metrics)})
    if not rows:
        return pd.DataFrame(columns=list(RECORD_FIELDS))
    return pd.DataFrame(rows).sort_values(["profile", "kind", "name"], ignore_index=True)


def load_record(results_dir: str | os.PathLike, profile: str, kind: str, name: str) -> dict:
    """One record written by :func:`record_result`, whole (metrics, config hash, ``extra`` …).

    Raises:
        FileNotFoundError: naming the file and the chapter or command that writes such records.
    """
    path = Path(results_dir) / profile / kind / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the chapter that records {kind}/{name} with profile "
                                f"{profile!r} first (svlib book run --profile {profile})")
    return json.loads(path.read_text(encoding="utf8"))


# ----------------------------------------------------------------------------------------------------------------
def _clean_metrics(value, where: str):
    """JSON-ready copy of a metrics value: dicts recursively, numbers as int/float, str/bool/None kept."""
    if isinstance(value, Mapping):
        return {str(k): _clean_metrics(v, f"{where}[{k!r}]") for k, v in value.items()}
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"record_result: {where} is {value!r}; metrics must be finite numbers")
        return value
    raise ValueError(f"record_result: {where} is a {type(value).__name__} ({value!r}); expected a number, "
                     "a string, None or a dict of them")


def _flatten(metrics: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hash_config(config) -> tuple[str | None, str | None, dict | None]:
    """(sha256, path or None, canonical dict or None) of a config given as a path or a dict."""
    if config is None:
        return None, None, None
    if isinstance(config, Mapping):
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf8")).hexdigest(), None, json.loads(canonical)
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"record_result: config file {path} not found")
        return hashlib.sha256(path.read_bytes()).hexdigest(), str(path), None
    raise TypeError(f"record_result: config must be a dict, a path or None, got {type(config).__name__}")


def _git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the svlib checkout; (None, None) without git or outside a repository.

    ``--no-optional-locks`` keeps ``git status`` from refreshing (writing) the index.
    """
    root = checkout_root()
    if root is None:
        return None, None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain")
    return commit.strip(), (bool(status.strip()) if status is not None else None)
