# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What every container's operation on one host shares (HostContext), and the result an operation returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

if TYPE_CHECKING:
    from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import ContainerdTask
    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI

# Aliases are evaluated when the module is imported: typing's names keep them importable on the managed host's
# Python 3.8 (annotations themselves are never evaluated, see `from __future__ import annotations`).
Result = Dict[str, Any]  # one container's result, as the module returns it in `results`
Inspect = Dict[str, Any]  # the Engine's answer to GET /containers/{id}/json
Run = Callable[[List[str]], Tuple[int, str, str]]  # runs a command: (rc, stdout, stderr)


def _no_commands(argv: list[str]) -> tuple[int, str, str]:
    raise RuntimeError(f"no command runner given: {argv[0]} cannot be run")


@dataclass(frozen=True)
class HostContext:
    """The host the operations run on: its Engine, where Docker keeps containers, the tools found on it."""

    api: DockerAPI
    root_dir: str  # Docker's root directory (DockerRootDir)
    check_mode: bool = False
    run: Run = _no_commands  # runs a command, returns (rc, stdout, stderr); never raises for a failing command
    versions: dict[str, str | None] = field(default_factory=dict)  # docker, kernel, criu: recorded with checkpoints
    containerd: ContainerdTask | None = None  # the fast dump path, when ctr is installed
    criu_log: str | None = None  # CRIU's log file from /etc/criu/runc.conf
    zstd: str | None = None  # the zstd command
    host_time_ns: str | None = None  # this host's time namespace (a restored container has its own)
    scratch: str | None = None  # local root-only scratch for plaintext (_host/scratch.py); None: the system's temp


def new_result(inspect: Inspect, checkpoint: str, created: bool = False) -> Result:
    """The result of one operation on one container, before anything is done (created: the operation created the
    container, or would in check mode)."""
    result: Result = {
        "container": (inspect.get("Name") or "").lstrip("/"),
        "id": inspect["Id"],
        "checkpoint": checkpoint,
        "changed": False,
        "action": "unchanged",
        "warnings": [],
    }
    if created:
        result["created"] = True
        result["changed"] = True
    return result
