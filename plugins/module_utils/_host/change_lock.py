# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One fleet.checkpoint change at a time per host: an exclusive lock on a root-only file.

Two docker_checkpoint calls changing the same host at once (two playbook runs, two AWX jobs) would interleave dumps,
restores and manifest writes. The second waits for the first, up to a timeout, then refuses naming the holder.
The lock is an flock: it is released when the process ends, even if it is killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Any, Literal

DEFAULT_PATH = "/var/lib/fleet-checkpoint/lock"


class LockTimeout(Exception):
    """Another run held the lock for longer than the timeout; the message names it."""


class HostLock:
    def __init__(self, path: str = DEFAULT_PATH, timeout: float = 300, what: str = "", interval: float = 0.5) -> None:
        self.path = path
        self.timeout = timeout
        self.what = what
        self.interval = interval
        self.fd: int | None = None  # the locked file while held
        self.waited = 0.0  # seconds spent waiting for another run

    def _holder(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.loads(handle.read() or "{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> HostLock:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() - started >= self.timeout:
                    holder = self._holder()
                    os.close(fd)
                    raise LockTimeout(
                        f"another fleet.checkpoint run holds {self.path} (pid {holder.get('pid', '?')}, "
                        f"{holder.get('what', 'unknown')}, since {holder.get('since', '?')}) and did not finish within "
                        f"{self.timeout}s: wait for it, or raise lock_timeout") from exc
                time.sleep(self.interval)
        self.waited = round(time.monotonic() - started, 3)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": self.what,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode("utf-8"))
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
