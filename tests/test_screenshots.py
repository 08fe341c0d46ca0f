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


# ------------------------------------------------------------------------------------------------------------
# Layout: what fits the reader's window (a live Chromium over the DevTools protocol, 1280 px wide)
# ------------------------------------------------------------------------------------------------------------
LAYOUT_JS = r"""
(() => {
  const column = document.querySelector('article.bd-article') || document.body;
  const width = column.clientWidth;
  const out = {column: width, code: [], tables: [], figures: [], nan: 0, paths: []};
  for (const pre of column.querySelectorAll('pre')) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      const line = pre.innerText.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      out.code.push(line.slice(0, 100));
    }
  }
  for (const table of column.querySelectorAll('table')) {
    const w = table.getBoundingClientRect().width;
    if (w > width + 1) out.tables.push(`${Math.round(w)} px: ${table.innerText.slice(0, 80).replace(/\s+/g, ' ')}`);
  }
  for (const img of column.querySelectorAll('img')) {
    out.figures.push([img.naturalWidth, img.getBoundingClientRect().width, (img.getAttribute('src') || '').slice(-40)]);
  }
  const text = column.innerText;
  out.nan = (text.match(/\bNaN\b/g) || []).length;
  out.paths = (text.match(/(\/work\/|\/tmp\/|\/root\/|\/home\/|\/Users\/)[^\s'"]*/g) || []).slice(0, 5);
  return JSON.stringify(out);
})()
"""
FIGURE_DPI, MIN_FONT_PT, MIN_FONT_PX = 150, 9.0, 11.0
"""svlib.book.plots draws at 150 dpi with no text under 9 pt; on screen that text must stay at least 11 px tall."""


class _Chromium:
    """A headless Chromium driven over the DevTools protocol (only websocket-client, which Jupyter brings)."""

    def __init__(self, width: int = WINDOW[0], height: int = 1000):
        import json
        import socket
        import time
        import urllib.request

        websocket = pytest.importorskip("websocket")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._dir = tempfile.TemporaryDirectory()
        self._proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={self._dir.name}", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        page = next(t for t in targets if t["type"] == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120)
        self._json, self._time, self._id = json, time, 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self._ws.send(self._json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = self._json.loads(self._ws.recv())
            if message.get("id") == self._id:
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def layout(self, page: Path) -> dict:
        self.call("Page.navigate", url=page.as_uri())
        for _ in range(200):
            if self.evaluate("document.readyState") == "complete":
                break
            self._time.sleep(0.05)
        self.evaluate("window.MathJax && MathJax.startup && MathJax.startup.promise")
        self._time.sleep(1.0)  # typesetting and images
        return self._json.loads(self.evaluate(LAYOUT_JS))

    def capture_tables(self, out_dir: Path, stem: str) -> list[Path]:
        """Screenshots of the page's output tables (the page loaded by :meth:`layout`), one PNG per table."""
        import base64 as b64

        rects = self._json.loads(self.evaluate(
            "JSON.stringify([...document.querySelectorAll('article.bd-article div.cell_output table')].map(t => {"
            "const r = t.getBoundingClientRect(); return [r.x + window.scrollX, r.y + window.scrollY, r.width, "
            "r.height];}))"))
        paths = []
        for i, (x, y, w, h) in enumerate(rects, 1):
            clip = {"x": max(0, x - 8), "y": max(0, y - 8), "width": w + 16, "height": h + 16, "scale": 1}
            data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
            path = out_dir / f"{stem}_table{i}.png"
            atomic_write(path, lambda tmp, d=data: Path(tmp).write_bytes(b64.b64decode(d)), suffix=".png")
            paths.append(path)
        return paths

    def close(self):
        self._ws.close()
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._dir.cleanup()


def _layout_problems(layout: dict) -> list[str]:
    problems = [f"code line cut off at the column's edge: {line!r}" for line in layout["code"]]
    problems += [f"table wider than the {layout['column']}-px column: {t}" for t in layout["tables"]]
    for natural, shown, src in layout["figures"]:
        if natural and shown:
            px = MIN_FONT_PT * FIGURE_DPI / 72 * shown / natural
            if px < MIN_FONT_PX:
                problems.append(f"figure …{src}: {natural} px shown at {shown:.0f} px, its 9-pt text at {px:.1f} px")
    if layout["nan"]:
        problems.append(f"{layout['nan']} 'NaN' shown to the reader (use '–' for a missing number)")
    problems += [f"absolute path of the build machine shown: {p}" for p in layout["paths"]]
    return problems


@pytest.fixture(scope="module")
def chromium():
    browser = _Chromium()
    yield browser
    browser.close()


@needs_book
@pytest.mark.parametrize("entry", PAGES)
def test_page_fits_the_window(entry, chromium):
    """At 1280 px: no code line or table runs past the content column, figure text is readable, no 'NaN', no path of
    the machine that built the book."""
    page = HTML / f"{entry}.html"
    if not page.is_file():
        pytest.skip(f"{entry} is in _toc.yml but not in the built book {HTML} (stale build: run `make book`)")
    problems = _layout_problems(chromium.layout(page))
    if entry.endswith("_results"):  # Tables 1-3 as the reader sees them, for the record
        assert chromium.capture_tables(SHOTS, Path(entry).name), "the Results chapter shows its tables"
    assert not problems, f"{entry}:\n" + "\n".join(problems)


def test_layout_checks_catch_what_does_not_fit(tmp_path, chromium):
    wide = "x = " + "1 + " * 60 + "1"
    page = tmp_path / "wide.html"
    page.write_text(
        "<html><body><article class='bd-article' style='width: 500px'>"
        f"<pre style='overflow: auto'>{wide}</pre><table><tr>{'<td>1234567890</td>' * 30}</tr></table>"
        "<p>value NaN in /work/main/exp/x</p></article></body></html>"
    )
    problems = _layout_problems(chromium.layout(page))
    expected = ["code line cut off", "table wider", "'NaN' shown", "absolute path"]
    for fragment in expected:
        assert any(fragment in p for p in problems), f"no problem mentions {fragment!r}: {problems}"
