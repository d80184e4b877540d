# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The receiving end of a streamed checkpoint (see stream.py for the sending end and the wire format): the root-only
FIFO the relay on this host writes into, and the unpacking of the tar that arrives through it - every entry checked,
every file hashed as it lands, so that the checkpoint is checked against its manifest when the last byte arrives.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import tarfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    MANIFEST_NAME,
    ArchiveError,
    check_member,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import Manifest, from_bytes
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.stream import (
    BLOCK,
    CHUNK,
    ZERO_BLOCK,
    StreamError,
    members,
    padding,
    write_all,
)

if TYPE_CHECKING:
    from _typeshed import SupportsRead

_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named in the fcntl module only from Python 3.10


class FifoReader:
    """The receiving end: a root-only FIFO at `path`, readable like a file once a sender has connected."""

    def __init__(self, path: str, idle_timeout: float = 120) -> None:
        self.path = path
        self.idle_timeout = idle_timeout
        if os.path.lexists(path):
            os.unlink(path)  # a receiver killed earlier left it
        os.mkfifo(path, 0o600)
        self.fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.inode = os.fstat(self.fd).st_ino
        try:
            fcntl.fcntl(self.fd, _F_SETPIPE_SZ, CHUNK)  # fewer wake-ups for a stream of many MiB
        except OSError:
            pass
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)
        self.count = 0

    def wait(self, seconds: float) -> None:
        """Wait for the sender's first bytes; then the FIFO's name is removed (no second sender).
        Raises StreamError when nothing came within `seconds` or the FIFO was removed (the sender gave up)."""
        deadline = time.monotonic() + seconds
        while not self.poll.poll(200):
            try:
                if os.stat(self.path).st_ino != self.inode:
                    raise FileNotFoundError
            except FileNotFoundError as exc:
                raise StreamError(f"{self.path} was removed while waiting: the sending side gave up") from exc
            if time.monotonic() > deadline:
                raise StreamError(f"nothing arrived at {self.path} within {seconds}s (receive_timeout): was the "
                                  "checkpoint sent, with send_to naming this host and directory?")
        self._unlink()

    def _unlink(self) -> None:
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def read(self, size: int | None = -1) -> bytes:
        if self.fd is None:
            raise ValueError("read from a closed FifoReader")
        size = CHUNK if size is None or size < 0 else size
        while True:
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                if not self.poll.poll(self.idle_timeout * 1000):
                    raise StreamError(f"the stream stalled: nothing arrived for {self.idle_timeout}s") from None
                continue
            self.count += len(data)
            return data

    def close(self) -> None:
        self._unlink()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_exact(fileobj: SupportsRead[bytes], size: int) -> bytes:
    chunks: list[bytes]
    chunks, left = [], size
    while left:
        data = fileobj.read(min(left, CHUNK))
        if not data:
            raise ArchiveError("the stream is not a complete tar (the sender stopped or the connection broke?): it "
                               f"ended {left} bytes short")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header ("<length> <key>=<value>\\n" each); ValueError when malformed."""
    records: dict[str, str]
    records, at = {}, 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space])
        if length <= space - at + 1 or at + length > len(data) or data[at + length - 1:at + length] != b"\n":
            raise ValueError(f"a record at byte {at} has a bad length")
        key, sep, value = data[space + 1:at + length - 1].partition(b"=")
        if not sep:
            raise ValueError(f"a record at byte {at} has no '='")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records


def _next_member(fileobj: SupportsRead[bytes]) -> tarfile.TarInfo | None:
    """The next entry's TarInfo (a PAX extended header applied to it), or None at the end of the archive."""
    pax: dict[str, str] = {}
    while True:
        block = _read_exact(fileobj, BLOCK)
        if block == ZERO_BLOCK:
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise ArchiveError(f"the stream holds a damaged tar header: {exc}") from exc
        if info.type != tarfile.XHDTYPE:
            break
        if info.size > 1024 * 1024:
            raise ArchiveError(f"a PAX header of {info.size} bytes: not a checkpoint stream")
        try:
            pax = _pax_records(_read_exact(fileobj, info.size + padding(info.size))[:info.size])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"the stream holds a damaged PAX header: {exc}") from exc
    if "path" in pax:
        info.name = pax["path"]
    if "size" in pax:
        try:
            info.size = int(pax["size"])
        except ValueError as exc:
            raise ArchiveError(f"the stream holds a damaged PAX size {pax['size']!r}") from exc
    return info


