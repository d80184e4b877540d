# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A container's process tree as seen from the host, to prove that a restore really resumed it.

Recorded at checkpoint time: each process's PID inside the container (the last NSpid field) and its command line.
CRIU restores processes with the same in-container PIDs, and runc puts them in a new time namespace whose clock
offsets carry the checkpointed clocks on; a cold start (a restart policy, or `docker start` ignoring the checkpoint)
gives the host's time namespace and fresh PIDs. Both are checked.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class ProcessInfo(TypedDict):
    """A process as recorded at checkpoint time: its PID inside the container and its command line."""

    pid: int
    cmd: str


class Comparison(TypedDict):
    """compare()'s answer: whether the tree resumed (else why not), and how many recorded processes are back."""

    matched: int
    recorded: int
    missing: list[ProcessInfo]
    resumed: bool
    reason: str


@overload
def _read(path: str, binary: Literal[False] = False) -> str:
    """A /proc file as text."""


@overload
def _read(path: str, binary: Literal[True]) -> bytes:
    """A /proc file as bytes."""


def _read(path: str, binary: bool = False) -> str | bytes:
    with open(path, "rb" if binary else "r", encoding=None if binary else "utf-8") as handle:
        return handle.read()


def process_info(host_pid: int | str, proc: str = "/proc") -> ProcessInfo | None:
    """{'pid': in-container pid, 'cmd': command line} for a host PID, or None when it is gone."""
    try:
        status = _read(os.path.join(proc, str(host_pid), "status"))
        cmdline = _read(os.path.join(proc, str(host_pid), "cmdline"), binary=True)
    except OSError:
        return None
    ns_pid = None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ns_pid = int(line.split()[-1])
    if ns_pid is None:
        ns_pid = int(host_pid)
    cmd = " ".join(part.decode("utf-8", "replace") for part in cmdline.split(b"\0") if part)
    return {"pid": ns_pid, "cmd": cmd}


def host_pids(top: dict[str, Any]) -> list[int]:
    """Host PIDs from the Engine's `GET /containers/{id}/top` answer."""
    titles = top.get("Titles") or []
    if "PID" not in titles:
        return []
    index = titles.index("PID")
    return [int(row[index]) for row in top.get("Processes") or [] if len(row) > index and str(row[index]).isdigit()]


def process_tree(pids: Iterable[int | str], proc: str = "/proc") -> list[ProcessInfo]:
    """Processes for the given host PIDs, sorted by in-container PID (vanished ones left out)."""
    tree = [info for info in (process_info(pid, proc) for pid in pids) if info]
    return sorted(tree, key=lambda item: item["pid"])


def time_namespace(host_pid: int | str, proc: str = "/proc") -> str | None:
    """The time namespace link of a process ('time:[4026531834]'), or None when the kernel has none."""
    try:
        return os.readlink(os.path.join(proc, str(host_pid), "ns", "time"))
    except OSError:
        return None


def compare(recorded: Sequence[ProcessInfo], current: Iterable[ProcessInfo], init_time_ns: str | None = None,
            host_time_ns: str | None = None) -> Comparison:
    """How a restored process tree compares with the recorded one.

    Returns dict(resumed, matched, recorded, missing, reason). Resumed means: the container's first recorded process
    is back with the same in-container PID and command line, and (when the kernel has time namespaces) the
    container's init runs in its own time namespace rather than the host's, as after a CRIU restore. Short-lived
    processes (a `sleep` that ended since) may be missing without failing the check; they are counted.
    """
    now = {(item["pid"], item["cmd"]) for item in current}
    matched = [item for item in recorded if (item["pid"], item["cmd"]) in now]
    missing = [item for item in recorded if (item["pid"], item["cmd"]) not in now]
    result: Comparison = {"matched": len(matched), "recorded": len(recorded), "missing": missing, "resumed": False,
                          "reason": ""}
    if not recorded:
        result["reason"] = "no process tree was recorded at checkpoint time"
        return result
    first = recorded[0]
    if (first["pid"], first["cmd"]) not in now:
        result["reason"] = (f"the container's main process (pid {first['pid']} in the container, {first['cmd']!r}) "
                            "is not back")
        return result
    if init_time_ns and host_time_ns and init_time_ns == host_time_ns:
        result["reason"] = ("the container runs in the host's time namespace: it was started afresh, not restored "
                            "by CRIU")
        return result
    result["resumed"] = True
    return result


def rss_bytes(pids: Iterable[int | str], proc: str = "/proc") -> int:
    """Resident memory of these processes in bytes (VmRSS summed; vanished processes count 0)."""
    total = 0
    for pid in pids:
        try:
            status = _read(os.path.join(proc, str(pid), "status"))
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def dump_estimate(rss: int, slack: float = 0.1, floor: int = 16 * 1024 * 1024) -> int:
    """Bytes a dump of processes with this resident memory may need on disk."""
    return int(rss * (1 + slack)) + floor


def start_time(host_pid: int | str, proc: str = "/proc") -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, or None when there is none by that PID."""
    try:
        with open(os.path.join(proc, str(host_pid), "stat"), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 1:].split()  # the command name (in parentheses) may hold anything
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[0], int(fields[19])


def alive(host_pid: int | str | None, started: int | None = None, proc: str = "/proc") -> bool:
    """Whether the process runs (not gone, not a zombie) and, when `started` is given, is still the same process
    (same start time: the PID was not reused)."""
    if not host_pid:
        return False
    seen = start_time(host_pid, proc)
    if seen is None or seen[0] in ("Z", "X", "x"):
        return False
    return started is None or seen[1] == started


def wait_gone(host_pid: int | str | None, started: int | None, seconds: float, proc: str = "/proc",
              interval: float = 0.005) -> bool:
    """Wait until the process is gone or a zombie; True when it is (False after `seconds`)."""
    deadline = time.monotonic() + seconds
    while alive(host_pid, started, proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
