# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending side of a container's disk state (see disk_index.py): which trees travel (plan, before the container
is touched), then a walk of each tree once the checkpoint has stopped the container (collect), hashing every file.

The writable layer is read as overlay2 keeps it, its upper directory: added and changed files as they are, deleted
ones as overlayfs's whiteouts (character devices 0/0), replaced directories with their opaque mark - the same bytes
land in the new container's upper directory on the target, so `docker diff` shows the same there. A volume is read
from its data directory. Files are read after the dump, when no process of the container runs any more: what CRIU
recorded of the open files (their sizes) is what arrives.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Collection, Dict, Optional, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.disk_index import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_MEMBER,
    MAX_ENTRIES,
    Entry,
    Extents,
    Index,
    encode,
    keep_xattr,
    tree_key,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError

# A stream member's source: the bytes themselves (the index) or (path, extents or None for the whole file).
BlobSource = Tuple[str, Optional[Extents]]
VOLUME_CHOICES = ("all", "named", "none")
_ANONYMOUS = 64  # Docker names an anonymous volume with 64 hex digits


class DiskStateError(Exception):
    """The disk state cannot be read or carried; the message names the tree and the path."""


@dataclass
class Tree:
    """One tree to carry: the writable layer ('rootfs') or a volume, and the directory it is read from."""

    kind: str
    path: str
    name: str = ""
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class DiskState:
    """What collect() found: the index, the stream members (name -> {size, sha256}) and where each one's bytes are."""

    index: Index
    files: Dict[str, Dict[str, Any]]
    sources: Dict[str, Any]
    entries: int
    seconds: float
    # Per tree key and path, the identity of each file whose bytes were sent ((inode, size, mtime, ctime)) and its
    # entry: what a later pass compares with, to send only what changed.
    sent: Dict[Tuple[str, str], Tuple[Tuple[int, int, int, int], Entry]] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def size(self) -> int:
        return sum(info["size"] for info in self.files.values())

    def manifest_section(self, volumes: Dict[str, Dict[str, str]], rootfs: bool) -> Dict[str, Any]:
        """The stream manifest's `disk` section."""
        return {"files": dict(sorted(self.files.items())), "size": self.size, "rootfs": rootfs,
                "volumes": {name: {"labels": labels} for name, labels in sorted(volumes.items())}}


def is_anonymous(name: str) -> bool:
    return len(name) == _ANONYMOUS and all(c in "0123456789abcdef" for c in name)


def plan(api: DockerAPI, found: Mapping[str, Any], writable_layer: bool, volumes: str,
         together: Collection[str] = ()) -> list[Tree]:
    """The trees of this container that travel (writable_layer; volumes: all, named or none); OpError naming what
    cannot be carried, before anything is touched. `together`: the ids of the containers that stop with this one
    (a group moved as one) - a volume they share with it is not changed by them after the copy."""
    name = (found.get("Name") or "").lstrip("/")
    trees: list[Tree] = []
    if writable_layer:
        driver = found.get("GraphDriver") or {}
        upper = (driver.get("Data") or {}).get("UpperDir")
        if driver.get("Name") != "overlay2" or not upper:
            raise OpError(f"the writable layer of {name} cannot be carried: Docker keeps it with the "
                          f"{driver.get('Name') or 'unknown'} storage driver, and only overlay2's is read. Use "
                          "writable_layer=false to leave it behind")
        trees.append(Tree("rootfs", upper))
    for mount in found.get("Mounts") or []:
        if mount.get("Type") != "volume" or volumes == "none":
            continue
        vname = mount.get("Name") or ""
        if volumes == "named" and is_anonymous(vname):
            continue
        trees.append(_volume_tree(api, name, found.get("Id") or "", vname, together))
    return trees


