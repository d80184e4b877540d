# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Copies of a container that Docker does not know about: a containerd shim left running for its id.

When dockerd is killed in the middle of `docker start --checkpoint`, the restore can still finish inside containerd:
the restored processes run under `containerd-shim-runc-v2 -namespace moby -id <container id>`, containerd lists the
task as UNKNOWN, and the new daemon says the container exited (it even outlives `docker rm -f`). Restoring the
container again would run a second copy, so such a shim and its processes are stopped first.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

if TYPE_CHECKING:
    from collections.abc import Callable

    Shims = dict[int, list[int]]  # shim pid -> the pids of its child processes

SHIM = "containerd-shim-runc-v2"


def _cmdline(proc: str, pid: str) -> list[bytes]:
    try:
        with open(os.path.join(proc, pid, "cmdline"), "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def _children(proc: str, pid: int | str) -> list[int]:
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def find_shims(container_id: str, namespace: str = "moby", proc: str = "/proc") -> Shims:
    """{shim pid: [its child pids]} for every shim serving this container id in this namespace."""
    shims: Shims = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        argv = [part.decode("utf-8", "replace") for part in _cmdline(proc, entry) if part]
        if not argv or os.path.basename(argv[0]) != SHIM:
            continue
        options = dict(zip(argv[1::], argv[2::]))
        if options.get("-namespace") == namespace and options.get("-id") == container_id:
            shims[int(entry)] = _children(proc, entry)
    return shims


def lingering_shims(container_id: str, wait: float = 2.0, namespace: str = "moby", proc: str = "/proc") -> Shims:
    """find_shims, but a shim with no process under it is given `wait` seconds to end first: Docker deletes a task
    (and its shim exits) just before it records the container stopped, so a shim seen right then is on its way out,
    not a copy."""
    deadline = time.monotonic() + wait
    shims = find_shims(container_id, namespace, proc)
    while shims and not any(shims.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        shims = find_shims(container_id, namespace, proc)
    return shims


def stop_shims(shims: Shims, wait: float = 5.0, kill: Callable[[int, int], None] = os.kill) -> list[int]:
    """SIGKILL the shims' processes, then the shims; returns the pids still alive after `wait` seconds."""
    pids = [child for children in shims.values() for child in children] + list(shims)
    for pid in pids:
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if procs.alive(pid)]
    return alive
