"""Sphinx glue for the MathJax copy that ``make mathjax`` vendors into ``_static/mathjax/`` (no CDN).

Jupyter Book 1 adds every ``*.js`` under the static paths to every page as a ``<script>``; MathJax's ~100
component files must only be loaded by MathJax itself (from ``mathjax_path``), so they are dropped here.
Duplicate static entries (``_static`` is both configured and auto-added by Jupyter Book) are merged, and a
missing vendored copy is a warning, i.e. an error under ``-W``.
"""

from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _name(entry):
    return entry[0] if isinstance(entry, (tuple, list)) else entry


def _unique(entries):
    seen, out = set(), []
    for entry in entries:
        if _name(entry) not in seen:
            seen.add(_name(entry))
            out.append(entry)
    return out


def _configure(app, config):
    vendored_dir = str(Path(config.mathjax_path).parent.as_posix()) + "/"
    config.html_static_path = _unique(config.html_static_path)
    config.html_css_files = _unique(config.html_css_files)
    config.html_js_files = [e for e in _unique(config.html_js_files) if not str(_name(e)).startswith(vendored_dir)]
    if "://" in config.mathjax_path:
        logger.warning("mathjax_path %r is remote; the book must render offline", config.mathjax_path)
    elif not any(Path(app.confdir, d, config.mathjax_path).is_file() for d in config.html_static_path):
        logger.warning("vendored MathJax not found at _static/%s: run `make mathjax`", config.mathjax_path)


def setup(app):
    app.connect("config-inited", _configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
