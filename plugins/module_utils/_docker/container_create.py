# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Recreating a container on another host from a checkpoint manifest's container configuration.

The new container gets the same image, command, environment, labels, hostname, ports, mounts and networks, and the
restart policy `no` (the restore puts the recorded one back once the container runs from its checkpoint).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeAlias

    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, JSONDict

    ContainerConfig: TypeAlias = Mapping[str, Any]
    """A checkpoint manifest's `container` section (image, cmd, env, mounts, networks, ...)."""
    PathExists: TypeAlias = Callable[[str], bool]
    """Whether a path exists on this host, like os.path.exists."""

DEFAULT_NETWORKS = ("bridge", "host", "none", "default")


class CreateError(Exception):
    """The container cannot be recreated here; the message says what is missing."""


def _mount(mount: Mapping[str, Any]) -> JSONDict:
    kind = mount.get("type")
    target = mount.get("destination")
    if not target:
        raise CreateError(f"a mount in the manifest has no destination: {mount}")
    read_only = mount.get("rw") is False
    if kind == "volume":
        return {"Type": "volume", "Source": mount.get("name") or "", "Target": target, "ReadOnly": read_only}
    if kind == "bind":
        return {"Type": "bind", "Source": mount.get("source"), "Target": target, "ReadOnly": read_only}
    if kind == "tmpfs":
        return {"Type": "tmpfs", "Target": target}
    raise CreateError(f"mount type {kind!r} at {target} cannot be recreated")


def choose_image(api: DockerAPI, config: ContainerConfig) -> str | None:
    """The image to create from: the manifest's reference when it names the recorded image id here, else the id
    (a tag may point to another image on this host)."""
    image = config.get("image") or {}
    reference, image_id = image.get("reference"), image.get("id")
    if reference and image_id:
        try:
            if (api.get(f"/images/{reference}/json") or {}).get("Id") == image_id:
                return reference
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        return image_id
    return reference or image_id


def create_body(config: ContainerConfig, image_ref: str | None = None) -> JSONDict:
    """The Engine's `POST /containers/create` body for a manifest's `container` section."""
    image = (config.get("image") or {})
    reference = image_ref or image.get("reference") or image.get("id")
    if not reference:
        raise CreateError("the manifest names no image")
    body: JSONDict = {
        "Image": reference,
        "Cmd": config.get("cmd"),
        "Entrypoint": config.get("entrypoint"),
        "Env": list(config.get("env") or []),
        "Labels": dict(config.get("labels") or {}),
        "WorkingDir": config.get("working_dir") or "",
        "User": config.get("user") or "",
        "Hostname": config.get("hostname") or "",
        "Tty": bool(config.get("tty")),
        "OpenStdin": bool(config.get("open_stdin")),
        "ExposedPorts": {port: {} for port in config.get("exposed_ports") or []},
        "HostConfig": {
            "PortBindings": config.get("port_bindings") or {},
            "RestartPolicy": {"Name": "no"},
            "NetworkMode": config.get("network_mode") or "default",
            "Mounts": [_mount(mount) for mount in config.get("mounts") or []],
        },
    }
    networks = {name: value for name, value in (config.get("networks") or {}).items()
                if name not in DEFAULT_NETWORKS}
    if networks:
        body["NetworkingConfig"] = {"EndpointsConfig": {
            name: _endpoint(value or {}, str(config.get("id") or "")) for name, value in sorted(networks.items())}}
    return body


def _endpoint(value: Mapping[str, Any], old_id: str) -> dict[str, Any]:
    """One network's endpoint: the aliases (not the old container's short id), and the addresses the container was
    given on it (only well-formed ones: the manifest crossed hosts)."""
    endpoint: dict[str, Any] = {"Aliases": [alias for alias in value.get("aliases") or []
                                            if not old_id.startswith(alias)]}
    ipam = {}
    for key, field, version in (("ipv4_address", "IPv4Address", 4), ("ipv6_address", "IPv6Address", 6)):
        try:
            if value.get(key) and ipaddress.ip_address(str(value[key])).version == version:
                ipam[field] = str(value[key])
        except ValueError:
            continue
    if ipam:
        endpoint["IPAMConfig"] = ipam
    return endpoint


@dataclass(frozen=True)
class HostAccess:
    """What a container created from a manifest (an archive's, a stream's: input that is not trusted) may reach of
    the host: bind mounts of these sources (or below them), these network modes (host, container). Nothing else."""

    bind_mounts: tuple[str, ...] = ()
    network_modes: tuple[str, ...] = ()


def _outside_subnets(name: str, network: Mapping[str, Any], ipam: Mapping[str, str]) -> list[str]:
    """The container's fixed addresses on network `name` that none of its subnets here holds."""
    subnets = []
    for entry in (network.get("IPAM") or {}).get("Config") or []:
        try:
            subnets.append(ipaddress.ip_network(str((entry or {}).get("Subnet") or ""), strict=False))
        except ValueError:
            continue
    problems = []
    for address in ipam.values():
        found = ipaddress.ip_address(address)
        if not any(found.version == subnet.version and found in subnet for subnet in subnets):
            problems.append(f"address {address} is not in network {name}'s subnets on this host "
                            f"({', '.join(str(subnet) for subnet in subnets) or 'none'}): the container had it fixed "
                            "(--ip); make the network with the source's subnet")
    return problems


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("/")[0]))
    except ValueError:
        return ""


