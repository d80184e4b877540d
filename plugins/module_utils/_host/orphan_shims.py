# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Copies of a container that Docker does not know about: a containerd shim left running for its id.

When dockerd is killed in the middle of `docker start --checkpoint`, the restore can still finish inside containerd:
the restored processes run under `containerd-shim-runc-v2 -namespace moby -id <container id>`, containerd lists the
task as UNKNOWN, and the new daemon says the container exited (it even outlives `docker rm -f`). Restoring the
container again would run a second copy, so such a shim and its processes are stopped first.

Only a real shim counts: a process of root's whose executable (/proc/PID/exe, not its command line, which any user
can set) is containerd-shim-runc-v2. Each process is pinned with a pidfd and checked again before it is killed, so a
PID reused between the scan and the kill is left alone.
"""

from __future__ import annotations

import functools
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


def _shim_options(proc: str, pid: int | str, uid: int) -> dict[str, str] | None:
    """The options of a real shim (a process of `uid` running the shim's executable); None for anything else."""
    try:
        if os.stat(os.path.join(proc, str(pid))).st_uid != uid:
            return None
        exe = os.readlink(os.path.join(proc, str(pid), "exe"))
    except OSError:
        return None
    if os.path.basename(exe[:-len(" (deleted)")] if exe.endswith(" (deleted)") else exe) != SHIM:
        return None
    argv = [part.decode("utf-8", "replace") for part in _cmdline(proc, str(pid)) if part]
    if not argv or os.path.basename(argv[0]) != SHIM:
        return None
    return dict(zip(argv[1::], argv[2::]))


def _serves(options: dict[str, str] | None, container_id: str, namespace: str) -> bool:
    return options is not None and options.get("-namespace") == namespace and options.get("-id") == container_id


def _parent(proc: str, pid: int) -> int | None:
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def _is_child(proc: str, pid: int, parent: int) -> bool:
    return _parent(proc, pid) == parent


def _is_shim(proc: str, pid: int, uid: int) -> bool:
    return _shim_options(proc, pid, uid) is not None


def find_shims(container_id: str, namespace: str = "moby", proc: str = "/proc", uid: int = 0) -> Shims:
    """{shim pid: [its child pids]} for every real shim (see the module's docstring) serving this container id in
    this namespace."""
    shims: Shims = {}
    for entry in os.listdir(proc):
        if entry.isdigit() and _serves(_shim_options(proc, entry, uid), container_id, namespace):
            shims[int(entry)] = _children(proc, entry)
    return shims


def lingering_shims(container_id: str, wait: float = 2.0, namespace: str = "moby", proc: str = "/proc",
                    uid: int = 0) -> Shims:
    """find_shims, but a shim with no process under it is given `wait` seconds to end first: Docker deletes a task
    (and its shim exits) just before it records the container stopped, so a shim seen right then is on its way out,
    not a copy."""
    deadline = time.monotonic() + wait
    shims = find_shims(container_id, namespace, proc, uid)
    while shims and not any(shims.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        shims = find_shims(container_id, namespace, proc, uid)
    return shims


def _kill_if(pid: int, still: Callable[[], bool], kill: Callable[[int, int], None]) -> None:
    """SIGKILL pid if `still()` says it is still the process found: pinned by a pidfd while that is checked (where
    the system has them), so that a PID reused since the scan is never signalled."""
    opener = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if opener is None or send is None or kill is not os.kill:
        if still():
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    try:
        fd = opener(pid)
    except OSError:  # gone already
        return
    try:
        if still():
            try:
                send(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        os.close(fd)


def stop_shims(shims: Shims, wait: float = 5.0, kill: Callable[[int, int], None] = os.kill, proc: str = "/proc",
               uid: int = 0) -> list[int]:
    """SIGKILL the shims' processes (those still their children), then the shims (those still real shims); returns
    the pids still alive after `wait` seconds."""
    pids = [child for children in shims.values() for child in children] + list(shims)
    for shim, children in shims.items():
        for child in children:
            _kill_if(child, functools.partial(_is_child, proc, child, shim), kill)
    for shim in shims:
        _kill_if(shim, functools.partial(_is_shim, proc, shim, uid), kill)
    deadline = time.monotonic() + wait
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if procs.alive(pid)]
    return alive
