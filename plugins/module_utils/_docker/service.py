# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker.service through systemd: reload, restart, wait until the Engine is healthy, read its journal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, JSONDict

    RunCommand: TypeAlias = Callable[[list[str]], tuple[int, str, str]]
    """Runs argv and returns (rc, stdout, stderr), like AnsibleModule.run_command; may raise OSError."""

UNIT = "docker.service"


class DockerServiceError(Exception):
    """systemd could not reload or restart Docker, or the Engine did not come back in time."""


class DockerService:
    """Operations on docker.service; `run(argv)` returns (rc, stdout, stderr) like AnsibleModule.run_command."""

    since: float  # time.time() of the last restart(); unset before it

    def __init__(self, run: RunCommand, api: DockerAPI, timeout: float = 60) -> None:
        self.run = run
        self.api = api
        self.timeout = timeout

    def managed_by_systemd(self) -> bool:
        try:
            rc, out, _err = self.run(["systemctl", "show", "-p", "LoadState", "--value", UNIT])
        except OSError:
            return False
        return rc == 0 and out.strip() == "loaded"

    def unit_text(self) -> str | None:
        """`systemctl cat docker.service` (the unit and its drop-ins), or None without systemd."""
        try:
            rc, out, _err = self.run(["systemctl", "cat", UNIT])
        except OSError:
            return None
        return out if rc == 0 else None

    def reload(self) -> None:
        rc, out, err = self.run(["systemctl", "reload", UNIT])
        if rc != 0:
            raise DockerServiceError(f"systemctl reload {UNIT} failed: {(err or out).strip()}")

    def restart(self) -> None:
        # Restart=always with StartLimitBurst: clear earlier failures so that systemd does not refuse to start it.
        self.run(["systemctl", "reset-failed", UNIT])
        self.since = time.time()
        rc, out, err = self.run(["systemctl", "restart", UNIT])
        if rc != 0:
            raise DockerServiceError(f"systemctl restart {UNIT} failed: {(err or out).strip()}")

    def wait_for(self, predicate: Callable[[JSONDict], bool], what: str) -> JSONDict:
        """Poll /info until predicate(info) holds; return info. Raise DockerServiceError after the timeout."""
        deadline = time.monotonic() + self.timeout
        last_error: DockerAPIError | None = None
        while True:
            try:
                info = self.api.info()
                if predicate(info):
                    return info
                last_error = None
            except DockerAPIError as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise DockerServiceError(f"the Docker Engine did not become {what} within {self.timeout}s{detail}")
            time.sleep(0.5)

    def journal_excerpt(self, lines: int = 12) -> list[str]:
        """The daemon's own error lines since the last restart (or its last lines), for error messages."""
        since = getattr(self, "since", None)
        argv = ["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"]
        argv += ["--since", f"@{int(since) - 1}"] if since else ["-n", "200"]
        try:
            rc, out, _err = self.run(argv)
        except OSError:
            return []
        if rc != 0:
            return []
        all_lines = [line for line in out.splitlines() if line.strip()]
        errors = [line for line in all_lines if "level=error" in line or "level=fatal" in line or "failed" in line.lower()]
        return (errors or all_lines)[-lines:]
