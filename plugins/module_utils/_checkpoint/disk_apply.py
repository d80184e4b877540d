# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The receiving side of a container's disk state (see disk_index.py): the volumes made before the container, then,
once the stream has arrived whole and checked, every tree built beside its place and swapped in.

A tree is built from nothing in a new root-only directory next to where it goes (the new container's overlay2 upper
directory, a volume's data directory), so that no entry of the index can reach outside it: every path's parent is a
directory this build made, a hard link points at a file this build made, a symbolic link is made but never followed.
The files' bytes are the stream's members, already checked against their sha256: a whole file is renamed into
place, a sparse one is written extent by extent so its holes stay holes. Owners, modes, extended attributes and times
are set last (a chown clears set-id bits and file capabilities), directories deepest first. Then the directory is
swapped in, while the container is created and not started (its overlay is not mounted).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Mapping
from typing import Any, Dict, Set, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Inspect
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.disk_index import (
    Entry,
    tree_key,
    tree_label,
    xattrs_of,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

BUILDING = ".fleet-incoming"
PRECOPY = ".fleet-precopy"
OLD = ".fleet-replaced"


class DiskApplyError(Exception):
    """The disk state could not be put in place; the message names the tree and what failed."""


def make_volumes(ctx: HostContext, volumes: Mapping[str, Mapping[str, Any]], made: list[str]) -> None:
    """Create the carried volumes (before the container that mounts them, so that Docker does not fill them from the
    image); refuse one that exists here already. Appends each one made to `made` (removed again on failure)."""
    for name, info in volumes.items():
        try:
            ctx.api.get(f"/volumes/{name}")
        except DockerAPIError as exc:
            if exc.status != 404:
                raise DiskApplyError(f"volume {name} cannot be looked up here: {exc}") from exc
        else:
            raise DiskApplyError(f"volume {name} already exists on this host: the data that came with the checkpoint "
                                 "would replace its own. Remove or rename it here, or send with volumes=none")
        try:
            ctx.api.post("/volumes/create", body={"Name": name, "Driver": "local",
                                                  "Labels": dict(info.get("labels") or {})})
        except DockerAPIError as exc:
            raise DiskApplyError(f"volume {name} cannot be created here: {exc}") from exc
        made.append(name)


def drop_volumes(ctx: HostContext, made: list[str]) -> list[str]:
    """Remove the volumes make_volumes made (the receive failed); the names removed."""
    dropped = []
    for name in list(made):
        try:
            ctx.api.delete(f"/volumes/{name}", force=1)
        except DockerAPIError:
            continue
        made.remove(name)
        dropped.append(name)
    return dropped


def _is_mounted(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            return any(line.split()[4] == path for line in handle if len(line.split()) > 4)
    except OSError:
        return False


def destinations(ctx: HostContext, found: Inspect, index: Mapping[str, Any],
                 volumes: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], str]]:
    """Each tree of the index with the directory it replaces; DiskApplyError when one has no place here. `volumes`:
    the volumes this receive made (no other volume of the host is ever written)."""
    driver = found.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    places = []
    for tree in index["trees"]:
        if tree["kind"] == "rootfs":
            if driver.get("Name") != "overlay2" or not data.get("UpperDir"):
                raise DiskApplyError(f"the writable layer cannot be applied: Docker here keeps containers with the "
                                     f"{driver.get('Name') or 'unknown'} storage driver, not overlay2")
            if data.get("MergedDir") and _is_mounted(data["MergedDir"]):
                raise DiskApplyError("the writable layer cannot be applied: the container's filesystem is mounted "
                                     "(it was started)")
            places.append((tree, data["UpperDir"]))
            continue
        if tree["name"] not in volumes:
            raise DiskApplyError(f"{tree_label(tree)} is in the disk-state index but was not made for it here (only "
                                 "volumes the manifest named, made by this receive, are filled)")
        try:
            mountpoint = ctx.api.get(f"/volumes/{tree['name']}").get("Mountpoint")
        except DockerAPIError as exc:
            raise DiskApplyError(f"{tree_label(tree)} is not here: {exc}") from exc
        places.append((tree, mountpoint))
    missing = sorted(set(volumes) - {tree.get("name") for tree in index["trees"]})
    if missing:
        raise DiskApplyError(f"volumes {', '.join(missing)} were made for the disk state but are not in its index")
    for tree, place in places:
        if not place or not os.path.isdir(place) or os.path.islink(place):
            raise DiskApplyError(f"{tree_label(tree)}: {place!r} is not a directory here")
    return places


def _place_file(entry: Entry, blob: str, full: str) -> None:
    extents = entry.get("extents")
    if extents is None:
        try:
            os.rename(blob, full)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        extents = [[0, entry["size"]]] if entry["size"] else []
    out = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with open(blob, "rb") as source:
            for offset, length in extents:
                os.lseek(out, offset, os.SEEK_SET)
                left = length
                while left:
                    block = source.read(min(left, 1024 * 1024))
                    if not block:
                        raise DiskApplyError(f"{blob} ended early")
                    view = memoryview(block)
                    while view:
                        view = view[os.write(out, view):]
                    left -= len(block)
        os.ftruncate(out, entry["size"])
    finally:
        os.close(out)
    os.unlink(blob)


def _set_metadata(entry: Entry, full: str) -> None:
    os.chown(full, entry["uid"], entry["gid"], follow_symlinks=False)
    if entry["type"] != "symlink":
        os.chmod(full, entry["mode"])
    for name, value in xattrs_of(entry).items():
        os.setxattr(full, name, value, follow_symlinks=False)
    os.utime(full, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)


def _at(root: str, path: str) -> str:
    """Where an index path (validated: relative, '/'-separated, or '.') lies under `root`."""
    return root if path == "." else os.path.join(root, *path.split("/"))


def _from_precopy(entry: Entry, prior: Mapping[str, Entry], prior_root: str | None, full: str) -> None:
    """Move a file marked `same` from the pre-copy's tree (`prior`: the files built there, whole): it must be there,
    with the same size and extents."""
    before = prior.get(entry["path"])
    if (prior_root is None or not before or before.get("type") != "file" or before.get("size") != entry["size"]
            or before.get("extents") != entry.get("extents")):
        raise DiskApplyError(f"{entry['path']} is marked unchanged since the pre-copy, but the pre-copy did not bring "
                             "it whole")
    os.rename(_at(prior_root, entry["path"]), full)


def build(entries: list[Entry], blobs: str, root: str, prior_root: str | None = None,
          prior: Mapping[str, Entry] | None = None, skip: set[str] | None = None,
          metadata: bool = True) -> list[Entry]:
    """Make the tree of `entries` (validated by disk_index) at `root`, which must not exist; file bytes from the
    directory `blobs` (the stream's disk members), or for files marked `same`, from the pre-copy's tree at
    `prior_root` (`prior`: the files built there, by path). For a pre-copy's tree only: files whose member is in
    `skip` (arrived damaged - changed while they were read) are left out, and `metadata=False` (only its files' bytes
    are used). Returns the entries made."""
    os.mkdir(root, 0o700)
    skip = skip or set()
    made: list[Entry] = []
    for entry in entries:
        path, kind = entry["path"], entry["type"]
        full = _at(root, path)
        if path == ".":
            pass
        elif kind == "dir":
            os.mkdir(full, 0o700)
        elif kind == "file" and entry.get("same"):
            _from_precopy(entry, prior or {}, prior_root, full)
        elif kind == "file":
            if entry["blob"] in skip:
                continue
            _place_file(entry, os.path.join(blobs, entry["blob"].split("/", 1)[1]), full)
        elif kind == "hardlink":
            os.link(_at(root, entry["target"]), full, follow_symlinks=False)
            continue
        elif kind == "symlink":
            os.symlink(entry["target"], full)
        elif kind == "fifo":
            os.mkfifo(full, 0o600)
        elif kind == "whiteout":
            os.mknod(full, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        made.append(entry)
    if not metadata:
        return made
    for entry in [item for item in made if item["type"] != "dir"]:
        _set_metadata(entry, _at(root, entry["path"]))
    for entry in reversed([item for item in made if item["type"] == "dir"]):  # deepest first: their mtimes stay
        _set_metadata(entry, _at(root, entry["path"]))
    return made


def swap(new: str, place: str, aside: str | None = None) -> None:
    """Put the built tree `new` where `place` is (both in the same directory), and remove what was there: it goes
    aside (to `aside`, by default beside it with OLD appended) and is removed only once `new` is in place, or put back
    if that fails."""
    old = aside or place + OLD
    shutil.rmtree(old, ignore_errors=True)
    os.rename(place, old)
    try:
        os.rename(new, place)
    except OSError:
        os.rename(old, place)
        raise
    shutil.rmtree(old, ignore_errors=True)


# A pre-copy's trees on this host, by tree key: (the directory they were built in, their entries by path, the
# members that arrived damaged).
Staged = Dict[str, Tuple[str, Dict[str, Entry], Set[str]]]


def stage(ctx: HostContext, found: Inspect, index: Mapping[str, Any], volumes: Mapping[str, Any], blobs: str,
          damaged: set[str]) -> Staged:
    """Build the pre-copy's trees beside their places (the container created, its volumes made): the files' bytes the
    final pass will not send again."""
    staged: Staged = {}
    try:
        for tree, place in destinations(ctx, found, index, volumes):
            root = place + PRECOPY
            shutil.rmtree(root, ignore_errors=True)
            key = tree_key(tree["kind"], tree.get("name") or "")
            staged[key] = (root, {}, damaged)  # removed again if the build fails half-way
            made = build(tree["entries"], blobs, root, skip=damaged, metadata=False)
            staged[key] = (root, {entry["path"]: entry for entry in made}, damaged)
    except (OSError, DiskApplyError) as exc:
        drop_staged(staged)
        raise DiskApplyError(f"the pre-copy could not be put aside: {exc}") from exc
    return staged


def drop_staged(staged: Staged) -> None:
    for root, _entries, _damaged in staged.values():
        shutil.rmtree(root, ignore_errors=True)


def apply(ctx: HostContext, found: Inspect, index: Mapping[str, Any], volumes: Mapping[str, Any],
          blobs: str, staged: Staged | None = None) -> dict[str, Any]:
    """Build and swap in every tree of the index for the created container `found` (files marked `same` taken from
    the pre-copy's trees, `staged`); returns what was applied."""
    begin = time.monotonic()
    staged = staged or {}
    try:
        places = destinations(ctx, found, index, volumes)
        applied = []
        for tree, place in places:
            building = place + BUILDING
            shutil.rmtree(building, ignore_errors=True)  # a receive killed earlier left it
            prior_root, prior, _damaged = staged.get(tree_key(tree["kind"], tree.get("name") or ""),
                                                     (None, {}, set()))
            try:
                build(tree["entries"], blobs, building, prior_root, prior)
                swap(building, place)
            except (OSError, DiskApplyError) as exc:
                shutil.rmtree(building, ignore_errors=True)
                raise DiskApplyError(f"{tree_label(tree)} could not be put in place at {place}: {exc}") from exc
            applied.append(tree_label(tree))
    finally:
        drop_staged(staged)
    return {"applied": applied, "entries": sum(len(tree["entries"]) for tree in index["trees"]),
            "volumes": sorted(tree["name"] for tree in index["trees"] if tree["kind"] == "volume"),
            "seconds": round(time.monotonic() - begin, 3)}
