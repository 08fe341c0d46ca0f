"""Atomic file writes: nothing svlib writes (audio, lists, caches, models, checkpoints) is ever seen half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then move it onto ``path`` with :func:`os.replace`.

    The parent folder is created if needed; on any error the temporary file is removed and the error re-raised, so
    ``path`` holds either its old content or the complete new one. ``suffix`` is the temporary file's extension, for
    writers that choose a format by it (soundfile) or append one (``numpy.savez``). Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
