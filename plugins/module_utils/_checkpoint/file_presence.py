# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Whether a file a checkpoint's processes had open (a path inside the container) is there now for a restore of that
checkpoint into the container: through the container's own root when it runs, else through what Docker would mount
for it (its volumes and bind mounts, the hosts/hostname/resolv.conf files, the overlay2 layers of its root, upper
first, honouring overlayfs' whiteouts and opaque directories)."""

from __future__ import annotations

import os
import stat
from typing import Any, Mapping, Optional

DOCKER_FILES = {"/etc/hosts": "HostsPath", "/etc/hostname": "HostnamePath", "/etc/resolv.conf": "ResolvConfPath"}
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


class Presence:
    """Looks up paths of one container; `exists` answers True, False, or None (cannot tell on this host)."""

    def __init__(self, inspect: Mapping[str, Any], proc_root: str = "/proc") -> None:
        state = inspect.get("State") or {}
        self._running_root = (os.path.join(proc_root, str(state["Pid"]), "root")
                              if state.get("Running") and state.get("Pid") else None)
        self._mounts = sorted(((item.get("Destination") or "", item.get("Source") or "")
                               for item in inspect.get("Mounts") or [] if item.get("Source")),
                              key=lambda pair: len(pair[0]), reverse=True)
        self._docker_files = {path: inspect[key] for path, key in DOCKER_FILES.items() if inspect.get(key)}
        driver = inspect.get("GraphDriver") or {}
        data = driver.get("Data") or {}
        self._layers = ([data["UpperDir"]] + [item for item in (data.get("LowerDir") or "").split(":") if item]
                        if driver.get("Name") == "overlay2" and data.get("UpperDir") else [])

    def exists(self, path: str) -> Optional[bool]:
        path = "/" + path.lstrip("/")
        if any(part in (".", "..") for part in path.split("/")):
            return None  # (CRIU records resolved paths: one that climbs is not looked up on the host)
        if self._running_root:
            return os.path.lexists(self._running_root + path)
        if path in self._docker_files:
            return os.path.lexists(self._docker_files[path])
        for destination, source in self._mounts:
            if path == destination or path.startswith(destination.rstrip("/") + "/"):
                return _inside(source, source + path[len(destination.rstrip("/")):])
        if not self._layers:
            return None  # (not overlay2: its layers are not read here)
        return in_layers(self._layers, path)


def _inside(source: str, candidate: str) -> Optional[bool]:
    """Whether `candidate` exists under the mount's `source` on the host; None when a link in the volume leads out
    of it (what it points at is the host's, not the container's)."""
    root = os.path.realpath(source)
    parent = os.path.realpath(os.path.dirname(candidate))
    if parent != root and not parent.startswith(root.rstrip("/") + "/"):
        return None
    return os.path.lexists(candidate)


def _is_whiteout(mode: int, rdev: int) -> bool:
    return stat.S_ISCHR(mode) and rdev == 0


def _is_opaque(directory: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(directory, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def in_layers(layers: list[str], path: str) -> bool:
    """Whether `path` exists in the overlay of `layers` (upper first): the first layer that has it, or hides it (a
    whiteout, a parent that is a whiteout or not a directory, an opaque parent), decides."""
    parts = [part for part in path.split("/") if part]
    for layer in layers:
        hidden_below = False
        for depth in range(1, len(parts)):
            parent = os.path.join(layer, *parts[:depth])
            try:
                info = os.lstat(parent)
            except OSError:
                break  # (this layer lacks the parent: it says nothing of the path)
            if _is_whiteout(info.st_mode, info.st_rdev) or not stat.S_ISDIR(info.st_mode):
                return False
            if _is_opaque(parent):
                hidden_below = True
        else:
            try:
                info = os.lstat(os.path.join(layer, *parts))
            except OSError:
                info = None
            if info is not None:
                return not _is_whiteout(info.st_mode, info.st_rdev)
        if hidden_below:
            return False
    return False
