"""Fetching Debian packages: idempotent, and safe when several processes (torchrun ranks) ask at once."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None,
                                reason="needs Debian's dpkg and dpkg-deb")


def _fake_tools(tmp_path: Path) -> dict:
    """A tiny .deb, an `apt-get` that 'downloads' it, and a `dpkg` that is slow to unpack (so two fetches overlap)."""
    pkg = tmp_path / "src" / "svlibfake"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: svlibfake\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n")
    (pkg / "usr" / "share" / "svlibfake").mkdir(parents=True)
    (pkg / "usr" / "share" / "svlibfake" / "hello.txt").write_text("hello\n")
    deb = tmp_path / "svlibfake_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho apt-get >> {log}\ncp {deb} .\n")
    (bin_dir / "dpkg").write_text(f"#!/bin/sh\necho dpkg >> {log}\nsleep 1\nexec {shutil.which('dpkg')} \"$@\"\n")
    for tool in ("apt-get", "dpkg"):
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_concurrent_fetches_of_one_package_both_succeed(tmp_path):
    """Two processes fetch the same package into the same root at once (the ranks of a fresh-clone torchrun run
    building the demo noise bank): both return the unpacked folder, which is complete and was downloaded and
    unpacked once (the second process waits, then finds it; before, both unpacked into one shared .partial
    folder, each deleting the other's work)."""
    env = _fake_tools(tmp_path)
    root = tmp_path / "data"
    code = textwrap.dedent(f"""
        from svlib.data.debian import fetch_debian_package
        print(fetch_debian_package("svlibfake", {str(root)!r}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == str(root / "pkgs" / "svlibfake")
    target = root / "pkgs" / "svlibfake"
    assert (target / "usr" / "share" / "svlibfake" / "hello.txt").read_text() == "hello\n"
    assert (target / ".svlib-extracted").is_file()
    assert not list((root / "pkgs").glob("*.partial"))
    assert (tmp_path / "calls.log").read_text().split() == ["apt-get", "dpkg"]
