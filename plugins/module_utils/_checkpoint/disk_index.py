# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The index of a container's disk state as it travels with its checkpoint (disk_walk.py makes it, disk_apply.py
applies it): the writable layer's raw overlay2 upper directory and the data of its volumes, one tree each.

Every entry of a tree says what the path is (dir, file, symlink, hardlink, fifo, whiteout), its owner, mode, mtime
and kept extended attributes; a file names the stream member that holds its bytes (only its data extents when it is
sparse); a hard link names an earlier file of the same tree. The index is untrusted input on the receiving host and
is validated here strictly, with bounds, before anything is written: every path is relative and its parent is an
earlier directory of the same tree (so nothing can be written through a symbolic link), every file's bytes are a
member listed, sized and hashed in the stream's manifest, used once - or, in the final pass of a two-pass transfer,
marked `same`: unchanged since the pre-copy, whose checked bytes the target holds already.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Dict, List

FORMAT = "fleet.checkpoint/disk"
FORMAT_VERSION = 1
INDEX_MEMBER = "disk/index.json"
MEMBER_PREFIX = "disk/"
TYPES = ("dir", "file", "symlink", "hardlink", "fifo", "whiteout")
MAX_INDEX_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 500_000
MAX_PATH = 4096
MAX_NAME = 255
MAX_XATTR_VALUE = 64 * 1024
MAX_XATTRS_PER_ENTRY = 64 * 1024  # bytes of names and values together
MAX_ID = 2 ** 32 - 2
# Extended attributes that mean something to the container: user attributes, file capabilities, POSIX ACLs and, in
# the writable layer only, overlayfs's opaque-directory mark. The other trusted.overlay.* attributes describe this
# host's layers (origin, redirect, impure) and security.selinux this host's policy: never carried.
KEPT_XATTRS = ("user.", "security.capability", "system.posix_acl_access", "system.posix_acl_default")
ROOTFS_ONLY_XATTRS = ("trusted.overlay.opaque",)
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}")
_MEMBER = re.compile(r"disk/[0-9]{1,9}")

# typing.Dict/List, not dict[...]: evaluated at import, on the managed host's Python.
Entry = Dict[str, Any]
Index = Dict[str, Any]
Extents = List[List[int]]


class DiskIndexError(ValueError):
    """A disk-state index that cannot be trusted; the message names the tree, the path and what is wrong."""


def keep_xattr(name: str, kind: str) -> bool:
    """Whether the extended attribute `name` travels with a tree of this kind ('rootfs' or 'volume')."""
    if name.startswith("user.overlay."):
        return False  # overlayfs's own marks under userxattr: this host's layers
    if name.startswith(KEPT_XATTRS):
        return True
    return kind == "rootfs" and name in ROOTFS_ONLY_XATTRS


def tree_key(kind: str, name: str = "") -> str:
    """A tree's key, the same in both passes: 'rootfs' or 'volume:NAME'."""
    return "rootfs" if kind == "rootfs" else f"volume:{name}"


def tree_label(tree: Mapping[str, Any]) -> str:
    """A tree in words: 'the writable layer' or 'volume NAME'."""
    return "the writable layer" if tree.get("kind") == "rootfs" else f"volume {tree.get('name')}"


