"""The built HTML book as a reader sees it: every page of the toc rendered by headless Chromium, its images present
and valid, every equation typeset by the vendored MathJax (no raw TeX left), and a screenshot saved to
``_build/screenshots/<page>.png``.

Needs Debian's ``chromium`` and a built book (``make book``; the test suite does not build it). ``SVLIB_BOOK_HTML``
points the test at another build (default ``_build/html``).
"""

import base64
import os
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from svlib.core.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("SVLIB_BOOK_HTML", ROOT / "_build" / "html"))
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
WINDOW = (1280, 2000)
RAW_TEX = ("$$", r"\begin{", r"\tag{", r"\frac")
"""TeX that MathJax turns into ``mjx-container`` elements; seen as text, an equation was not typeset."""
NOT_PROSE = ("mjx-container", "script", "style", "pre", "code", "textarea", "noscript")
"""Elements whose text may legitimately hold TeX (code cells, literals) or is MathJax's own output."""

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (/usr/bin/chromium or on PATH)"),
]
needs_book = pytest.mark.skipif(not (HTML / "index.html").is_file(),
                                reason=f"no built book at {HTML} (run `make book`)")


def _toc_pages(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        out += [str(node[k]) for k in ("root", "file") if k in node]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out += _toc_pages(child)
    return out


PAGES = _toc_pages(yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf8")))


def _render(page: Path, shot: Path) -> str:
    """Load ``page`` in headless Chromium (MathJax given 10 s of virtual time); save a screenshot, return the DOM."""
    dom = {}
    with tempfile.TemporaryDirectory() as profile_dir:

        def screenshot(tmp: str) -> None:
            done = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={profile_dir}", "--virtual-time-budget=10000",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={tmp}", "--dump-dom", page.as_uri()],
                capture_output=True, text=True, timeout=180, check=False,
            )
            assert done.returncode == 0 and "</html>" in done.stdout, \
                f"chromium failed on {page} (exit {done.returncode}): {done.stderr[-2000:]}"
            dom["html"] = done.stdout

        atomic_write(shot, screenshot, suffix=".png")
    return dom["html"]


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _image_problem(data: bytes, name: str) -> str | None:
    """Why ``data`` is not a displayable PNG/SVG/JPEG/GIF image, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        size = _png_size(data)
        return None if size and min(size) > 0 else f"{name}: PNG without a valid IHDR size"
    if data[:3] == b"\xff\xd8\xff" or data[:6] in (b"GIF87a", b"GIF89a"):
        return None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        return f"{name}: neither PNG, JPEG, GIF nor well-formed SVG ({err})"
    return None if root.tag.rsplit("}", 1)[-1] == "svg" else f"{name}: XML whose root is <{root.tag}>, not <svg>"


def _context(text: str, token: str) -> str:
    i = text.index(token)
    return " ".join(text[max(0, i - 60): i + 60].split())


def _page_problems(page: Path, shot: Path, html_root: Path) -> list[str]:
    """Render ``page`` (screenshot to ``shot``) and list what a reader would see broken."""
    bs4 = pytest.importorskip("bs4")
    soup = bs4.BeautifulSoup(_render(page, shot), "html.parser")
    problems = [] if _png_size(shot.read_bytes()) == WINDOW else [f"{shot}: not a {WINDOW[0]}x{WINDOW[1]} PNG"]

    # images: every <img> points at a local, valid image file (or an embedded one)
    for img in soup.find_all("img"):
        src = img.get("src", "")
        url = urlsplit(src)
        if url.scheme == "data":
            header, _, payload = src.partition(",")
            data = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()
            problem = _image_problem(data, f"<img src={header},...>")
        elif url.scheme or not url.path:
            problem = f"<img src={src!r}>: not a local file (the book must work offline)"
        else:
            path = (page.parent / unquote(url.path)).resolve()
            missing = f"<img src={src!r}>: {path} missing"
            problem = _image_problem(path.read_bytes(), str(path)) if path.is_file() else missing
        if problem:
            problems.append(problem)

    # nothing remote; equations typeset by the vendored MathJax
    scripts = [s.get("src") for s in soup.find_all("script") if s.get("src")]
    remote = [s for s in scripts if urlsplit(s).scheme] + [
        link["href"] for link in soup.find_all("link", rel="stylesheet") if urlsplit(link.get("href", "")).scheme]
    problems += [f"remote resource {r} (the book must work offline)" for r in remote]
    equations = soup.select(".math")
    mathjax = [s for s in scripts if s.split("?")[0].endswith("tex-chtml.js")]
    if equations and not mathjax:
        problems.append(f"{len(equations)} equations but no MathJax <script> (tex-chtml.js) on the page")
    for src in mathjax:
        path = (page.parent / unquote(urlsplit(src).path)).resolve()
        if not (path.is_file() and path.parent == (html_root / "_static" / "mathjax").resolve()):
            problems.append(f"MathJax script {src!r} is not the vendored _static/mathjax/tex-chtml.js")
    untypeset = [m for m in equations if m.find("mjx-container") is None]
    problems += [f"equation not typeset by MathJax: {' '.join(m.get_text().split())[:120]!r}" for m in untypeset]

    # no raw TeX left in the prose
    for tag in soup.find_all(list(NOT_PROSE)):
        tag.decompose()
    text = soup.get_text(" ")
    problems += [f"raw TeX {t!r} left in the page: ...{_context(text, t)}..." for t in RAW_TEX if t in text]
    return problems


@needs_book
@pytest.mark.parametrize("entry", PAGES)
def test_page_renders(entry):
    page = HTML / f"{entry}.html"
    if not page.is_file():
        pytest.skip(f"{entry} is in _toc.yml but not in the built book {HTML} (stale build: run `make book`)")
    shot = SHOTS / f"{Path(entry).name}.png"
    problems = _page_problems(page, shot, HTML)
    assert not problems, f"{entry} ({page}), screenshot {shot}:\n" + "\n".join(problems)


def test_checks_catch_broken_pages(tmp_path):
    """The checks themselves: a page with raw TeX, an untypeset equation and broken images fails them all."""
    (tmp_path / "bad.svg").write_text("<html/>")
    (tmp_path / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + struct.pack(">II", 4, 3) + b"\0" * 20)
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><p>Display: $$E = mc^2$$ and \\frac{a}{b}</p><span class='math'>\\(x\\)</span>"
        "<pre>$$ in code is fine</pre><img src='fig.png'><img src='missing.png'><img src='bad.svg'>"
        "<img src='https://example.org/x.png'></body></html>"
    )
    problems = _page_problems(page, tmp_path / "shot.png", tmp_path)
    expected = ["missing.png", "bad.svg: XML whose root is <html>", "https://example.org/x.png",
                "but no MathJax", "equation not typeset", "raw TeX '$$'", "raw TeX '\\\\frac'"]
    for fragment in expected:
        assert any(fragment in p for p in problems), f"no problem mentions {fragment!r}: {problems}"
    assert len(problems) == len(expected), problems
