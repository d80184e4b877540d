# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What an archive may cost before its contents are checked: bounded decompression and bounded tar headers.

An archive is input from whoever could write it. A few kilobytes of zstd can decompress to gigabytes, and a tar's
extended header (pax, GNU long name) is read whole into memory by Python's tarfile. So a zstd archive is decompressed
through a pipe in two steps - its first entry (the manifest, at most 16 MiB) first, then the whole, stopped at what the
manifest accounts for - and every tar's headers are walked before tarfile reads it, refusing an extended header over
1 MiB without reading it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from typing import IO, Protocol, cast

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError

BLOCK = 512
MAX_EXTENDED_HEADER = 1024 * 1024
MANIFEST_MAX = 16 * 1024 * 1024
PER_FILE = 8 * 1024  # tar headers (and pax records) and padding allowed per file listed in the manifest
SLACK = 1024 * 1024
_EXTENDED = (b"x", b"g", b"L", b"K")


class Readable(Protocol):
    """A binary stream (a file, a GzipFile)."""

    def read(self, size: int = ..., /) -> bytes:
        """Up to size bytes."""

    def seek(self, offset: int, whence: int = ..., /) -> int:
        """Move the position."""


def scan_headers(handle: Readable) -> None:
    """Walk a tar's headers from `handle` (a plain tar stream) without reading file contents or extended headers;
    raise ArchiveError for an extended header larger than MAX_EXTENDED_HEADER. A damaged tar is left to tarfile."""
    while True:
        block = handle.read(BLOCK)
        if len(block) < BLOCK or block == bytes(BLOCK):
            return
        try:
            size = tarfile.nti(block[124:136])  # type: ignore[attr-defined]  # tarfile's own number parser
        except (tarfile.HeaderError, ValueError):
            return
        if block[156:157] in _EXTENDED and size > MAX_EXTENDED_HEADER:
            raise ArchiveError(f"the archive has an extended tar header of {size} bytes (at most {MAX_EXTENDED_HEADER}"
                               "): not a fleet.checkpoint archive")
        _skip(handle, (size + BLOCK - 1) // BLOCK * BLOCK)


def _skip(handle: Readable, count: int) -> None:
    try:
        handle.seek(count, os.SEEK_CUR)
        return
    except (OSError, io.UnsupportedOperation, ValueError):
        pass
    while count > 0:
        data = handle.read(min(count, 1024 * 1024))
        if not data:
            return
        count -= len(data)


def _zstd(zstd: str, source: str) -> subprocess.Popen[bytes]:
    # Not run_command: the output is read as it comes, to stop it at a bound (never held whole).
    return subprocess.Popen([zstd, "-d", "-c", "-q", source],  # pylint: disable=consider-using-with,ansible-bad-function
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _end(proc: subprocess.Popen[bytes], kill: bool) -> str:
    """Wait for zstd (killed first when its output is not wanted any more); its error output."""
    if kill and proc.poll() is None:
        proc.kill()
    _out, err = proc.communicate()
    return err.decode("utf-8", "replace").strip()


def manifest_bound(zstd: str, source: str) -> int:
    """What the whole tar of a zstd archive may decompress to: read its first entry (the manifest, at most 16 MiB)
    from the start of the stream, then its files' sizes plus tar overhead."""
    proc = _zstd(zstd, source)
    head = cast(IO[bytes], proc.stdout).read(MANIFEST_MAX + 64 * 1024)
    err = _end(proc, kill=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
            first = tar.next()
            if first is None or not first.isfile() or first.size > MANIFEST_MAX:
                raise ArchiveError("it does not start with its manifest: not a fleet.checkpoint archive")
            member = tar.extractfile(first)
            data = member.read() if member else b""
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"could not be decompressed: {err or exc}") from exc
    try:
        manifest = json.loads(data.decode("utf-8"))
        files = manifest["files"]
        size = sum(int(item["size"]) for item in files.values())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"its manifest cannot be read: {exc}") from exc
    return size + len(data) + PER_FILE * (len(files) + 2) + SLACK


def decompress(zstd: str, source: str, destination: str, bound: int,
               free: Callable[[str], int] | None = None) -> None:
    """zstd -d of source into destination (a new 0600 file) through a pipe, stopped with ArchiveError at `bound`
    bytes; refused before anything is written when the destination's filesystem has less than that free."""
    if free is not None and free(os.path.dirname(destination)) < bound:
        raise ArchiveError(f"it decompresses to about {bound // 2**20} MiB and the scratch has "
                           f"{free(os.path.dirname(destination)) // 2**20} MiB free: free some space there")
    proc = _zstd(zstd, source)
    written, whole = 0, False
    try:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            stdout = cast(IO[bytes], proc.stdout)
            for chunk in iter(lambda: stdout.read(1024 * 1024), b""):
                written += len(chunk)
                if written > bound:
                    raise ArchiveError(f"it decompresses to more than the {bound} bytes its manifest accounts for: "
                                       "refused (a decompression bomb, or not a fleet.checkpoint archive)")
                out.write(chunk)
        whole = True
    finally:
        err = _end(proc, kill=not whole)
    if proc.returncode != 0:
        raise ArchiveError(f"could not be decompressed: {err or f'zstd exited {proc.returncode}'}")
