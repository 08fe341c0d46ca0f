"""``svlib book run|tables`` (the chapters with papermill; Tables 1–3) and ``svlib rehearse`` (the reproduction
page's commands, shrunk)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd
import yaml

from svlib.analysis.tables import book_tables, ours_rows
from svlib.book.rehearse import rehearse, summary_markdown
from svlib.book.run import ChapterError, run_book

__all__ = ["add_parser"]

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Add ``svlib book run``, ``svlib book tables`` and ``svlib rehearse`` to the main CLI's subparsers."""
    _add_book_parser(sub)
    p = sub.add_parser("rehearse", help="run every full-scale command of the reproduction page on synthetic "
                       "corpora and a random checkpoint, under torchrun, shrunk (svlib.book.rehearse)")
    p.add_argument("--scale", choices=["tiny", "full"], default="tiny",
                   help="checkpoint size: tiny (CPU sizes) or full (the released config); same structure")
    p.add_argument("--nproc", type=int, default=2, help="processes per torchrun (default 2; gloo on CPU, NCCL on GPU)")
    p.add_argument("--batch-size", type=int, default=2, help="utterances per process and step (default 2)")
    p.add_argument("--workdir", default=None,
                   help="the rehearsal's folder, replaced if present (default: _build/rehearsal/<scale> here)")
    p.add_argument("--json", action="store_true", help="print the record of every command as JSON")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted rehearsal in --workdir: keep its corpora, checkpoint and log, skip "
                   "the commands that succeeded")
    p.add_argument("--summary", metavar="RECORD", default=None,
                   help="run nothing: print the per-file summary of a stored --json record as the Markdown table of "
                   "the reproduction page")
    p.set_defaults(func=_cmd_rehearse)


def _add_book_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``svlib book run`` and ``svlib book tables`` to the main CLI's subparsers."""
    book = subparsers.add_parser("book", help="run the book's chapters (papermill); the results tables")
    sub = book.add_subparsers(dest="book_command", required=True)

    p = sub.add_parser("run", help="execute chapters in toc order into _build/runs/<profile>/ (never into book/)")
    p.add_argument("--profile", required=True, help="demo or paper (configs/<profile>/profile.yaml)")
    p.add_argument("--chapter", action="extend", nargs="+", default=None, metavar="NAME",
                   help="only these chapters, e.g. 06_training or 06 (repeatable; default: all, in toc order)")
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
    p.add_argument("--results", default=None, help="results store (default $SVLIB_RESULTS, else $SVLIB_HOME/records)")
    p.add_argument("--ours", action="store_true",
                   help="only the rows with this project's numbers, each demo-data row after the paper row it "
                   "sits next to")
    p.add_argument("--json", action="store_true", help="print JSON")
    book.set_defaults(func=_cmd_book)
    return book


def _cmd_book(args: argparse.Namespace) -> int:
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


def _cmd_rehearse(args: argparse.Namespace) -> int:
    if args.summary:
        try:
            record = json.loads(Path(args.summary).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{args.summary}: not a rehearsal record written by `svlib rehearse --json` ({e})")
        if not isinstance(record, dict) or "commands" not in record:
            raise ValueError(f"{args.summary}: not a rehearsal record (no 'commands'); write one with "
                             "`svlib rehearse --json > FILE`")
        print(summary_markdown(record))
        return 0
    workdir = args.workdir or f"_build/rehearsal/{args.scale}"
    result = rehearse(workdir, scale=args.scale, nproc=args.nproc, batch_size=args.batch_size, resume=args.resume)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0 if result.ok else 1
    print(f"{'section':<8}{'exit':>5}{'seconds':>9}{'peak MiB':>10}  command")
    for c in result.commands:
        print(f"{c['section']:<8}{c['exit_code']:>5}{c['seconds']:>9.1f}{c['peak_rss_mib']:>10.0f}  {c['command']}")
    print(f"{'ok' if result.ok else 'FAILED'}: {len(result.commands)} commands, {result.seconds:.0f} s "
          f"({args.scale} scale, {args.nproc} processes); output in {result.workdir}/output.log")
    return 0 if result.ok else 1
