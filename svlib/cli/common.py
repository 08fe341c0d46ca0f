"""What several commands share: config overrides on the command line, the results-record flags, rank 0 prints."""

from __future__ import annotations

import argparse
import os

import yaml

__all__ = ["add_record_args", "is_main_process", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML: numbers, booleans, null, lists) for config overrides."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. schedule.lr=1e-3)")
        overrides[key] = yaml.safe_load(value)
    return overrides


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process: the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def add_record_args(p: argparse.ArgumentParser, what: str,
                    profile_default: str = "<name> for a config under configs/<name>/, else custom") -> None:
    """``--profile``, ``--results-dir`` and ``--no-record``: where a command records its run
    (:mod:`svlib.core.results`)."""
    p.add_argument("--profile", default=None, help=f"profile written with {what} (default: {profile_default})")
    p.add_argument("--results-dir", default=None,
                   help="results store (default: $SVLIB_RESULTS, else $SVLIB_HOME/records)")
    p.add_argument("--no-record", action="store_true", help=f"do not write {what}")