def encode(index: Index) -> bytes:
    return json.dumps(index, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(data: bytes, members: Mapping[str, Mapping[str, Any]]) -> Index:
    """The validated index in `data`; `members` is the stream manifest's disk files ({name: {size, sha256}})."""
    if len(data) > MAX_INDEX_BYTES:
        raise DiskIndexError(f"the disk-state index is {len(data)} bytes, more than {MAX_INDEX_BYTES}")
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DiskIndexError(f"the disk-state index is not valid JSON: {type(exc).__name__}") from exc
    try:
        validate(index, members)
    except (RecursionError, TypeError) as exc:
        raise DiskIndexError(f"the disk-state index is malformed ({type(exc).__name__})") from exc
    return index


def _name_bytes(text: str, where: str) -> bytes:
    """A name as the filesystem gets it (os.fsencode); DiskIndexError for a string no file name can be."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise DiskIndexError(f"{where}: {text!r} cannot be a file name") from exc


def _int(entry: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise DiskIndexError(f"{where}: {key} must be an integer from {low} to {high}, not {value!r}")
    return value


def _check_path(path: object, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise DiskIndexError(f"{where}: an entry has no path")
    if path == ".":
        return path
    parts = path.split("/")
    if (path.startswith("/") or "\0" in path or len(_name_bytes(path, where)) > MAX_PATH
            or any(part in ("", ".", "..") or len(_name_bytes(part, where)) > MAX_NAME for part in parts)):
        raise DiskIndexError(f"{where}: {path!r} is not a safe relative path")
    return path


def xattrs_of(entry: Mapping[str, Any]) -> dict[str, bytes]:
    """An entry's extended attributes, decoded (validated already)."""
    return {name: base64.b64decode(value) for name, value in (entry.get("xattrs") or {}).items()}


def _check_xattrs(entry: Mapping[str, Any], kind: str, where: str) -> None:
    xattrs = entry.get("xattrs", {})
    if not isinstance(xattrs, dict):
        raise DiskIndexError(f"{where}: xattrs must be an object")
    total = 0
    for name, value in xattrs.items():
        if not keep_xattr(name, kind) or "\0" in name or len(_name_bytes(name, where)) > MAX_NAME:
            raise DiskIndexError(f"{where}: extended attribute {name!r} is not one that travels")
        try:
            size = len(base64.b64decode(value, validate=True)) if isinstance(value, str) else -1
        except (binascii.Error, ValueError):
            size = -1
        if not 0 <= size <= MAX_XATTR_VALUE:
            raise DiskIndexError(f"{where}: extended attribute {name} is not base64 of at most {MAX_XATTR_VALUE} "
                                 "bytes")
        total += len(name) + size
    if total > MAX_XATTRS_PER_ENTRY:
        raise DiskIndexError(f"{where}: extended attributes of {total} bytes, more than {MAX_XATTRS_PER_ENTRY}")


def _check_extents(entry: Mapping[str, Any], size: int, member_size: int | None, where: str) -> None:
    extents = entry.get("extents")
    if extents is None:
        if member_size is not None and member_size != size:
            raise DiskIndexError(f"{where}: {size} bytes, its member holds {member_size}")
        return
    if not isinstance(extents, list) or len(extents) > 1_000_000:
        raise DiskIndexError(f"{where}: extents must be a list of [offset, length]")
    end, total = 0, 0
    for item in extents:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in item)):
            raise DiskIndexError(f"{where}: extents must be a list of [offset, length]")
        offset, length = item
        if offset < end or length <= 0 or offset + length > size:
            raise DiskIndexError(f"{where}: extents overlap, are out of order or go past the file's size")
        end, total = offset + length, total + length
    if member_size is not None and total != member_size:
        raise DiskIndexError(f"{where}: its extents hold {total} bytes, its member {member_size}")


def _check_entry(entry: Any, tree: Mapping[str, Any], seen: dict[str, str], used: set[str],
                 members: Mapping[str, Mapping[str, Any]]) -> None:
    label = tree_label(tree)
    if not isinstance(entry, dict):
        raise DiskIndexError(f"{label}: an entry is not an object")
    path = _check_path(entry.get("path"), label)
    where = f"{label}: {path}"
    if path in seen:
        raise DiskIndexError(f"{where} appears twice")
    kind = entry.get("type")
    if kind not in TYPES:
        raise DiskIndexError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    if not seen:
        if path != "." or kind != "dir":
            raise DiskIndexError(f"{label}: the first entry must be the tree's own directory '.'")
    else:
        parent = path.rpartition("/")[0] or "."
        if seen.get(parent) != "dir":
            raise DiskIndexError(f"{where}: its parent {parent} is not an earlier directory of the tree")
    seen[path] = kind
    if kind == "hardlink":
        target = entry.get("target")
        if not isinstance(target, str) or seen.get(target) != "file":
            raise DiskIndexError(f"{where}: a hard link must name an earlier file of the tree")
        return
    _int(entry, "mode", where, 0, 0o7777)
    _int(entry, "uid", where, 0, MAX_ID)
    _int(entry, "gid", where, 0, MAX_ID)
    _int(entry, "mtime_ns", where, -(2 ** 62), 2 ** 63 - 1)
    _check_xattrs(entry, str(tree.get("kind")), where)
    if kind == "symlink":
        target = entry.get("target")
        if (not isinstance(target, str) or not target or "\0" in target
                or len(_name_bytes(target, where)) > MAX_PATH):
            raise DiskIndexError(f"{where}: a symbolic link needs a target of 1 to {MAX_PATH} bytes")
    elif kind == "file":
        size = _int(entry, "size", where, 0, 2 ** 63 - 1)
        if entry.get("same") is True and "blob" not in entry:
            _check_extents(entry, size, None, where)  # its bytes came with the pre-copy (checked when applied)
            return
        member = entry.get("blob")
        if not isinstance(member, str) or member not in members or not _MEMBER.fullmatch(member):
            raise DiskIndexError(f"{where}: its bytes are not a member of the stream ({member!r})")
        if member in used:
            raise DiskIndexError(f"{where}: member {member} is used twice")
        used.add(member)
        _check_extents(entry, size, members[member]["size"], where)


