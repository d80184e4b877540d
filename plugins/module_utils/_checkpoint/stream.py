# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A checkpoint streamed from one host to another over SSH, with nothing written to disk on the way.

The receiver (docker_checkpoint state=restored with receive_timeout, on the target) makes a root-only FIFO and waits on
it. The sender (state=present with send_to, on the source) writes a plain tar - manifest.json first, then the
checkpoint's files - into `ssh <target> python3 -c RELAY <fifo>`; the relay copies its input into the FIFO and
refuses to start when nobody waits on it. The receiver (stream_receive.py) unpacks the tar as it arrives, into a
private directory, with
the same checks as an archive import (safe entries only, every file listed in the manifest with its size) and hashes
every file on the way, so the checkpoint is checked against its manifest when the last byte lands.
SSH encrypts and authenticates the bytes in transit; nothing is compressed (checkpoint memory rarely compresses, and
on a busy host the compressor would slow the stream down).
"""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import MANIFEST_NAME

if TYPE_CHECKING:
    # A stream is read from anything with read(size) -> bytes (a FifoReader, a binary file); written to a file
    # descriptor or anything with fileno().
    from _typeshed import FileDescriptorLike

CHUNK = 1024 * 1024
RELAY_WAIT = 20  # seconds the relay gives a receiver that is still starting

# Runs on the target under the SSH login's python3 (kept to what Python 3.6 understands): open the FIFO without
# blocking - a receiver that is still starting (its FIFO not made yet, or not opened yet) is given a few seconds, a
# missing one is an error instead of a hang - say "ready", then copy stdin into it.
RELAY = r"""
import errno, os, stat, sys, time
path, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while True:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        break
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENXIO) or time.time() > deadline:
            sys.exit("fleet.checkpoint: nothing is receiving at %s on this host (%s): start the receiving restore "
                     "(state=restored with receive_timeout) first" % (path, exc.strerror))
        time.sleep(0.1)
if not stat.S_ISFIFO(os.fstat(fd).st_mode):
    sys.exit("fleet.checkpoint: %s is not a receiver's FIFO" % path)
os.set_blocking(fd, True)
os.write(1, b"ready\n")
# The stream says its length first ("fleet-stream <bytes>"): the relay copies exactly that much, then says "done" -
# without waiting for the end of its input, which a sudo or a relay in between may hold open. A segment marked
# "more" (a pre-copy sent while the container still runs) is followed by another one on the same connection.
use_splice, started = hasattr(os, "splice"), False
while True:
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    if not line and not started:
        os.close(fd)
        sys.exit(0)  # the sender gave up before sending anything: the receiver sees an empty stream
    if not line:
        sys.exit("fleet.checkpoint: the sender stopped after its pre-copy, before the checkpoint")
    words = line.split()
    if (len(words) not in (2, 3) or words[0] != b"fleet-stream" or not words[1].isdigit()
            or words[2:] not in ([], [b"more"])):
        sys.exit("fleet.checkpoint: this is not a fleet.checkpoint stream (it starts with %r)" % line[:40])
    started, left = True, int(words[1])
    try:
        while left:
            if use_splice:
                try:
                    moved = os.splice(0, fd, min(left, 1048576))  # SSH's pipe into the FIFO, no copy through Python
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    use_splice = False
                    continue
            else:
                data = os.read(0, min(left, 1048576))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                moved = len(data)
            if not moved:
                sys.exit("fleet.checkpoint: the stream ended %d bytes short (the sender stopped or the connection "
                         "broke)" % left)
            left -= moved
    except OSError as exc:
        sys.exit("fleet.checkpoint: writing into %s failed (%s): the receiving restore stopped" % (path, exc.strerror))
    if words[2:] != [b"more"]:
        break
