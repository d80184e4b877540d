# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Did the Docker daemon restart while we were working? (Its process, identified by PID and start time.)

A restore that fails because dockerd died and came back (its restart kills the containers it finds running, unless
live-restore is on) says nothing about the checkpoint: such a container is to be restored again, not sent to the
fallback. The daemon's identity is read once when the module starts and compared when something fails.
"""

from __future__ import annotations

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

DEFAULT_PIDFILE = "/var/run/docker.pid"


def daemon_identity(pidfile: str = DEFAULT_PIDFILE, proc: str = "/proc") -> tuple[int, int] | None:
    """(pid, start time in clock ticks since boot) of the process named by dockerd's PID file, or None if unknown."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    seen = procs.start_time(pid, proc)
    return (pid, seen[1]) if seen else None


class DaemonWatch:
    """`restarted()` is True when the daemon running now is not the one that ran when the watch was made."""

    def __init__(self, pidfile: str = DEFAULT_PIDFILE, proc: str = "/proc", enabled: bool = True) -> None:
        self.pidfile = pidfile
        self.proc = proc
        self.start = daemon_identity(pidfile, proc) if enabled else None

    def restarted(self) -> bool:
        if self.start is None:
            return False  # not a local daemon, or its PID file is elsewhere: no conclusion
        return daemon_identity(self.pidfile, self.proc) != self.start
