"""Safe file writes: nothing svlib writes (audio, lists, caches, models, checkpoints) is ever seen half-written
(:func:`atomic_write`), and one-time preparations shared by several processes run once (:func:`file_lock`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
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
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_file_mode() -> int:
    """The permissions ``open()`` gives a new file (``0o666`` less the umask), for files made by writers that
    choose ``0o600`` (``mkstemp``, onnx's external-data writer)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Processes that prepare the same thing (the ranks of a torchrun job building the demo corpus or fetching a Debian
    package, two chapters at once) take turns: the first does the work, the others then find it done.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
