# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint_info's work: the checkpoints of containers on this host, and whether this host can restore each
now (experimental mode, a usable CRIU not older than the one that made it, the container stopped; with details=true
also what the checkpoint holds, the files it needs present, its published ports free). Changes nothing."""

from __future__ import annotations

import base64
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import details as image_details
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import port_conflicts
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.file_presence import Presence
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.migration_preflight import cpu_problems
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import (
    validate_checkpoint_name,
    validate_container_ref,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import PreflightError, check_criu
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.store import is_managed, list_checkpoints
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import crit
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import at_least
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError

Run = Callable[[List[str]], Tuple[int, str, str]]
Host = Dict[str, Any]  # what this host offers for restores (the module's `host` return value)


class InfoError(Exception):
    """The module fails with this message; `details` are further return values (the host, when known)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def restorability(checkpoint: Mapping[str, Any], host: Host, running: bool) -> list[str]:
    """Reasons this host cannot restore the checkpoint now (empty list: restorable)."""
    reasons = []
    if not host["experimental"]:
        reasons.append("Docker's experimental mode is off (fleet.checkpoint.docker_experimental turns it on)")
    if not host["criu"]:
        reasons.append(f"CRIU is not usable: {host['criu_problem']}")
    made_with = ((checkpoint.get("metadata") or {}).get("versions") or {}).get("criu")
    try:
        older = bool(host["criu"] and made_with and not at_least(host["criu"], str(made_with)))
    except ValueError:
        older = False
    if older:
        reasons.append(f"made with CRIU {made_with}, this host has the older CRIU {host['criu']}")
    if running:
        reasons.append("the container is running (restore with force=true to stop it first)")
    return reasons


def needs(details: Mapping[str, Any], taken_ports: list[str], cpu: list[str] | None = None) -> list[str]:
    """What a restore of a checkpoint with these details would miss on this host: its files, its published ports,
    CPU features its processes may use."""
    reasons = list(cpu or [])
    for item in details.get("files") or []:
        if item.get("exists") is False:
            reasons.append(f"{item['path']} is missing here, and the checkpoint's processes use it ("
                           + ", ".join(f"pid {use}" for use in item.get("used_as") or []) + "): put it back, or "
                           "the restore fails")
    reasons += [f"the container publishes {port}, which is taken on this host: free it first" for port in taken_ports]
    return reasons


def cpu_needs(checkpoint: Mapping[str, Any], run: Run, criu_path: str | None) -> list[str]:
    """`criu cpuinfo check` of the CPU record the dump kept (cpuinfo.img) on this host: the problem, or nothing (also
    when the checkpoint has no record, or this host no CRIU)."""
    record = os.path.join(checkpoint["path"], "cpuinfo.img")
    if not criu_path or not os.path.isfile(record):
        return []
    with open(record, "rb") as handle:
        return cpu_problems(run, criu_path, base64.b64encode(handle.read()).decode("ascii"))


def read_details(checkpoint: Mapping[str, Any], found: Mapping[str, Any], reader: crit.Reader | None,
                 reader_problem: str) -> dict[str, Any]:
    """details=true: what the checkpoint holds, each file with whether it is there for a restore now."""
    versions = (checkpoint.get("metadata") or {}).get("versions") or {}
    if reader is None:
        return {"problem": reader_problem, "versions": versions}
    try:
        reader.preload(image_details.image_files(checkpoint["path"]))
        details = image_details.read(checkpoint["path"], reader.entries, os.sysconf("SC_PAGE_SIZE"))
    except (crit.CritError, OSError, KeyError, TypeError, ValueError) as exc:
        return {"problem": f"the checkpoint's images cannot be read: {exc}", "versions": versions}
    presence = Presence(found)
    for item in details["files"]:
        # Not looked for: on a filesystem the kernel provides or the checkpoint carries (but a tmpfs bind-mounted in
        # from the host is the host's: looked for), or unlinked before the dump (CRIU restores it from its remap).
        external, remapped = item.pop("external_mount"), item.pop("remapped")
        provided = item["filesystem"] in image_details.NOT_ON_DISK and not external
        item["exists"] = None if provided or remapped else presence.exists(item["path"])
    details["versions"] = versions
    return details


