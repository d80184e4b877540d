# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Root-only files and directories on the host: JSON written atomically 0600, directories made 0700.

Everything fleet.checkpoint writes beside a checkpoint (metadata, markers, host manifests) may describe processes
whose memory holds secrets, so nothing it writes is readable by anyone but root.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Any


class LooseDirectory(OSError):
    """An existing directory that others may write into: what fleet.checkpoint would put there is not safe."""


def write_private_json(path: str, data: Any) -> None:
    """Write JSON atomically, root-only (0600). The temporary file is made new (O_EXCL, a random name), so a link
    planted beside `path` cannot redirect the write."""
    write_private(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_private(path: str, data: bytes) -> None:
    """Write bytes atomically, root-only (0600), as write_private_json does."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ensure_private_dir(path: str) -> bool:
    """A directory the user names (archive_dir, a manifest's, a transfer directory): created 0700 with its missing
    parents (True), or, when it exists, left with its mode - but refused (LooseDirectory) when users other than root
    may write into it without the sticky bit, or when it belongs to another user: they could replace or remove what
    is put there."""
    if not os.path.lexists(path):
        missing = []
        probe = path
        while probe and not os.path.lexists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        os.makedirs(path, mode=0o700, exist_ok=True)
        for made in missing:
            os.chmod(made, 0o700)  # makedirs' mode is subject to the umask
        return True
    problem = loose(path)
    if problem:
        raise LooseDirectory(problem)
    return False


def loose(path: str) -> str | None:
    """Why an existing directory is no place for root-only files (see ensure_private_dir); None when it is one, or
    does not exist (it would be made 0700)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid not in (0, os.geteuid()):
        return (f"{path} belongs to uid {info.st_uid}, not root: that user could replace what fleet.checkpoint puts "
                "there - use a directory that root owns")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        return (f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}) without the sticky bit: "
                "they could replace what fleet.checkpoint puts there - use a directory only root can write to")
    return None


def make_private_dir(path: str) -> None:
    """A directory of fleet.checkpoint's own (a container's checkpoints directory, /var/lib/fleet-checkpoint):
    created, or made, 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
