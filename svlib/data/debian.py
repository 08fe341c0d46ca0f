"""Real recordings from Debian packages, for tests and small demos that need speech without a corpus download.

Debian's ``klettres-data`` package ships short recordings of letters and syllables (Ogg Vorbis, 44.1 kHz) spoken
by one voice per language. :func:`fetch_debian_package` downloads and unpacks a package with ``apt-get download`` and
``dpkg -x`` (no installation, no root needed once package lists exist); :func:`speech_sample` turns a few of those
clips into one 16 kHz speech waveform.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import torch

from svlib.core.atomic import file_lock
from svlib.core.paths import default_data_root
from svlib.frontend.audio import load_audio

logger = logging.getLogger(__name__)

__all__ = [
    "copyright_stanza",
    "debian_package_version",
    "fetch_debian_package",
    "klettres_clips",
    "load_clips",
    "speech_sample",
]

_MARKER = ".svlib-extracted"
_LISTS_MISSING = ("Unable to locate package", "has no installation candidate", "Can't select candidate version")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    logger.info("running %s in %s", " ".join(cmd), cwd)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_debian_package(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download Debian package ``name`` into ``root/debs`` and unpack it into ``root/pkgs/name``; return the latter.

    Idempotent: a marker file is written after a complete extraction and a later call returns at once. Safe under
    concurrency: processes fetching the same package take turns on a lock file (``root/pkgs/.<name>.lock``).
    Steps: 1. return early if the marker exists; 2. ``apt-get download name`` (as root, after one ``apt-get update``
    if the package lists are missing); 3. ``dpkg -x`` into a temporary folder, renamed into place; 4. write the
    marker.

    Raises:
        RuntimeError: ``apt-get`` or ``dpkg`` is missing, or the download or extraction failed (the message says
            what to do).
    """
    root = Path(root) if root is not None else default_data_root()
    target = root / "pkgs" / name
    # 1. already unpacked
    if (target / _MARKER).is_file():
        return target
    # several processes (the ranks of a torchrun job, two chapters) may ask for the same package at once: one fetches
    # it while the others wait on the lock, then find the marker
    with file_lock(target.parent / f".{name}.lock"):
        if (target / _MARKER).is_file():
            return target
        return _fetch_and_unpack(name, root, target)


def _fetch_and_unpack(name: str, root: Path, target: Path) -> Path:
    """Steps 2–4 of :func:`fetch_debian_package` (called with the package's lock held)."""
    apt_get, dpkg = shutil.which("apt-get"), shutil.which("dpkg")
    if apt_get is None or dpkg is None:
        raise RuntimeError(
            f"cannot fetch Debian package {name!r}: 'apt-get' and 'dpkg' are needed (found apt-get={apt_get}, "
            f"dpkg={dpkg}). Run on a Debian/Ubuntu machine, or unpack {name}'s .deb yourself into {target} "
            f"and create an empty file {target / _MARKER}."
        )
    # 2. download
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    result = _run([apt_get, "download", name], debs)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        if any(msg in result.stderr for msg in _LISTS_MISSING):
            logger.info("apt-get download %s failed (package lists missing?); running apt-get update once", name)
            _run([apt_get, "update"], debs)
            result = _run([apt_get, "download", name], debs)
    if result.returncode != 0:
        raise RuntimeError(
            f"'apt-get download {name}' failed in {debs} (exit {result.returncode}): {result.stderr.strip()}\n"
            "Check the network and that the package exists (apt-cache policy " + name + "); if package lists are "
            "missing, run 'sudo apt-get update' and try again."
        )
    candidates = sorted(debs.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise RuntimeError(f"'apt-get download {name}' succeeded but no {name}_*.deb appeared in {debs}")
    deb = candidates[-1]
    # 3. extract into a temporary folder, then move into place
    partial = target.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = _run([dpkg, "-x", str(deb), str(partial)], debs)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(
            f"'dpkg -x {deb} {partial}' failed (exit {result.returncode}): {result.stderr.strip()}\n"
            f"Delete {deb} and try again (the download may be corrupt)."
        )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    # 4. marker
    (target / _MARKER).write_text(deb.name + "\n")
    logger.info("unpacked %s into %s", deb.name, target)
    return target


def _trim_silence(wav: torch.Tensor, sample_rate: int, threshold_db: float = -40.0) -> torch.Tensor:
    """Drop leading/trailing 10 ms frames whose RMS is more than ``-threshold_db`` dB below the loudest frame."""
    hop = sample_rate // 100
    n = wav.shape[0] // hop * hop
    if n == 0:
        return wav
    rms = wav[:n].reshape(-1, hop).pow(2).mean(dim=1).sqrt()  # (frames,)
    loud = torch.nonzero(rms >= rms.max() * 10 ** (threshold_db / 20)).flatten()
    if loud.numel() == 0 or float(rms.max()) == 0.0:
        return wav
    return wav[int(loud[0]) * hop : min(wav.shape[0], (int(loud[-1]) + 1) * hop)]


def klettres_clips(language: str = "fr", root: str | os.PathLike | None = None) -> list[Path]:
    """The ``<language>/alpha/*.ogg`` clips of ``klettres-data`` (one voice per language), in natural order.

    Fetches the package on first use. ``language`` is a folder name such as ``fr``, ``de``, ``en``, ``ru``.
    """
    base = fetch_debian_package("klettres-data", root) / "usr" / "share" / "klettres"
    langs = sorted(d.name for d in base.iterdir() if d.is_dir() and any((d / "alpha").glob("*.ogg")))
    if language not in langs:
        raise ValueError(f"klettres-data has no clips for language {language!r}; available: {langs}")

    def natural(p: Path) -> list:  # a-2 before a-10
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.stem)]

    return sorted((base / language / "alpha").glob("*.ogg"), key=natural)


