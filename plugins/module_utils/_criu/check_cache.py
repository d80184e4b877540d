# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What `criu --version` and `criu check` said on this host, remembered until it reboots or CRIU changes.

Neither answer can change while the same kernel runs the same CRIU binary, and asking costs every checkpoint
~50 ms (two processes, `criu check` probing the kernel). The record is keyed by the boot id, the kernel release and
the binary's identity (device, inode, size, mtime: a reinstall or an upgrade makes a new one); it lives in /run (a
tmpfs, emptied at boot) in a directory only root can write. Only a passing check is recorded: a failing one is asked
again every time. A record that is not exactly ours (wrong owner, writable by others, not valid JSON, another key) is
ignored and replaced.
"""

from __future__ import annotations

import json
import os
import stat
from typing import TypedDict

DEFAULT_DIR = "/run/fleet-checkpoint"
FILE_NAME = "criu-check.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class CacheKey(TypedDict):
    """This boot, this kernel, this CRIU binary (by path and identity: a reinstall or an upgrade changes it)."""

    boot_id: str
    kernel: str
    criu: str
    device: int
    inode: int
    size: int
    mtime_ns: int


class CachedAnswers(TypedDict, total=False):
    """What the record says: CRIU's version and whether `criu check` passed ({} when there is no trusted record)."""

    version: str | None
    check: bool


def cache_key(criu_path: str, boot_id_path: str = BOOT_ID) -> CacheKey | None:
    """The identity of (this boot, this kernel, this CRIU binary), or None when it cannot be read."""
    try:
        with open(boot_id_path, encoding="ascii") as handle:
            boot_id = handle.read().strip()
        real = os.path.realpath(criu_path)
        info = os.stat(real)
    except OSError:
        return None
    if not boot_id:
        return None
    return {"boot_id": boot_id, "kernel": os.uname().release, "criu": real, "device": info.st_dev,
            "inode": info.st_ino, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _ours(info: os.stat_result, want_dir: bool) -> bool:
    kind = stat.S_ISDIR(info.st_mode) if want_dir else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def read(key: CacheKey | None, directory: str = DEFAULT_DIR) -> CachedAnswers:
    """The record for this key ({'version': ..., 'check': bool}), or {} when there is none we can trust."""
    if key is None:
        return {}
    path = os.path.join(directory, FILE_NAME)
    fd: int | None  # None once the file object owns (and closes) the descriptor
    try:
        if not _ours(os.lstat(directory), True):
            return {}
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        if not _ours(os.fstat(fd), False):
            return {}
        with os.fdopen(fd, encoding="utf-8") as handle:
            fd = None
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    finally:
        if fd is not None:
            os.close(fd)
    if not isinstance(record, dict) or record.get("key") != key:
        return {}
    return {"version": record.get("version"), "check": record.get("check") is True}


def write(key: CacheKey | None, version: str | None, check: bool, directory: str = DEFAULT_DIR) -> bool:
    """Record the answers (atomically, 0600 in a 0700 directory); False when that could not be done."""
    if key is None or not version:
        return False
    path = os.path.join(directory, FILE_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _ours(os.lstat(directory), True):
            return False
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "version": version, "check": bool(check)}, handle)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True
