"""Format the code cells of the book's notebooks with black at 79 columns (what fits the book's code column).

    python book/_tools/format_notebooks.py [NOTEBOOK ...]     # default: book/*.ipynb; `make format` runs it

Cells are formatted one by one; a cell black cannot parse is reported and left as it is. Outputs are not touched
(the notebooks are committed without outputs). Lines black cannot shorten (long strings and comments) are listed:
shorten those by hand; ``tests/test_book.py`` fails on any code line over 79 columns.
"""

import json
import sys
from pathlib import Path

import black

WIDTH = 79
MODE = black.Mode(line_length=WIDTH)


def format_notebook(path: Path) -> list[str]:
    """Format ``path`` in place; return the lines still over :data:`WIDTH` columns (``file:cell: line``)."""
    nb = json.loads(path.read_text())
    long = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:
            formatted = black.format_str(source, mode=MODE).rstrip("\n")
        except black.InvalidInput as err:
            print(f"{path}: cell {i} left as it is ({err})", file=sys.stderr)
            formatted = source
        cell["source"] = formatted.splitlines(keepends=True)
        long += [f"{path}:{i}: {line}" for line in formatted.splitlines() if len(line) > WIDTH]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return long


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path(__file__).resolve().parents[1].glob("*.ipynb"))
    remaining = [line for p in paths for line in format_notebook(p)]
    print("\n".join(remaining) or f"every code line fits in {WIDTH} columns")
    sys.exit(1 if remaining else 0)