def load_clips(
    language: str = "fr", n_clips: int = 4, root: str | os.PathLike | None = None, sample_rate: int = 16000
) -> list[torch.Tensor]:
    """The first ``n_clips`` klettres clips of one voice, each resampled to ``sample_rate`` and silence-trimmed."""
    clips = klettres_clips(language, root)[:n_clips]
    return [_trim_silence(load_audio(c, sample_rate=sample_rate), sample_rate) for c in clips]


def speech_sample(
    root: str | os.PathLike | None = None,
    n_clips: int = 4,
    sample_rate: int = 16000,
    gap_s: float = 0.1,
    language: str = "fr",
) -> tuple[torch.Tensor, int]:
    """A few seconds of real speech from one speaker: ``(waveform (num_samples,) float32, sample_rate)``.

    The first ``n_clips`` clips of ``klettres-data``'s ``language`` voice (:func:`load_clips`), joined with
    ``gap_s`` seconds of silence.
    """
    gap = torch.zeros(int(round(gap_s * sample_rate)))
    pieces: list[torch.Tensor] = []
    for i, clip in enumerate(load_clips(language, n_clips, root, sample_rate)):
        if i:
            pieces.append(gap)
        pieces.append(clip)
    return torch.cat(pieces).to(torch.float32), sample_rate


def debian_package_version(package_dir: str | os.PathLike) -> str:
    """The Debian version of an unpacked package (``fetch_debian_package``'s folder), e.g. ``"4:22.12.3-1"``.

    Read from the first line of ``usr/share/doc/<name>/changelog.Debian.gz`` (``name (version) dist; ...``); if
    that file is missing, from the ``.deb`` file name recorded in the extraction marker.

    Raises:
        ValueError: neither source gives a version (the message names the files looked at).
    """
    package_dir = Path(package_dir)
    changelog = package_dir / "usr" / "share" / "doc" / package_dir.name / "changelog.Debian.gz"
    if changelog.is_file():
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as f:
            match = re.match(r"\S+ \(([^)]+)\)", f.readline())
        if match:
            return match.group(1)
    marker = package_dir / _MARKER
    if marker.is_file():  # e.g. klettres-data_4%3a22.12.3-1_all.deb
        parts = marker.read_text().strip().split("_")
        if len(parts) >= 3:
            return parts[1].replace("%3a", ":")
    raise ValueError(f"{package_dir}: no version in {changelog} or {marker} (expected an unpacked Debian package)")


def copyright_stanza(package_dir: str | os.PathLike, files: str = "*") -> dict[str, str] | None:
    """The ``Files: <files>`` paragraph of a package's machine-readable (DEP-5) ``copyright`` file.

    Returns the paragraph's fields (``Files``, ``Copyright``, ``License`` (first line only), ``Comment``) as
    strings, or ``None`` when the copyright file is not in DEP-5 format or has no paragraph whose ``Files`` field
    lists the pattern ``files`` (e.g. ``"*"`` or ``"fr-*"``).
    """
    package_dir = Path(package_dir)
    path = package_dir / "usr" / "share" / "doc" / package_dir.name / "copyright"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("Format:"):
        return None
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if files in fields.get("Files", "").split():
            if "License" in fields:
                fields["License"] = fields["License"].splitlines()[0].strip()
            return fields
    return None
