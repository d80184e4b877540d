# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One container as Docker sees it, for every operation: inspect it, wait for Docker to catch up with a stopping
dump, read and set its restart policy, say what a failed operation left changed, start it afresh."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Dict

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Inspect
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import task as containerd_task
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import (
    CreateError,
    HostAccess,
    create,
    host_access_problems,
    missing_prerequisites,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

Policy = Dict[str, Any]  # Docker's RestartPolicy: {"Name": ..., "MaximumRetryCount": ...}
NO_POLICY: Policy = {"Name": "no", "MaximumRetryCount": 0}


def policy(inspect: Inspect) -> Policy:
    """The container's restart policy, with Docker's empty name read as 'no'."""
    found = dict((inspect.get("HostConfig") or {}).get("RestartPolicy") or {})
    found.setdefault("Name", "no")
    if not found["Name"]:
        found["Name"] = "no"
    found.setdefault("MaximumRetryCount", 0)
    return found


def is_no(restart_policy: Policy | None) -> bool:
    return (restart_policy or {}).get("Name") in (None, "", "no")


def inspect(ctx: HostContext, ref: str) -> Inspect:
    """The container's inspect; OpError when no such container exists."""
    try:
        found: Inspect = ctx.api.get(f"/containers/{ref}/json")
    except DockerAPIError as exc:
        if exc.status == 404:
            raise OpError(f"container {ref!r} not found on this host: check the name "
                          "(`docker ps -a` lists the containers)") from exc
        raise
    return found


def remove_created(ctx: HostContext, container_id: str) -> bool:
    """Remove a container this run created (from a manifest) and could not use; whether it is gone."""
    try:
        ctx.api.delete(f"/containers/{container_id}", force=1)
        return True
    except DockerAPIError:
        return False


def refuse_host_access(ref: str, config: Mapping[str, Any], origin: str, allowed: HostAccess | None) -> None:
    """Raise OpError naming every setting of the manifest (from `origin`) that reaches into the host beyond
    `allowed`, before container `ref` is created from it."""
    refused = host_access_problems(config, allowed or HostAccess())
    if refused:
        raise OpError(f"container {ref} is not created from {origin}: its manifest asks for "
                      + "; ".join(refused) + ". Nothing was created.")


def create_from(ctx: HostContext, ref: str, config: Mapping[str, Any], origin: str,
                allowed: HostAccess | None = None, annotations: Mapping[str, str] | None = None) -> Inspect:
    """Create the container `ref` from a manifest's container configuration (from `origin`, in words) and return its
    inspect; in check mode, only check that it could be created, and return a stand-in inspect. The manifest is not
    trusted: settings that reach into the host beyond `allowed` (bind mounts, the host's or another container's
    network) are refused, each named."""
    refuse_host_access(ref, config, origin, allowed)
    if ctx.check_mode:
        problems = missing_prerequisites(ctx.api, config, os.path.exists)
        if problems:
            raise OpError(f"container {ref} cannot be created from {origin}: {'; '.join(problems)}")
        return {"Id": "0" * 64, "Name": f"/{ref}", "State": {}, "HostConfig": {}, "Image": None}
    try:
        create(ctx.api, ref, config, os.path.exists, annotations)
    except (CreateError, DockerAPIError) as exc:
        raise OpError(f"container {ref} cannot be created from {origin}: {exc}") from exc
    return inspect(ctx, ref)


def host_pids(ctx: HostContext, container_id: str) -> list[int]:
    """The host PIDs of the container's processes (Docker's top)."""
    return procs.host_pids(ctx.api.get(f"/containers/{container_id}/top") or {})


def set_policy(ctx: HostContext, container_id: str, restart_policy: Policy) -> None:
    ctx.api.post(f"/containers/{container_id}/update", body={"RestartPolicy": restart_policy})


def wait_state(ctx: HostContext, container_id: str, running: bool, seconds: float = 10.0) -> dict[str, Any]:
    """The container's State once its running flag is `running`, or after `seconds` whatever it is."""
    deadline = time.monotonic() + seconds
    while True:
        state: dict[str, Any] = inspect(ctx, container_id).get("State") or {}
        if bool(state.get("Running")) == running or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def settled(ctx: HostContext, found: Inspect) -> Inspect:
    """The container as Docker sees it once it has caught up with a stopping dump.

    Such a dump returns as soon as the container's processes are gone (as `docker checkpoint create` does), and
    Docker records the exit a moment later: it locks the container (an inspect then waits), deletes containerd's
    task, and records the container stopped. So when Docker says running but the main process is gone: while
    containerd still holds the task with that process, Docker has not begun, and is waited for; once the task is
    gone, one more inspect (which waits for Docker's lock) tells. The same for a container paused when it was
    dumped (a group's member, consistent=true): Docker says running and paused until it catches up. Anything else
    (a remote Engine, a container restarting or without a process, one whose process lives, paused or not) is
    taken as Docker says.
    """
    state = found.get("State") or {}
    pid = state.get("Pid")
    if (not state.get("Running") or state.get("Restarting") or not pid
            or getattr(ctx.api, "kind", None) != "unix" or procs.alive(pid)):
        return found
    if containerd_task.task_init_pid(found["Id"]) != pid:
        return inspect(ctx, found["Id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.02)
        found = inspect(ctx, found["Id"])
        now = found.get("State") or {}
        if not now.get("Running") or now.get("Pid") != pid:
            break
    return found


def is_running(ctx: HostContext, found: Inspect) -> bool:
    """Whether the container runs, once Docker has caught up with a stopping dump (see settled)."""
    return bool((settled(ctx, found).get("State") or {}).get("Running"))


def aftermath(ctx: HostContext, container_id: str, recorded: Policy) -> str:
    """What a failed operation left changed on the container, in words ('' when nothing)."""
    try:
        now = settled(ctx, inspect(ctx, container_id))
    except (OpError, DockerAPIError):
        return "The container's state could not be read afterwards: check it with `docker inspect`."
    notes = []
    if not (now.get("State") or {}).get("Running"):
        notes.append("The container is now stopped")
    current = policy(now)
    if current.get("Name") != recorded.get("Name"):
        notes.append(f"its restart policy is {current['Name']!r} (was {recorded['Name']!r})")
    return (", ".join(notes) + ".") if notes else ""


def cold_start(api: DockerAPI, ref: str, recorded: Policy | None) -> tuple[bool, str]:
    """Start a container afresh (its checkpoint could not be restored) and put its recorded restart policy back.

    Returns (ok, message). A container already running is left as it is.
    """
    try:
        found = api.get(f"/containers/{ref}/json")
        if not (found.get("State") or {}).get("Running"):
            api.post(f"/containers/{found['Id']}/start")
        if isinstance(recorded, dict) and not is_no(recorded) and policy(found).get("Name") != recorded.get("Name"):
            api.post(f"/containers/{found['Id']}/update", body={"RestartPolicy": recorded})
    except DockerAPIError as exc:
        return False, str(exc)
    return True, "started afresh"


def refuse_unmovable(found: dict[str, Any], name: str, mode: str, why: str) -> None:
    """A post-copy or pre-copy move takes a running container that Docker would not delete when the move ends it."""
    state = found.get("State") or {}
    if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
        raise OpError(f"container {name} is {state.get('Status', 'not running')}: a {mode} move needs a running "
                      "container")
    if (found.get("HostConfig") or {}).get("AutoRemove"):
        raise OpError(f"container {name} was started with --rm: Docker would delete it when the {why}")
