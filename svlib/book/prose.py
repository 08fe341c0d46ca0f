"""Numbers in a chapter's prose that the chapter computes: glued from the computation, never typed in.

A chapter computes a number in a code cell and glues it (:func:`glue`, myst-nb's glue with the value recorded
here); its markdown shows it with the ``glue:text`` role and a format spec, e.g. ``{glue:text}`n_trials:,d```, so
the built page prints what this run computed. The chapter's last (assert) cell calls :func:`check_prose`, which
fails when the markdown types a number that one of the glued values also gives (a number copied from an output
goes stale the moment the demo recipe changes) or uses a glue key that the run never glued.

Typed numbers that stay typed: the paper's numbers and hyper-parameters (the spec, not a computation), section,
equation and table numbers, and numbers with a single significant digit (``2 processes``, ``0.8``), which
collide with computed values by chance too often to tell anything.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from svlib.book.run import _find, _source, toc_chapters

__all__ = ["GLUED", "TypedNumber", "check_prose", "glue", "glue_keys", "glue_roles", "glued_numbers", "typed_numbers"]

GLUED: dict[str, object] = {}
"""Every value :func:`glue` glued in this process (the chapter's kernel), by key."""

_GLUE_ROLE = re.compile(r"\{glue(?::text|:md)?\}`([^`]+)`")
_STRIP = [
    re.compile(r"\$\$.*?\$\$", re.S),        # display math
    re.compile(r"\$[^$\n]+\$"),              # inline math
    re.compile(r"\{[\w:-]+\}`[^`]*`"),       # roles: glue, doc, ref, eq, cite, func, math ...
    re.compile(r"(`+)[^`].*?(?<!`)\1(?!`)"),  # inline code, also ``double`` backticks
    re.compile(r"\]\([^)]*\)"),              # link targets
    re.compile(r"<[^>\n]+>"),                # HTML tags and their attributes
    re.compile(r"^\(.*\)=\s*$", re.M),       # MyST labels
    re.compile(r"^:\w[\w-]*:.*$", re.M),     # directive options
]
# a number: digits with optional thousands separators and decimals; not part of a word, an identifier or a version
_NUMBER = re.compile(r"(?<![\w.,/§-])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\d.,]\d|\w*\.\w)")
# a number right after one of these is a reference to the paper's structure, not a quantity
_REFERENCE = re.compile(r"(?:§|Eq\.|Eqs\.|Equation|Table|Tables|Section|Sections|Sec\.|Fig\.|Figure|stage|stages|"
                        r"Stage|Stages|step|chapter|Chapter|BERT)\s*(?:\(|\d+(?:\.\d+)?\s*(?:–|-|and|,)\s*)*$")


@dataclass(frozen=True)
class TypedNumber:
    """A number typed into a chapter's markdown that a glued value gives too."""

    text: str      # as typed, e.g. "28.6"
    key: str       # the glue key whose value it equals at the typed precision
    context: str   # the typed number with the words around it

    def __str__(self) -> str:
        return f"{self.text!r} (glued as {self.key!r}) in \u2026{self.context}\u2026"


def glue(name: str, value, display: bool = False):
    """Glue ``value`` under ``name`` for the chapter's markdown (myst-nb's ``glue``) and record it for
    :func:`check_prose`. NumPy and torch scalars become Python numbers, so a format spec in the markdown
    (``{glue:text}`name:.1f```) applies to them. Returns the value."""
    from myst_nb import glue as myst_glue  # the book extra; a chapter's kernel has it

    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    GLUED[name] = value
    myst_glue(name, value, display=display)
    return value


def glued_numbers(glued: Mapping[str, object]) -> list[tuple[str, float]]:
    """The numbers in glued values: a number itself, or every number written in a string value."""
    out = []
    for key, value in glued.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, numbers.Real):
            if math.isfinite(float(value)):
                out.append((key, float(value)))
        elif isinstance(value, str):
            out += [(key, float((m.group(1) + (m.group(2) or "")).replace(",", "")))
                    for m in _NUMBER.finditer(value)]
    return out


_FENCE = re.compile(r"^(`{3,}|:{3,})\s*(\{[\w:-]+\})?(.*)$")
_PROSE_DIRECTIVES = {"{admonition}", "{exercise}", "{solution-start}", "{note}", "{tip}", "{important}", "{warning}"}


def _blank(text: str) -> str:
    return re.sub(r"\S", " ", text)


def _fences(markdown: str) -> str:
    """Code blocks and directives whose body is not prose blanked out; exercises, solutions and admonitions keep
    their title and body (their opening ``{name}`` blanked)."""
    lines, stack = [], []  # stack: (fence, is prose)
    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if m and stack and m.group(1) == stack[-1][0] and not (m.group(2) or m.group(3).strip()):
            stack.pop()
            lines.append(_blank(line))
        elif m:
            prose = m.group(2) in _PROSE_DIRECTIVES and all(p for _, p in stack)
            stack.append((m.group(1), prose))
            lines.append(" " * (len(line) - len(m.group(3))) + m.group(3) if prose else _blank(line))
        else:
            lines.append(line if all(p for _, p in stack) else _blank(line))
    return "\n".join(lines)