def _volume_tree(api: DockerAPI, container: str, cid: str, vname: str, together: Collection[str] = ()) -> Tree:
    try:
        volume = api.get(f"/volumes/{vname}")
        users = api.get("/containers/json", all=1, filters=json.dumps({"volume": [vname]}))
    except DockerAPIError as exc:
        raise OpError(f"volume {vname} of {container} cannot be read: {exc}") from exc
    if volume.get("Driver") != "local" or volume.get("Options"):
        raise OpError(f"volume {vname} of {container} is not a plain local volume (driver {volume.get('Driver')}, "
                      f"options {volume.get('Options') or {}}): its data is not on this host's disk to carry. Use "
                      "volumes=none to recreate it empty, or move its data yourself")
    others = sorted((user.get("Names") or ["?"])[0].lstrip("/") for user in users or []
                    if user.get("Id") != cid and user.get("Id") not in together
                    and user.get("State") in ("running", "paused", "restarting"))
    if others:
        raise OpError(f"volume {vname} of {container} is also used by {', '.join(others)}, running on this host: its "
                      "data would change after it was copied. Stop them first, move them with it as one group "
                      "(consistent=true), or move with volumes=none")
    return Tree("volume", str(volume.get("Mountpoint") or ""), vname, dict(volume.get("Labels") or {}))


