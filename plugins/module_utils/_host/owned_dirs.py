# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Work directories that name the process that made them, so that a later run can tell those of a run that was
killed (its process gone, its directory never removed) from those of a run still going (another thread, another
module on the host) and remove only the first.

A directory is claimed by a line in its OWNER file: the PID and start time (clock ticks since boot, /proc/<pid>/stat)
of a process that works in it; several processes may claim it (a module and a daemon it started that outlives it),
and it is left behind once none of them runs. A directory without OWNER is left alone while it is younger than
UNCLAIMED_AGE (it may be being made)."""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

OWNER = ".owner"
UNCLAIMED_AGE = 3600  # seconds after which a directory nobody claimed counts as left behind


def claim(path: str, pid: int | None = None, proc: str = "/proc") -> None:
    """Record in directory `path` that process `pid` (this one by default) works in it."""
    pid = os.getpid() if pid is None else pid
    seen = procs.start_time(pid, proc)
    fd = os.open(os.path.join(path, OWNER), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{pid} {seen[1] if seen else 0}\n")


def _owner_alive(path: str, proc: str) -> bool | None:
    """Whether a process that claimed the directory runs (None: not claimed, or its OWNER has no claim in it yet:
    a claim being written)."""
    try:
        with open(os.path.join(path, OWNER), encoding="utf-8") as handle:
            lines = [line.split() for line in handle]
    except FileNotFoundError:
        return None
    except OSError:
        return True  # unreadable: not ours to judge
    claims = [(int(words[0]), int(words[1])) for words in lines
              if len(words) == 2 and all(word.isdigit() for word in words)]
    if not claims:
        return None
    return any(procs.alive(pid, started or None, proc) for pid, started in claims)


def sweep(parent: str, proc: str = "/proc", now: float | None = None) -> list[str]:
    """Remove the directories in `parent` whose owner is gone, and those nobody claimed for UNCLAIMED_AGE; their
    names (sorted)."""
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    now = time.time() if now is None else now
    removed = []
    for name in names:
        path = os.path.join(parent, name)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        alive = _owner_alive(path, proc)
        if alive is None:
            try:
                alive = now - os.stat(path).st_mtime < UNCLAIMED_AGE
            except OSError:
                continue
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed
