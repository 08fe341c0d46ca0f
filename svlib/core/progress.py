"""Progress bars: ``tqdm.auto`` that also obeys ``TQDM_DISABLE``.

tqdm reads ``TQDM_DISABLE`` only as the default of ``disable``; svlib always passes ``disable`` (a bar on rank 0
only, or none when the caller asks for none), which silently overrode the variable. The book build sets it so that
pages show no frozen notebook bars ("0/224 [00:00<?]"), so every bar of svlib goes through :func:`progress_bar`.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_disabled"]


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` turns bars off (set to anything but ``""``, ``0``, ``false`` or ``no``)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(*args, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm.auto.tqdm(*args, **kwargs)``, shown when ``enabled`` and not turned off by ``TQDM_DISABLE``."""
    if "disable" in kwargs:
        raise TypeError("progress_bar takes enabled=, not disable=")
    return tqdm(*args, disable=not enabled or progress_disabled(), **kwargs)