def tree_bytes(path: str) -> int:
    """The bytes a tree's files take (allocated, so a sparse file counts its data): what carrying it costs."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


def data_extents(fd: int, size: int) -> Extents | None:
    """The data extents of a sparse file ([offset, length], in order), or None when the file has no holes."""
    extents: Extents = []
    position = 0
    while position < size:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole is left
            raise
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        if hole > data:
            extents.append([data, hole - data])
        position = hole
    return None if extents == [[0, size]] else extents


def _xattrs(path: str, kind: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    return {name: base64.b64encode(os.getxattr(path, name, follow_symlinks=False)).decode("ascii")
            for name in sorted(names) if keep_xattr(name, kind)}


HOT_SECONDS = 1.0  # a file changed this recently is left to the final pass (its ctime may not move on a change)


def shared_writable_inodes(pids: list[int], proc: str = "/proc") -> set[int]:
    """The inode numbers of the files these processes map shared and writable (/proc/PID/maps, "rw-s"). A write
    through such a mapping to a page that is already dirty changes neither mtime nor ctime, so these files are
    never pre-copied: the final pass sends them whole. (Inode numbers alone: the maps show overlayfs's device, the
    walk the upper directory's; a coincidence only sends a file during the freeze.)"""
    inodes: set[int] = set()
    for pid in pids:
        try:
            with open(os.path.join(proc, str(pid), "maps"), encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    fields = line.split(None, 5)
                    if len(fields) == 6 and fields[1][1:2] == "w" and fields[1][3:4] == "s" and fields[4] != "0":
                        inodes.add(int(fields[4]))
        except (OSError, ValueError):
            continue
    return inodes


class _Walker:
    """precopy: the first pass, the container running - directories and the files not changed in the last second,
    nothing else; a file that changes or goes away while it is read is left out. previous: the state an earlier pass
    sent - a file with the same identity is marked `same` (its bytes are on the target already) instead of sent."""

    def __init__(self, precopy: bool = False, previous: DiskState | None = None,
                 mapped: set[int] | None = None) -> None:
        self.mapped = mapped or set()
        self.files: Dict[str, Dict[str, Any]] = {}
        self.sources: Dict[str, Any] = {}
        self.entries = 0
        self.precopy = precopy
        self.previous = previous.sent if previous else {}
        self.sent: Dict[Tuple[str, str], Tuple[Tuple[int, int, int, int], Entry]] = {}
        self.unchanged = 0
        self.now = time.time()

    def member(self, path: str, extents: Extents | None, size: int) -> str:
        name = f"disk/{len(self.sources)}"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for offset, length in extents if extents is not None else [[0, size]]:
                handle.seek(offset)
                left = length
                while left:
                    block = handle.read(min(left, 1024 * 1024))
                    if not block:
                        raise DiskStateError(f"{path} shrank while it was read")
                    digest.update(block)
                    left -= len(block)
        self.files[name] = {"size": sum(item[1] for item in extents) if extents is not None else size,
                            "sha256": digest.hexdigest()}
        self.sources[name] = (path, extents)
        return name

    def entry(self, tree: Tree, relative: str, full: str, links: dict[tuple[int, int], str]) -> Entry | None:
        info = os.lstat(full)
        mode = info.st_mode
        entry: Entry = {"path": relative}
        if stat.S_ISREG(mode) and info.st_nlink > 1:
            first = links.setdefault((info.st_dev, info.st_ino), relative)
            if first != relative:
                return None if self.precopy else {"path": relative, "type": "hardlink", "target": first}
        if stat.S_ISDIR(mode):
            entry["type"] = "dir"
        elif stat.S_ISREG(mode):
            identity = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            key = (tree_key(tree.kind, tree.name), relative)
            before = self.previous.get(key)
            if before and before[0] == identity:
                entry.update(type="file", size=info.st_size, same=True)
                if "extents" in before[1]:
                    entry["extents"] = before[1]["extents"]
                self.unchanged += 1
            elif self.precopy and (self.now - info.st_ctime_ns / 1e9 < HOT_SECONDS or info.st_ino in self.mapped):
                return None  # changing now, or written through a shared mapping: the final pass sends it
            else:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    sparse = info.st_blocks * 512 < info.st_size
                    extents = data_extents(fd, info.st_size) if sparse else None
                finally:
                    os.close(fd)
                entry.update(type="file", size=info.st_size, blob=self.member(full, extents, info.st_size))
                if extents is not None:
                    entry["extents"] = extents
                self.sent[key] = (identity, entry)
        elif self.precopy:
            return None  # only directories and files' bytes are worth sending ahead
        elif stat.S_ISLNK(mode):
            entry.update(type="symlink", target=os.readlink(full))
        elif stat.S_ISFIFO(mode):
            entry["type"] = "fifo"
        elif stat.S_ISCHR(mode) and info.st_rdev == 0 and tree.kind == "rootfs":
            entry["type"] = "whiteout"
        elif stat.S_ISSOCK(mode):
            return None  # a socket's file is made by whoever binds it (CRIU, on restore)
        else:
            raise DiskStateError(f"{relative} in {tree.kind if tree.kind == 'rootfs' else 'volume ' + tree.name} is a "
                                 "device node: device nodes are not carried (give the container the device on the "
                                 "target instead)")
        entry.update(mode=stat.S_IMODE(mode), uid=info.st_uid, gid=info.st_gid, mtime_ns=info.st_mtime_ns)
        xattrs = _xattrs(full, tree.kind)
        if xattrs:
            entry["xattrs"] = xattrs
        return entry

    def walk(self, tree: Tree) -> list[Entry]:
        """Every entry of the tree, each directory before what it holds."""
        if not os.path.isdir(tree.path) or os.path.islink(tree.path):
            raise DiskStateError(f"{tree.path} is not a directory")
        links: dict[tuple[int, int], str] = {}
        entries: list[Entry] = []
        pending = [(".", tree.path)]
        while pending:
            relative, full = pending.pop()
            try:
                entry = self.entry(tree, relative, full, links)
            except (OSError, DiskStateError):
                if not self.precopy or relative == ".":
                    raise
                continue  # gone or changed while the running container was read: the final pass has it
            if entry is None:
                continue
            entries.append(entry)
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise DiskStateError(f"more than {MAX_ENTRIES} files and directories: too many to carry")
            if entry["type"] == "dir":
                try:
                    with os.scandir(full) as listing:
                        names = sorted(item.name for item in listing)
                except OSError:
                    if not self.precopy:
                        raise
                    names = []
                for child in reversed(names):  # popped in name order
                    pending.append((child if relative == "." else f"{relative}/{child}", os.path.join(full, child)))
        return entries


def collect(trees: list[Tree], precopy: bool = False, previous: DiskState | None = None,
            mapped: set[int] | None = None) -> DiskState:
    """Walk every tree and hash every file: the index and the stream members. The final pass runs with the container
    stopped (`previous`: the pre-copy's state, whose unchanged files are not sent again); `precopy`, the first pass,
    while it runs (`mapped`: shared_writable_inodes of its processes, left out)."""
    begin = time.monotonic()
    walker = _Walker(precopy, previous, mapped)
    index: Index = {"format": FORMAT, "format_version": FORMAT_VERSION, "trees": []}
    for tree in trees:
        try:
            entries = walker.walk(tree)
        except OSError as exc:
            raise DiskStateError(f"reading {tree.path} failed: {exc}") from exc
        item: Dict[str, Any] = {"kind": tree.kind, "entries": entries}
        if tree.kind == "volume":
            item.update(name=tree.name, labels=tree.labels)
        index["trees"].append(item)
    data = encode(index)
    walker.files[INDEX_MEMBER] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    walker.sources[INDEX_MEMBER] = data
    return DiskState(index, walker.files, walker.sources, walker.entries, round(time.monotonic() - begin, 3),
                     walker.sent, walker.unchanged)