def _held_here(name: str, network: Mapping[str, Any], ipam: Mapping[str, str]) -> list[str]:
    """The container's fixed addresses on network `name` that a container of this host holds now (a running one:
    a stopped container holds none): Docker would refuse to start it with that address."""
    holders = {}
    for entry in (network.get("Containers") or {}).values():
        for key in ("IPv4Address", "IPv6Address"):
            held = _normal(str((entry or {}).get(key) or ""))
            if held:
                holders[held] = str((entry or {}).get("Name") or "another container")
    problems = []
    for address in ipam.values():
        holder = holders.get(_normal(address))
        if holder is not None:
            problems.append(f"address {address} on network {name} is held by container {holder} on this host: "
                            "the container had it fixed (--ip); stop that one or disconnect it from the network "
                            "first, or choose another host")
    return problems


def host_access_problems(config: ContainerConfig, allowed: HostAccess) -> list[str]:
    """The manifest's settings that reach into the host beyond `allowed`, as refusals naming the setting and the
    option that would allow it."""
    problems = []
    granted = [os.path.normpath(path) for path in allowed.bind_mounts if os.path.isabs(path)]
    for mount in config.get("mounts") or []:
        if (mount or {}).get("type") != "bind":
            continue
        source = str(mount.get("source") or "")
        normal = os.path.normpath(source) if os.path.isabs(source) else ""
        if not normal or not any(normal == path or normal.startswith(path.rstrip("/") + "/") for path in granted):
            problems.append(f"a bind mount of the host's {source or '(no source)'} at {mount.get('destination')} "
                            "(allow it with allow_bind_mounts)")
    mode = str(config.get("network_mode") or "default")
    kind = "container" if mode.startswith("container:") else mode
    if kind in ("host", "container") and kind not in allowed.network_modes:
        problems.append(f"network mode {mode} (allow it with allow_network_modes: [{kind}])")
    return problems


def missing_prerequisites(api: DockerAPI, config: ContainerConfig, path_exists: PathExists) -> list[str]:
    """What the host lacks to recreate the container (image, user networks, bind mount sources), as messages."""
    problems: list[str] = []
    image = config.get("image") or {}
    wanted = image.get("id") or image.get("reference")
    found: JSONDict | None = None
    for ref in [ref for ref in (image.get("id"), image.get("reference")) if ref]:
        try:
            found = api.get(f"/images/{ref}/json")
            break
        except Exception:  # pylint: disable=broad-exception-caught
            continue
    if found is None:
        problems.append(f"image {image.get('reference') or wanted} is not on this host: load it first "
                        "(`docker save` on the source, `docker load` here) or pull it")
    elif image.get("id") and found.get("Id") != image.get("id"):
        problems.append(f"image {image.get('reference')} here is {found.get('Id')}, the checkpoint was made from "
                        f"{image.get('id')}: load the same image")
    return problems + missing_host_parts(api, config, path_exists)


def missing_host_parts(api: DockerAPI, config: ContainerConfig, path_exists: PathExists) -> list[str]:
    """The user networks (with a subnet for each fixed address) and bind mount sources the container needs that this
    host lacks, as messages."""
    problems: list[str] = []
    for name, value in (config.get("networks") or {}).items():
        if name in DEFAULT_NETWORKS:
            continue
        try:
            network = api.get(f"/networks/{name}") or {}
        except Exception:  # pylint: disable=broad-exception-caught
            problems.append(f"network {name} does not exist on this host: create it first")
            continue
        ipam = _endpoint(value or {}, "").get("IPAMConfig") or {}
        problems += _outside_subnets(name, network, ipam)
        problems += _held_here(name, network, ipam)
    for mount in config.get("mounts") or []:
        if mount.get("type") == "bind" and not path_exists(mount.get("source") or ""):
            problems.append(f"bind mount source {mount.get('source')} does not exist on this host")
    return problems


def create(api: DockerAPI, name: str, config: ContainerConfig, path_exists: PathExists,
           annotations: Mapping[str, str] | None = None) -> str | None:
    """Create the container `name` (with OCI `annotations` of this module's own, never a manifest's); return its id.
    Raise CreateError naming what is missing."""
    problems = missing_prerequisites(api, config, path_exists)
    if problems:
        raise CreateError("; ".join(problems))
    body = create_body(config, choose_image(api, config))
    if annotations:
        body["HostConfig"]["Annotations"] = dict(annotations)
    old = str(config.get("name") or "").lstrip("/")
    if old and old != name:  # created under another name: it no longer answers to its old one on its networks
        for endpoint in ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).values():
            endpoint["Aliases"] = [alias for alias in endpoint.get("Aliases") or [] if alias != old]
    answer = api.post("/containers/create", body=body, name=name)
    return (answer or {}).get("Id")