def validate(index: object, members: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise DiskIndexError unless `index` is a well-formed disk-state index whose files are the stream's `members`
    (each used once; the index itself is a member too)."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DiskIndexError(f"the disk-state index is not a {FORMAT} object")
    if index.get("format_version") != FORMAT_VERSION:
        raise DiskIndexError(f"disk-state index version {index.get('format_version')!r} is not supported "
                             f"(this collection reads {FORMAT_VERSION})")
    trees = index.get("trees")
    if not isinstance(trees, list):
        raise DiskIndexError("the disk-state index has no list of trees")
    names: set[str] = set()
    used: set[str] = set()
    count = 0
    for tree in trees:
        if not isinstance(tree, dict) or tree.get("kind") not in ("rootfs", "volume"):
            raise DiskIndexError("a disk-state tree is neither the writable layer nor a volume")
        name = "" if tree["kind"] == "rootfs" else tree.get("name")
        if tree["kind"] == "volume" and (not isinstance(name, str) or not VOLUME_NAME.fullmatch(name)):
            raise DiskIndexError(f"a volume name {name!r} is not a Docker volume name")
        if name in names:
            raise DiskIndexError(f"{tree_label(tree)} appears twice in the disk-state index")
        names.add(str(name))
        labels = tree.get("labels", {})
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            raise DiskIndexError(f"{tree_label(tree)}: labels must map strings to strings")
        entries = tree.get("entries")
        if not isinstance(entries, list) or not entries:
            raise DiskIndexError(f"{tree_label(tree)} has no entries")
        count += len(entries)
        if count > MAX_ENTRIES:
            raise DiskIndexError(f"the disk state holds more than {MAX_ENTRIES} entries")
        seen: dict[str, str] = {}
        for entry in entries:
            _check_entry(entry, tree, seen, used, members)
    unused = sorted(set(members) - used - {INDEX_MEMBER})
    if unused:
        raise DiskIndexError(f"stream members {', '.join(unused[:5])} belong to no file of the disk-state index")


def validate_members(disk: object) -> None:
    """A stream manifest's `disk` section: {'files': {member: {size, sha256}}, 'size': total, 'trees': [labels]}.
    The member names are checked here; sizes and hashes as the manifest's own files are (manifest.py)."""
    if not isinstance(disk, dict) or not isinstance(disk.get("files"), dict):
        raise DiskIndexError("manifest disk must be an object with files")
    files = disk["files"]
    if INDEX_MEMBER not in files:
        raise DiskIndexError(f"manifest disk files do not include {INDEX_MEMBER}")
    for name in files:
        if name != INDEX_MEMBER and not _MEMBER.fullmatch(name):
            raise DiskIndexError(f"manifest disk member {name!r} is not disk/<number>")
    volumes = disk.get("volumes", {})
    if not isinstance(volumes, dict) or not all(
            isinstance(name, str) and VOLUME_NAME.fullmatch(name) and isinstance(info, dict)
            and isinstance(info.get("labels", {}), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in info.get("labels", {}).items())
            for name, info in volumes.items()):
        raise DiskIndexError("manifest disk volumes must map Docker volume names to {labels: {string: string}}")
    if not isinstance(disk.get("rootfs", False), bool):
        raise DiskIndexError("manifest disk rootfs must be true or false")
