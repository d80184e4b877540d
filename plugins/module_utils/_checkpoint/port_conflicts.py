# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Published ports that a host cannot give a moving container: what its sockets hold and what Docker publishes.

A port is taken when a socket of this host listens on it (TCP) or is bound to it (UDP) - docker-proxy's among
them - or when a running container publishes it: with Docker's `userland-proxy: false` no socket shows, only
iptables rules. Addresses count: a binding to 127.0.0.1 does not collide with a listener on 10.0.0.5, while the
wildcard (0.0.0.0, ::, or no address) collides with every address of its port, whatever the family (a conservative
choice: a dual-stack listener on :: holds IPv4 too).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_WILDCARDS = ("", "0.0.0.0", "::")
_FILES = (("tcp", "/proc/net/tcp"), ("tcp", "/proc/net/tcp6"), ("udp", "/proc/net/udp"), ("udp", "/proc/net/udp6"))


def bindings(config: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """(host address, host port, protocol) of every port a container configuration publishes."""
    found = []
    for container_port, hosts in (config.get("port_bindings") or {}).items():
        proto = container_port.partition("/")[2] or "tcp"
        for binding in hosts or []:
            port = str((binding or {}).get("HostPort") or "")
            if port.isdigit() and int(port):
                found.append(((binding or {}).get("HostIp") or "", int(port), proto))
    return found


def proc_net_address(hexed: str, byteorder: str = sys.byteorder) -> str:
    """/proc/net's address (32-bit words printed in the host's byte order) as text; an IPv4 address mapped into
    IPv6 (a dual-stack socket's ::ffff:10.0.0.5) as the IPv4 address."""
    raw = bytes.fromhex(hexed)
    if byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def sockets(read: Callable[[str], str]) -> set[tuple[str, int, str]]:
    """(address, port, protocol) of every TCP socket listening and every UDP socket bound on this host."""
    found: set[tuple[str, int, str]] = set()
    for proto, path in _FILES:
        try:
            lines = read(path).splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or (proto == "tcp" and fields[3] != _LISTEN):
                continue
            address, _sep, port = fields[1].rpartition(":")
            try:
                found.add((proc_net_address(address), int(port, 16), proto))
            except ValueError:
                continue
    return found


def published(api: DockerAPI) -> set[tuple[str, int, str]]:
    """(address, port, protocol) that Docker publishes for the running containers here (whatever the proxy)."""
    found: set[tuple[str, int, str]] = set()
    for summary in api.get("/containers/json") or []:
        for port in summary.get("Ports") or []:
            if port.get("PublicPort"):
                found.add((port.get("IP") or "", int(port["PublicPort"]), port.get("Type") or "tcp"))
    return found


def collides(wanted: tuple[str, int, str], taken: tuple[str, int, str]) -> bool:
    """Whether binding `wanted` fails because `taken` holds its port (same protocol, overlapping address)."""
    if wanted[1:] != taken[1:]:
        return False
    return wanted[0] in _WILDCARDS or taken[0] in _WILDCARDS or wanted[0] == taken[0]


def taken(wanted: Iterable[tuple[str, int, str]], holders: set[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """The bindings of `wanted` that one of `holders` collides with, in order."""
    return [binding for binding in wanted if any(collides(binding, holder) for holder in holders)]
