# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The manifest of a checkpoint: what is needed to recreate its container elsewhere, and to trust its files.

Built from the Engine's container inspect data; validated strictly when read back (an archive may come from
anywhere), so that a malformed manifest is refused with a message naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Dict, cast

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.disk_index import (
    DiskIndexError,
    validate_members,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import validate_checkpoint_name

FORMAT = "fleet.checkpoint/manifest"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_METHODS = ("api", "containerd")

# A manifest: the JSON object built and validated below. typing.Dict, not dict[...]: an alias is evaluated at import,
# on the managed host's Python, and dict cannot be subscripted before Python 3.9.
Manifest = Dict[str, Any]


class ManifestError(ValueError):
    """A manifest that cannot be trusted; the message names the field."""


def container_config(inspect: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of `GET /containers/{id}/json` needed to recreate the container on another host."""
    config = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "id": inspect.get("Id"),
        "name": (inspect.get("Name") or "").lstrip("/"),
        "image": {"id": inspect.get("Image"), "reference": config.get("Image")},
        "cmd": config.get("Cmd"),
        "entrypoint": config.get("Entrypoint"),
        "env": list(config.get("Env") or []),
        "labels": dict(config.get("Labels") or {}),
        "working_dir": config.get("WorkingDir") or "",
        "user": config.get("User") or "",
        "hostname": config.get("Hostname") or "",
        "tty": bool(config.get("Tty")),
        "open_stdin": bool(config.get("OpenStdin")),
        "exposed_ports": sorted((config.get("ExposedPorts") or {}).keys()),
        "mounts": [
            {key: mount.get(src) for key, src in (("type", "Type"), ("name", "Name"), ("source", "Source"),
                                                  ("destination", "Destination"), ("rw", "RW"))}
            for mount in inspect.get("Mounts") or []
        ],
        "networks": {name: _endpoint(net or {}) for name, net in sorted(networks.items())},
        "network_mode": host.get("NetworkMode") or "default",
        "port_bindings": host.get("PortBindings") or {},
        "restart_policy": dict(host.get("RestartPolicy") or {"Name": "no"}),
    }


def _endpoint(net: Mapping[str, Any]) -> dict[str, Any]:
    """A container's place on one network: its aliases, and the addresses it was given (`--ip`, `--ip6`: a restore
    binds its TCP sockets back to them, so a recreated container must get them again)."""
    endpoint: dict[str, Any] = {"aliases": net.get("Aliases") or []}
    ipam = net.get("IPAMConfig") or {}
    for key, field in (("ipv4_address", "IPv4Address"), ("ipv6_address", "IPv6Address")):
        if ipam.get(field):
            endpoint[key] = ipam[field]
    return endpoint


def build(checkpoint: str, inspect: Mapping[str, Any], files: Mapping[str, Mapping[str, Any]],
          versions: Mapping[str, str | None], method: str, created: float) -> Manifest:
    """A manifest dict for checkpoint `checkpoint` of the inspected container."""
    validate_checkpoint_name(checkpoint)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, not {method!r}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint": checkpoint,
        "created": created,
        "method": method,
        "container": container_config(inspect),
        "versions": {key: versions.get(key) for key in ("criu", "docker", "kernel")},
        "files": dict(sorted(files.items())),
        "size": sum(info["size"] for info in files.values()),
    }


def _require(data: Mapping[str, Any], key: str, kind: type, where: str = "manifest") -> Any:
    if key not in data:
        raise ManifestError(f"{where} has no {key!r}")
    if not isinstance(data[key], kind):
        raise ManifestError(f"{where} field {key!r} must be {getattr(kind, '__name__', kind)}, not {type(data[key]).__name__}")
    return data[key]


def from_bytes(data: bytes, name: str = "manifest.json") -> Manifest:
    """The validated manifest in `data` (the JSON bytes of an archive's or a stream's first entry)."""
    try:
        return validate(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{name} is not valid JSON: {exc}") from exc


def validate(data: object) -> Manifest:
    """Return the manifest when it can be trusted; raise ManifestError naming the first bad field."""
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    if data.get("format") != FORMAT:
        raise ManifestError(f"manifest format is {data.get('format')!r}, not {FORMAT!r}: not a fleet.checkpoint archive")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"manifest format_version {data.get('format_version')!r} is not supported "
                            f"(this collection reads {FORMAT_VERSION})")
    try:
        validate_checkpoint_name(_require(data, "checkpoint", str))
    except ManifestError:
        raise
    except ValueError as exc:
        raise ManifestError(f"manifest field 'checkpoint': {exc}") from exc
    if _require(data, "method", str) not in _METHODS:
        raise ManifestError(f"manifest field 'method' must be one of {', '.join(_METHODS)}")
    container = _require(data, "container", dict)
    _require(container, "image", dict, "manifest container")
    _require(container, "restart_policy", dict, "manifest container")
    _require(data, "versions", dict)
    files = _require(data, "files", dict)
    phase = data.get("phase", "checkpoint")
    if phase not in ("checkpoint", "precopy", "memory"):
        raise ManifestError(f"manifest phase {phase!r} is not checkpoint, precopy or memory")
    if phase == "precopy" and ("disk" not in data or files):
        raise ManifestError("a pre-copy manifest carries disk state and no checkpoint files")
    if phase == "memory" and ("disk" in data or not _count(data.get("round"), 1)):
        raise ManifestError("a memory round's manifest carries no disk state and a round number from 1")
    if "memory_rounds" in data and (phase != "checkpoint" or not _count(data["memory_rounds"], 0)):
        raise ManifestError(f"manifest memory_rounds must be a number of rounds (0 to {MAX_ROUNDS}) in a "
                            "checkpoint's manifest")
    if (phase == "memory" or data.get("memory_rounds")) and ("disk" in data or data.get("lazy")):
        raise ManifestError("memory rounds come without disk state and without post-copy")
    if not files and phase != "precopy":
        raise ManifestError("manifest lists no files")
    total = _check_files(files, "manifest")
    if data.get("size") != total:
        raise ManifestError(f"manifest size {data.get('size')!r} is not the sum of its files ({total})")
    if "disk" in data:
        _validate_disk(data["disk"])
    _validate_policy(container["restart_policy"], "manifest container restart_policy")
    for key, value in data["versions"].items():
        if value is not None and not isinstance(value, str):
            raise ManifestError(f"manifest version {key!r} must be a string")
    if "metadata" in data:
        _validate_metadata(data["metadata"])
    if "volumes_from" in data:
        _validate_volumes_from(data["volumes_from"])
    return data


_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")  # Docker's rule for a volume's name


def _validate_volumes_from(value: object) -> None:
    """A group's member names the volumes it mounts that another member carries ({volume: that member's name})."""
    if not isinstance(value, dict) or not all(
            isinstance(volume, str) and _VOLUME_NAME.match(volume) and isinstance(member, str) and member
            for volume, member in value.items()):
        raise ManifestError("manifest volumes_from must map volume names to the names of the group's members that "
                            "carry them")


MAX_ROUNDS = 30  # as send_to.memory_rounds allows


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= MAX_ROUNDS


def _check_files(files: Mapping[str, Any], where: str) -> int:
    """Check a {relative path: {size, sha256}} map; return the sum of its sizes."""
    total = 0
    for name, info in files.items():
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts or "\\" in name:
            raise ManifestError(f"{where} file name {name!r} is not a safe relative path")
        if not isinstance(info, dict):
            raise ManifestError(f"{where} entry for {name!r} is not an object")
        size = info.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where} size of {name!r} must be a non-negative integer")
        if not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"]):
            raise ManifestError(f"{where} sha256 of {name!r} must be 64 lowercase hex digits")
        total += size
    return total


def _validate_disk(disk: object) -> None:
    """The disk state that travels with a streamed checkpoint (disk_index.py): its members, sized and hashed."""
    try:
        validate_members(disk)
    except DiskIndexError as exc:
        raise ManifestError(str(exc)) from exc
    section = cast(Dict[str, Any], disk)  # validate_members checked that it is an object
    total = _check_files(section["files"], "manifest disk")
    if section.get("size") != total:
        raise ManifestError(f"manifest disk size {section.get('size')!r} is not the sum of its files ({total})")


def _validate_policy(policy: Mapping[str, Any], where: str) -> None:
    if not isinstance(policy.get("Name", "no"), str) or not isinstance(policy.get("MaximumRetryCount", 0), int):
        raise ManifestError(f"{where} must have a string Name and an integer MaximumRetryCount")


def _validate_metadata(metadata: object) -> None:
    """The checkpoint metadata carried in an archive: only well-formed values reach the host."""
    if not isinstance(metadata, dict):
        raise ManifestError("manifest metadata must be an object")
    if "restart_policy" in metadata:
        if not isinstance(metadata["restart_policy"], dict):
            raise ManifestError("manifest metadata restart_policy must be an object")
        _validate_policy(metadata["restart_policy"], "manifest metadata restart_policy")
    processes = metadata.get("processes", [])
    if not isinstance(processes, list) or not all(
            isinstance(item, dict) and isinstance(item.get("pid"), int) and not isinstance(item.get("pid"), bool)
            and isinstance(item.get("cmd"), str) for item in processes):
        raise ManifestError("manifest metadata processes must be a list of {pid: integer, cmd: string}")
    created = metadata.get("created", 0)
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise ManifestError("manifest metadata created must be a number (seconds since the epoch)")
    versions = metadata.get("versions", {})
    if not isinstance(versions, dict) or not all(value is None or isinstance(value, str) for value in versions.values()):
        raise ManifestError("manifest metadata versions must map names to version strings")
