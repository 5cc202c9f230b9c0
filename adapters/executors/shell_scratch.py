"""The shell executor's temporary working directories, grouped by the process that made them,
and the removal of the groups whose process is gone.

A task's scratch directory (``ledger-shell-XXXX``) is removed when its command ends, but a
worker killed with SIGKILL leaves it behind. So every process keeps its scratch directories
under one parent, ``<tmp>/ledger-shell.<host>.<pid>.<start>/``: ``host`` is the first 12 hex
digits of the SHA-256 of the host name, ``pid`` the process id and ``start`` its start time
(clock ticks since boot, from ``/proc``; a reused pid has another). A worker node calls
``remove_orphans`` at start and every ``ORPHAN_SWEEP_SECONDS``; it removes the parents of
processes of this host that are gone (no such pid, another start time, or a zombie).

It never removes the parent of a live process, another host's (a ``/tmp`` shared between
hosts or containers with their own pid space has other host names), a name it does not
recognise (including the ``ledger-shell-*`` directories of earlier versions), a symbolic link,
or a directory owned by another user.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ORPHAN_SWEEP_SECONDS = 300.0
SCRATCH_PREFIX = "ledger-shell-"
_PARENT = re.compile(r"ledger-shell\.(?P<host>[0-9a-f]{12})\.(?P<pid>[0-9]+)\.(?P<start>[0-9]+)")
_registered_exit: set[int] = set()


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def process_start(pid: int) -> str | None:
    """The start time of a running process (``None`` when it is gone or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: the pid alone tells
        return "0" if _pid_exists(pid) else None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X", "x") else start


def parent_dir(root: Path | None = None) -> Path:
    """This process's parent of scratch directories, created (mode 0700) if need be; the
    temporary directory itself if that name is taken by something that is not ours."""
    base = root or Path(tempfile.gettempdir())
    pid = os.getpid()
    path = base / f"ledger-shell.{host_tag()}.{pid}.{process_start(pid) or 0}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if not _is_own_directory(path):
        log.warning("%s is not a directory of this user; using %s", path, base)
        return base
    if pid not in _registered_exit:
        _registered_exit.add(pid)
        atexit.register(_remove_if_empty, path, pid)
    return path


def scratch_directory(root: Path | None = None) -> tempfile.TemporaryDirectory[str]:
    """A fresh working directory for one command, removed when the context ends."""
    return tempfile.TemporaryDirectory(
        prefix=SCRATCH_PREFIX, dir=parent_dir(root), ignore_cleanup_errors=True
    )


def remove_orphans(root: Path | None = None) -> list[Path]:
    """Remove the scratch parents of this host's processes that are gone; returns them."""
    base = root or Path(tempfile.gettempdir())
    here, removed = host_tag(), []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for path in entries:
        match = _PARENT.fullmatch(path.name)
        if match is None or match["host"] != here or not _is_own_directory(path):
            continue
        if process_start(int(match["pid"])) == match["start"]:
            continue  # a live process: its directories are in use
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


async def sweep_orphans(stop: asyncio.Event, interval: float = ORPHAN_SWEEP_SECONDS) -> None:
    """``remove_orphans`` now and every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            removed = await asyncio.to_thread(remove_orphans)
        except Exception:
            log.exception("removing the scratch directories of gone processes failed")
        else:
            if removed:
                log.info("removed %d scratch directories of gone processes", len(removed))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def _is_own_directory(path: Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _remove_if_empty(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the hook
        with contextlib.suppress(OSError):
            path.rmdir()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