def _prose(markdown: str) -> str:
    markdown = _fences(markdown)
    for pattern in _STRIP:
        markdown = pattern.sub(lambda m: " " * len(m.group(0)), markdown)  # keep offsets for the context
    return markdown


def _significant_digits(text: str) -> int:
    return len(text.replace(",", "").replace(".", "").lstrip("0"))


def _shown(markdown: str, glued: Mapping[str, object]) -> list[tuple[str, float]]:
    """The numbers the page shows through its glue roles, as the roles format them."""
    shown = []
    for key, spec in glue_roles(markdown):
        if key in glued:
            try:
                text = _format(glued[key], spec) if spec else str(glued[key])
            except (TypeError, ValueError):
                continue
            shown += [(key, v) for _, v in glued_numbers({key: text})]
    return shown


def typed_numbers(markdown: str, glued: Mapping[str, object]) -> list[TypedNumber]:
    """Numbers typed into ``markdown`` that the glued values give.

    A typed number matches when it equals a number that the page shows through a glue role (as the role's format
    spec prints it) or writes in a glued string, when it equals a glued integer, or, with three or more significant
    digits, when a glued number rounds to it at the typed precision: ``28.6`` matches a glued 28.58, ``580`` a glued
    580.49 (shown as "580M"), while ``29`` does not match a glued 28.81 shown as "28.81". Math, code, roles (the glue
    roles themselves among them), link targets and HTML are not prose; numbers with one significant digit and
    numbers after "§", "Eq.", "Table", "Section", "stage" and the like are not checked."""
    values = glued_numbers(glued)
    exact = _shown(markdown, glued)
    exact += [(k, v) for k, v in glued.items() if isinstance(v, int) and not isinstance(v, bool)]
    exact += [(k, v) for k, v in values if isinstance(glued[k], str)]
    prose = _prose(markdown)
    found = []
    for m in _NUMBER.finditer(prose):
        integer, decimals = m.group(1), m.group(2) or ""
        text = integer + decimals
        digits = _significant_digits(text)
        if digits < 2 or _REFERENCE.search(prose[max(0, m.start() - 24):m.start()]):
            continue
        typed = float(text.replace(",", ""))
        places = len(decimals) - 1 if decimals else 0
        tolerance = 0.5 * 10 ** -(places + 3)
        key = next((k for k, v in exact if math.isclose(v, typed, rel_tol=0, abs_tol=tolerance)), None)
        if key is None and digits >= 3:
            key = next((k for k, v in values
                        if math.isclose(round(v, places), typed, rel_tol=0, abs_tol=tolerance)), None)
        if key is not None:
            context = " ".join(markdown[max(0, m.start() - 30):m.end() + 30].split())
            found.append(TypedNumber(text, key, context))
    return found


def glue_roles(markdown: str) -> list[tuple[str, str]]:
    """``(key, format spec)`` of every glue role in ``markdown`` (document paths removed; spec ``""`` if none)."""
    roles = []
    for content in _GLUE_ROLE.findall(markdown):
        key, _, spec = content.split("::")[-1].partition(":")
        roles.append((key, spec))
    return roles


def glue_keys(markdown: str) -> list[str]:
    """The keys of the glue roles in ``markdown``."""
    return [key for key, _ in glue_roles(markdown)]


def _format(value, spec: str) -> str:
    """``value`` formatted as the ``glue:text`` role formats its plain-text form (myst-nb's rule: the type
    character of ``spec`` decides whether the value is taken as a string, an integer or a float)."""
    kind = spec[-1]
    if kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    elif kind == "s":
        value = str(value)
    return format(value, spec)


def _markdown(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")


def check_prose(chapter: str | os.PathLike, glued: Mapping[str, object] | None = None,
                chapters: Iterable[str | os.PathLike] | None = None) -> int:
    """Check a chapter's markdown against what it glued; returns the number of glued values.

    ``chapter`` is a notebook path, or a chapter's name (``"03_lora"``) looked up among the book's chapters as
    ``svlib book run --chapter`` looks it up.
    Raises :class:`AssertionError` naming every number typed into the markdown that a glued value gives
    (:func:`typed_numbers`) and every glue key the markdown uses but the run never glued."""
    glued = GLUED if glued is None else glued
    path = Path(chapter)
    if not path.is_file():
        available = [Path(p) for p in (chapters if chapters is not None else toc_chapters())]
        try:
            path = _find(available, str(chapter), "chapter")
        except ValueError as err:  # not a file either
            raise FileNotFoundError(f"{err}; and no notebook file {str(chapter)!r}") from None
    markdown = _markdown(path)
    problems = [f"typed in, but computed: {t}" for t in typed_numbers(markdown, glued)]
    for key, spec in dict.fromkeys(glue_roles(markdown)):
        if key not in glued:
            problems.append(f"glue key {key!r} is used in the markdown but was not glued")
        elif spec:
            try:
                _format(glued[key], spec)
            except (TypeError, ValueError) as err:
                problems.append(f"glue key {key!r}: format spec {spec!r} does not apply to {glued[key]!r} ({err})")
    if problems:
        raise AssertionError(f"{path.name}: " + "; ".join(problems))
    return len(glued)