os.close(fd)
os.write(1, b"done\n")  # every byte is in the FIFO: the sender's proof that the stream arrived whole
"""


class StreamError(Exception):
    """The stream could not be sent or received; the message says where it broke."""


def stream_name(container: str, checkpoint: str) -> str:
    """The FIFO's file name in the receiver's directory."""
    return f"{container}-{checkpoint}.stream"


def ssh_argv(send_to: Mapping[str, Any], remote_path: str, ready_within: float = RELAY_WAIT,
             script: str = RELAY, extra: Sequence[str] = ()) -> list[str]:
    """The ssh command line that feeds the relay on the target (`send_to` is the module's option); the relay waits up
    to `ready_within` seconds for the receiver's FIFO (`script`: another relay, given the same two arguments and the
    `extra` ones)."""
    argv = ["ssh", "-x", "-a", "-o", "ClearAllForwardings=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-p", str(send_to.get("port") or 22),
            # Whatever ssh_config says (StrictHostKeyChecking=no or accept-new): the target must present a key
            # already known, from known_hosts_file or root's known_hosts.
            "-o", "StrictHostKeyChecking=yes"]
    if send_to.get("known_hosts_file"):
        argv += ["-o", f"UserKnownHostsFile={send_to['known_hosts_file']}"]
    if send_to.get("identity_file"):
        argv += ["-i", send_to["identity_file"]]
    python = send_to.get("python") or "python3"
    remote = " ".join([shlex.quote(python), "-c", shlex.quote(script), shlex.quote(remote_path), str(int(ready_within)),
                       *map(shlex.quote, extra)])
    return argv + ["--", f"{send_to.get('user') or 'root'}@{send_to['host']}", remote]


BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


def padding(size: int) -> int:
    """The zero bytes that round a tar member of `size` bytes up to whole blocks."""
    return (BLOCK - size % BLOCK) % BLOCK


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
    # PAX: a pages file above 8 GiB gets its size in an extended header, as GNU tar and Python's tarfile read it.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def stream_length(manifest: Mapping[str, Any]) -> int:
    """The bytes write_stream will write for this manifest (said first to the relay, which copies that many)."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    count = BLOCK + len(data) + padding(len(data)) + 2 * BLOCK
    for relative, info in members(manifest).items():
        count += len(_header(relative, info["size"])) + info["size"] + padding(info["size"])
    return count


