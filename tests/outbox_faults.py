"""Real trouble for the outbox file, for tests: read-only files and directories, a small disk.

Tests run as root here, and root ignores permission bits: a read-only file or directory is
made with ``chattr +i`` then (the kernel refuses every write, root's included), and with
``chmod`` for anyone else. A small disk is a tmpfs mounted for the test. When neither works
the test is skipped, saying why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["fill", "fingerprint", "read_only", "small_disk"]


def fingerprint(path: Path) -> str:
    """The file's bytes, hashed: to show that nothing was written to it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the file or directory ``path`` read-only for this process, for the block."""
    if os.geteuid() != 0:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a file read-only for root")
    done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@contextmanager
def small_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on the new directory ``where``, for the block."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a file on ``disk`` that leaves about ``leave`` bytes free; returns its path."""
    info = os.statvfs(disk)
    free = info.f_bavail * info.f_frsize
    ballast = disk / "ballast"
    with ballast.open("wb") as out:
        chunk = b"\0" * (1024 * 1024)
        left = max(free - leave, 0)
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return ballast