def _read_manifest(fileobj: SupportsRead[bytes]) -> Manifest:
    first = _next_member(fileobj)
    if first is None or check_member(first) != MANIFEST_NAME or not first.isfile():
        raise ArchiveError(f"the stream does not start with {MANIFEST_NAME}: not a fleet.checkpoint stream")
    if first.size > 16 * 1024 * 1024:
        raise ArchiveError(f"{MANIFEST_NAME} is {first.size} bytes: too large to be a manifest")
    data = _read_exact(fileobj, first.size + padding(first.size))[:first.size]
    return from_bytes(data, MANIFEST_NAME)


def _write_member(fileobj: SupportsRead[bytes], size: int, target: str) -> str:
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        while left:
            data = fileobj.read(min(left, CHUNK))
            if not data:
                raise ArchiveError(f"the stream is not a complete tar (the sender stopped or the connection broke?): "
                                   f"{os.path.basename(target)} ended {left} bytes short")
            digest.update(data)
            write_all(fd, data)
            left -= len(data)
    finally:
        os.close(fd)
    _read_exact(fileobj, padding(size))
    return digest.hexdigest()


def receive(fileobj: SupportsRead[bytes], destination: str | Callable[[Manifest], str],
            damaged: set[str] | None = None) -> Manifest:
    """Unpack a checkpoint stream into `destination` (created 0700; it must not exist), checking every entry and
    hashing every file as it arrives. `destination` may be a function of the manifest (the stream's first entry) that
    returns the path. Returns the validated manifest; raises ArchiveError, ManifestError or StreamError on anything
    unsafe, unlisted, missing, truncated or corrupted (what was written is left for the caller to remove).
    With `damaged` (a pre-copy's stream, read from a running container), a disk-state file whose sha256 is wrong is
    removed and named there instead: it changed while it was read, and the final pass sends it again."""
    seen: dict[str, str] = {}
    manifest = _read_manifest(fileobj)
    expected = members(manifest)
    disk_members = (manifest.get("disk") or {}).get("files") or {}
    if manifest.get("phase") != "precopy":
        damaged = None  # only a pre-copy's files may arrive changed
    if callable(destination):
        destination = destination(manifest)
    if os.path.lexists(destination):
        raise ArchiveError(f"{destination} already exists: refusing to unpack over it")
    os.makedirs(destination, mode=0o700)
    os.chmod(destination, 0o700)
    for member in iter(lambda: _next_member(fileobj), None):
        relative = check_member(member)
        if not relative or member.isdir():
            if member.size:
                raise ArchiveError(f"directory entry {member.name!r} carries data")
            continue
        info = expected.get(relative)
        if relative == MANIFEST_NAME or info is None:
            raise ArchiveError(f"{relative} is not in the manifest")
        if relative in seen:
            raise ArchiveError(f"{relative} appears twice")
        if member.size != info["size"]:
            raise ArchiveError(f"{relative} has {member.size} bytes, the manifest says {info['size']}")
        target = os.path.join(destination, *relative.split("/"))
        seen[relative] = _write_member(fileobj, member.size, target)
        if seen[relative] != info["sha256"]:
            if damaged is None or relative not in disk_members or relative == "disk/index.json":
                raise ArchiveError(f"{relative} does not match its sha256 (corrupted on the way)")
            os.unlink(target)
            damaged.add(relative)
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise ArchiveError(f"the stream ended without {', '.join(missing[:5])}")
    if _read_exact(fileobj, BLOCK) != ZERO_BLOCK:  # the archive's second end block: the sender is done
        raise ArchiveError("the stream goes on after the end of its archive")
    return manifest