def members(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every file the stream carries after its manifest: the checkpoint's, then the disk state's (if any)."""
    return {**manifest["files"], **((manifest.get("disk") or {}).get("files") or {})}


def stream_preamble(manifest: Mapping[str, Any], more: bool = False) -> bytes:
    """What a sender writes before the tar: the stream's length, for the relay on the target; `more` when another
    segment follows on the same connection (a pre-copy, then the checkpoint)."""
    return b"fleet-stream %d%s\n" % (stream_length(manifest), b" more" if more else b"")


def _send_range(fd: int, handle: IO[bytes], full: str, offset: int, length: int, lenient: bool = False) -> None:
    end = offset + length
    while offset < end:
        sent = os.sendfile(fd, handle.fileno(), offset, min(end - offset, 1 << 30))
        if sent == 0:
            if not lenient:
                raise StreamError(f"{full} ended early while being sent (it shrank)")
            _zeros(fd, end - offset)  # a pre-copy: see _send_file
            return
        offset += sent


def _zeros(fd: int, count: int) -> None:
    while count:
        step = min(count, 1024 * 1024)
        write_all(fd, bytes(step))
        count -= step


def _send_file(fd: int, header: bytes, full: str, extents: list[list[int]] | None, size: int, lenient: bool) -> None:
    """A member's header, then its bytes (its data extents when sparse) from the file `full`. `lenient` (a pre-copy of
    a running container): a file that shrank or went away since its walk is made up with zeros - the receiver finds
    its sha256 wrong and drops it, and the final pass sends it again, as it changed."""
    try:
        handle = open(full, "rb")  # pylint: disable=consider-using-with
    except OSError:
        if not lenient:
            raise
        write_all(fd, header)
        _zeros(fd, size)
        return
    with handle:
        actual = os.fstat(handle.fileno()).st_size
        if extents is None and actual != size and not lenient:
            raise StreamError(f"{full} changed size since its manifest was made ({actual} bytes, the manifest says "
                              f"{size})")
        write_all(fd, header)
        for offset, length in extents if extents is not None else [[0, size]]:
            _send_range(fd, handle, full, offset, length, lenient)


def write_stream(out: FileDescriptorLike, source_dir: str, manifest: Mapping[str, Any],
                 disk_sources: Mapping[str, Any] | None = None, lenient: bool = False) -> int:
    """Write the checkpoint under source_dir as a plain tar stream to `out` (a file descriptor, or a file object with
    one): manifest.json first, then every file the manifest lists (root-only modes), the files' bytes handed over by
    the kernel (sendfile) without passing through Python; then the disk state's members, from `disk_sources`
    (member -> its bytes, or (path, data extents or None)). Returns the number of bytes written."""
    fd = out if isinstance(out, int) else out.fileno()
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    write_all(fd, _header(MANIFEST_NAME, len(data)) + data + bytes(padding(len(data))))
    count = BLOCK + len(data) + padding(len(data))
    disk = dict(sorted(((manifest.get("disk") or {}).get("files") or {}).items()))
    for relative, info in [*sorted(manifest["files"].items()), *disk.items()]:
        size = info["size"]
        source = (disk_sources or {}).get(relative) if relative in disk else (
            os.path.join(source_dir, *relative.split("/")), None)
        header = _header(relative, size)
        if isinstance(source, bytes):
            if len(source) != size:
                raise StreamError(f"{relative} is {len(source)} bytes, the manifest says {size}")
            write_all(fd, header + source)
        elif source is None:
            raise StreamError(f"nothing to send for {relative}")
        else:
            _send_file(fd, header, source[0], source[1], size, lenient)
        write_all(fd, bytes(padding(size)))
        count += len(header) + size + padding(size)
    write_all(fd, ZERO_BLOCK * 2)  # the end of the archive
    return count + 2 * BLOCK


def write_segment(fd: int, source_dir: str, manifest: Mapping[str, Any], disk_sources: Mapping[str, Any] | None = None,
                  more: bool = False) -> int:
    """One segment of a stream on `fd`: its length first (for the relay), then the tar (write_stream). `more`: a
    pre-copy, another segment follows; its files are read leniently (a running container's). Returns the tar's
    bytes."""
    write_all(fd, stream_preamble(manifest, more))
    return write_stream(fd, source_dir, manifest, disk_sources, lenient=more)


def send_precopy(fd: int, manifest: Mapping[str, Any], disk_sources: Mapping[str, Any], timeout: float,
                 cut: Callable[[], None], source_dir: str = "") -> dict[str, float]:
    """The pre-copy's segment on `fd` (write_segment, more=True), the connection cut by `cut()` if it is not written
    within `timeout` seconds; returns {'bytes', 'seconds'}. An OSError is the caller's to explain."""
    begin = time.monotonic()
    timer = threading.Timer(timeout, cut)
    timer.start()
    try:
        sent = write_segment(fd, source_dir, manifest, disk_sources, more=True)
    finally:
        timer.cancel()
    return {"bytes": sent, "seconds": round(time.monotonic() - begin, 3)}


class Sender:
    """`ssh <target> <relay>` started ahead (its connection set up while the dump runs), then fed the checkpoint."""

    def __init__(self, argv: list[str]) -> None:
        try:
            # Not run_command: the stream is fed to ssh's stdin as it is read, never held in memory whole.
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with,ansible-bad-function
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise StreamError(f"cannot run {argv[0]}: {exc}") from exc
        self._errors: list[bytes] = []
        self._answer = b""  # what the relay said after "ready" in the same read
        stderr = cast(IO[bytes], self.proc.stderr)  # stderr=PIPE
        self._reader = threading.Thread(target=lambda: self._errors.append(stderr.read()), daemon=True)
        self._reader.start()

    def wait_ready(self, seconds: float) -> None:
        """Wait until the relay on the target holds the receiver's FIFO open; raise StreamError (with the far side's
        message) when it will not - before anything is dumped."""
        # Read from the descriptor itself, not through the buffered reader: a login's start-up files may print
        # something first, and a banner arriving with "ready" in one read would leave "ready" in a buffer that
        # select() does not see.
        fd = cast(IO[bytes], self.proc.stdout).fileno()  # stdout=PIPE
        deadline = time.monotonic() + seconds
        pending, ended = b"", False
        while not ended and select.select([fd], [], [], max(0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 65536)
            ended = not chunk
            lines = (pending + chunk).split(b"\n")
            if b"ready" in lines[:-1]:
                self._answer = b"\n".join(lines[lines.index(b"ready") + 1:])  # the relay's later words, if any
                return
            pending = lines[-1][-4096:]  # an unfinished line, bounded
        self.abort()
        detail = b"".join(self._errors).decode("utf-8", "replace").strip()
        raise StreamError(detail or (f"the connection ended (exit code {self.proc.returncode})" if ended
                                     else f"no answer from the target within {seconds}s"))

    def abort(self) -> None:
        """Nothing to send after all: the far side sees an empty stream and gives up."""
        if self.proc.poll() is None:
            try:
                cast(IO[bytes], self.proc.stdin).close()  # stdin=PIPE
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)

    def send_more(self, manifest: Mapping[str, Any], disk_sources: Mapping[str, Any], timeout: float,
                  source_dir: str = "") -> dict[str, float]:
        """A segment before the last on the connection - the disk state's pre-copy, or a round of memory, the container
        still running - written but not confirmed (the relay confirms the whole after the last segment); its
        checkpoint files (if any) from source_dir; returns {'bytes', 'seconds'}."""
        stdin = cast(IO[bytes], self.proc.stdin)  # stdin=PIPE
        try:
            return send_precopy(stdin.fileno(), manifest, disk_sources, timeout, self.proc.kill, source_dir)
        except OSError as exc:
            self.abort()
            detail = b"".join(self._errors).decode("utf-8", "replace").strip()
            raise StreamError(f"sending the pre-copy over SSH failed: {detail or exc}") from exc

    def send(self, source_dir: str, manifest: Mapping[str, Any], timeout: float,
             disk_sources: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Stream the checkpoint; returns {'bytes', 'seconds', 'started_at'} (from the first byte on: the connection
        was made beforehand). The whole transfer must end within `timeout` seconds, else ssh is killed."""
        stdin = cast(IO[bytes], self.proc.stdin)  # stdin=PIPE
        started_at = time.time()
        begin = time.monotonic()
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        broken: OSError | None
        sent, broken = 0, None
        try:
            try:
                sent = write_segment(stdin.fileno(), source_dir, manifest, disk_sources)
                stdin.close()
            except (BrokenPipeError, ConnectionResetError) as exc:
                broken = exc
            except OSError as exc:
                self.proc.kill()
                raise StreamError(f"reading the checkpoint to send failed: {exc}") from exc
            # The relay's "done" (after "ready") says that every byte reached the receiver's FIFO.
            answer = b"" if broken else self._answer + cast(IO[bytes], self.proc.stdout).read()
            rc = self.proc.wait()
            self._reader.join(5)
        finally:
            timer.cancel()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        detail = b"".join(self._errors).decode("utf-8", "replace").strip()
        if rc != 0 or broken:
            if rc in (-9, 137) and time.monotonic() - begin >= timeout:
                raise StreamError(f"the transfer did not finish within timeout={timeout}s")
            raise StreamError(f"sending over SSH failed (exit code {rc}): {detail or broken or 'no message'}")
        if b"done\n" not in answer.splitlines(keepends=True):
            raise StreamError(f"the target did not confirm that the stream arrived whole: {detail or 'no message'}")
        return {"bytes": sent, "seconds": round(time.monotonic() - begin, 3), "started_at": round(started_at, 3)}
