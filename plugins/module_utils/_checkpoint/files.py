# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Checkpoint archives: safe to unpack, checksummed, root-only.

A checkpoint holds a whole process's memory (secrets included) and an archive may come from elsewhere, so unpacking
refuses anything that could write outside the target or create something other than plain files and directories:
absolute paths, '..' components, symbolic and hard links, device files and FIFOs. Everything unpacked is root-only
(directories 0700, files 0600) whatever the archive says.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from collections.abc import Container, Mapping
from typing import Any, Dict

MANIFEST_NAME = "manifest.json"

# {relative path: {'size': int, 'sha256': str}}, as in a manifest's `files`. typing.Dict, not dict[...]: an alias is
# evaluated at import, on the managed host's Python, and dict cannot be subscripted before Python 3.9.
Inventory = Dict[str, Dict[str, Any]]


class ArchiveError(Exception):
    """The archive is unsafe or damaged; the message names the entry and what is wrong."""


def sha256_file(path: str, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_inventory(directory: str, skip: Container[str] = ()) -> Inventory:
    """{relative path: {'size', 'sha256'}} for every regular file under directory (sorted, '/' separators), but the
    relative paths in `skip`."""
    inventory: Inventory = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                raise ArchiveError(f"{os.path.join(root, name)} is a link: checkpoints hold only regular files")
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            relative = os.path.relpath(full, directory).replace(os.sep, "/")
            if relative in skip:
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                raise ArchiveError(f"{full} is not a regular file: checkpoints hold only regular files")
            inventory[relative] = {"size": os.path.getsize(full), "sha256": sha256_file(full)}
    return inventory


def check_member(member: tarfile.TarInfo) -> str:
    """Raise ArchiveError when a tar entry is not a plain file or directory with a safe relative path."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise ArchiveError(f"archive entry {name!r} has an absolute path")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive entry {name!r} climbs out of the checkpoint with '..'")
    if member.issym() or member.islnk():
        raise ArchiveError(f"archive entry {name!r} is a link (to {member.linkname!r}): checkpoints hold no links")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise ArchiveError(f"archive entry {name!r} is a device or FIFO: checkpoints hold only files")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"archive entry {name!r} is not a regular file or directory")
    if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
        # A few bytes that unpack into a file of any declared size: fleet.checkpoint never writes them.
        raise ArchiveError(f"archive entry {name!r} is a sparse entry: fleet.checkpoint archives hold none")
    return "/".join(parts)


def safe_extract(archive_path: str, destination: str) -> list[str]:
    """Unpack a (possibly compressed) tar into destination, refusing unsafe entries before writing anything.

    Returns the list of files written (relative paths). destination is created 0700 and must not exist yet.
    """
    if os.path.exists(destination):
        raise ArchiveError(f"{destination} already exists: refusing to unpack over it")
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            members = tar.getmembers()
            safe = [(member, check_member(member)) for member in members]
            os.makedirs(destination, mode=0o700)
            os.chmod(destination, 0o700)
            written: list[str] = []
            for member, relative in safe:
                if not relative:
                    continue
                target = os.path.join(destination, *relative.split("/"))
                if member.isdir():
                    os.makedirs(target, mode=0o700, exist_ok=True)
                    os.chmod(target, 0o700)
                    continue
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # not reached: check_member let only files and directories through
                    raise ArchiveError(f"{relative} cannot be read from the archive")
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    while True:
                        block = source.read(1024 * 1024)
                        if not block:
                            break
                        handle.write(block)
                written.append(relative)
            return written
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive_path} is not a readable tar archive (truncated or damaged?): {exc}") from exc


def verify_inventory(directory: str, expected: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Compare the files under directory with a manifest's inventory; return a list of problems (empty when equal)."""
    problems: list[str] = []
    actual = file_inventory(directory)
    for name, info in sorted(expected.items()):
        found = actual.get(name)
        if found is None:
            problems.append(f"{name} is missing")
        elif found["size"] != info["size"]:
            problems.append(f"{name} has {found['size']} bytes, the manifest says {info['size']} (truncated?)")
        elif found["sha256"] != info["sha256"]:
            problems.append(f"{name} does not match its sha256 (corrupted)")
    for name in sorted(set(actual) - set(expected)):
        if name != MANIFEST_NAME:
            problems.append(f"{name} is not in the manifest")
    return problems