def describe(checkpoint: Mapping[str, Any], host: Host, running: bool,
             details: Mapping[str, Any] | None = None, taken_ports: list[str] | None = None,
             cpu: list[str] | None = None) -> dict[str, Any]:
    metadata = checkpoint["metadata"]
    reasons = restorability(checkpoint, host, running)
    if details is not None:
        reasons += needs(details, taken_ports or [], cpu)
    described = {
        "name": checkpoint["name"],
        "path": checkpoint["path"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checkpoint["created"])),
        "size": checkpoint["size"],
        "managed": is_managed(metadata),
        "method": metadata.get("method"),
        "leave_running": metadata.get("leave_running"),
        "restart_policy": metadata.get("restart_policy"),
        "versions": metadata.get("versions") or {},
        "restorable": not reasons,
        "not_restorable_because": reasons,
    }
    if details is not None:
        described["details"] = dict(details)
    return described


def ports_taken(found: Mapping[str, Any], api: DockerAPI) -> list[str]:
    """The ports the stopped container publishes that something else holds on this host now."""
    if (found.get("State") or {}).get("Running"):
        return []
    try:
        holders = port_conflicts.sockets(_read_text)
        holders |= port_conflicts.published(api)
    except (OSError, DockerAPIError):
        return []
    wanted = port_conflicts.bindings({"port_bindings": (found.get("HostConfig") or {}).get("PortBindings") or {}})
    return [f"{address or '0.0.0.0'}:{port}/{proto}" for address, port, proto in port_conflicts.taken(wanted, holders)]


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def checkpoint_info(params: Mapping[str, Any], run: Run, criu_path: Optional[str]) -> dict[str, Any]:
    """The module's return values (containers, host); InfoError when it cannot answer."""
    if os.geteuid() != 0:
        raise InfoError("docker_checkpoint_info needs root on the managed host (Docker's checkpoint directories are "
                        "root-only): use become: true")
    try:
        if params["name"] is not None:
            validate_checkpoint_name(params["name"])
        refs = [params["container"]] if params["container"] is not None else params["containers"]
        for ref in refs or []:
            validate_container_ref(ref)
    except ValueError as exc:
        raise InfoError(str(exc)) from exc
    try:
        api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
        info = api.info()
    except (ValueError, DockerAPIError) as exc:
        raise InfoError(f"cannot use the Docker Engine: {exc}") from exc
    host: Host = {
        "experimental": bool(info.get("ExperimentalBuild")),
        "docker": info.get("ServerVersion"),
        "kernel": info.get("KernelVersion"),
        "root_dir": info.get("DockerRootDir") or "/var/lib/docker",
        "criu": None,
        "criu_problem": "",
    }
    try:
        host["criu"] = check_criu(run, criu_path)
    except PreflightError as exc:
        host["criu_problem"] = str(exc)
    inspects = _inspects(api, refs, host)
    reader, reader_problem = None, ""
    if params.get("details"):
        try:
            reader = crit.Reader(run)
        except crit.CritError as exc:
            reader_problem = str(exc)
    containers = []
    for found in inspects:
        running = bool((found.get("State") or {}).get("Running"))
        checkpoints = [item for item in list_checkpoints(host["root_dir"], found["Id"])
                       if params["name"] is None or item["name"] == params["name"]]
        if not checkpoints and not refs:
            continue
        ports = ports_taken(found, api) if params.get("details") else []  # (the container's: once, not per checkpoint)
        containers.append({
            "name": (found.get("Name") or "").lstrip("/"),
            "id": found["Id"],
            "running": running,
            "restart_policy": (found.get("HostConfig") or {}).get("RestartPolicy") or {"Name": "no"},
            "checkpoints": [describe(item, host, running, read_details(item, found, reader, reader_problem),
                                     ports, cpu_needs(item, run, criu_path if host["criu"] else None))
                            if params.get("details") else
                            describe(item, host, running) for item in checkpoints],
        })
    host.pop("criu_problem")
    return {"containers": containers, "host": host}


def _inspects(api: DockerAPI, refs: list[str] | None, host: Host) -> list[dict[str, Any]]:
    """The named containers' inspects (every container's when none is named)."""
    try:
        if not refs:
            return [api.get(f"/containers/{item['Id']}/json") for item in api.get("/containers/json", all="1") or []]
        inspects = []
        for ref in refs:
            try:
                inspects.append(api.get(f"/containers/{ref.lstrip('/')}/json"))
            except DockerAPIError as exc:
                if exc.status == 404:
                    raise InfoError(f"container {ref!r} not found on this host", host=host) from exc
                raise
        return inspects
    except DockerAPIError as exc:
        raise InfoError(f"cannot list containers: {exc}", host=host) from exc
