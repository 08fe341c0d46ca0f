"""The ``svlib`` command. Subcommands print results (JSON with ``--json``); the work lives in the library.

Every argparse definition of svlib is in this package, one module per group of subcommands: :mod:`~svlib.cli.model`
(``params``), :mod:`~svlib.cli.data` (``data``), :mod:`~svlib.cli.training` (``train``, ``prune``),
:mod:`~svlib.cli.scoring` (``embed``, ``score``), :mod:`~svlib.cli.bench` (``bench``) and :mod:`~svlib.cli.book`
(``book``, ``rehearse``). Nothing below this package imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from svlib.cli import bench, book, data, model, scoring, training

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svlib", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (model, data, training, scoring, bench, book):
        group.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"svlib {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
