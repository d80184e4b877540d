# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A checkpoint streamed from one host to another over SSH, with nothing written to disk on the way.

The receiver (docker_checkpoint state=restored with receive_timeout, on the target) makes a root-only FIFO and waits on
it. The sender (state=present with send_to, on the source) writes a plain tar - manifest.json first, then the
checkpoint's files - into `ssh <target> python3 -c RELAY <fifo>`; the relay copies its input into the FIFO and
refuses to start when nobody waits on it. The receiver unpacks the tar as it arrives, into a private directory, with
the same checks as an archive import (safe entries only, every file listed in the manifest with its size) and hashes
every file on the way, so the checkpoint is checked against its manifest when the last byte lands.
SSH encrypts and authenticates the bytes in transit; nothing is compressed (checkpoint memory rarely compresses, and
on a busy host the compressor would slow the stream down).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import shlex
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any, cast

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    MANIFEST_NAME,
    ArchiveError,
    check_member,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import Manifest, from_bytes

if TYPE_CHECKING:
    # A stream is read from anything with read(size) -> bytes (a FifoReader, a binary file); written to a file
    # descriptor or anything with fileno().
    from _typeshed import FileDescriptorLike, SupportsRead

CHUNK = 1024 * 1024
RELAY_WAIT = 20  # seconds the relay gives a receiver that is still starting
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named in the fcntl module only from Python 3.10

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


def ssh_argv(send_to: Mapping[str, Any], remote_path: str, ready_within: float = RELAY_WAIT) -> list[str]:
    """The ssh command line that feeds the relay on the target (`send_to` is the module's option); the relay waits up
    to `ready_within` seconds for the receiver's FIFO."""
    argv = ["ssh", "-x", "-a", "-o", "ClearAllForwardings=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-p", str(send_to.get("port") or 22)]
    if send_to.get("known_hosts_file"):
        argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={send_to['known_hosts_file']}"]
    if send_to.get("identity_file"):
        argv += ["-i", send_to["identity_file"]]
    python = send_to.get("python") or "python3"
    remote = f"{shlex.quote(python)} -c {shlex.quote(RELAY)} {shlex.quote(remote_path)} {int(ready_within)}"
    return argv + ["--", f"{send_to.get('user') or 'root'}@{send_to['host']}", remote]


BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)


def _padding(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
    # PAX: a pages file above 8 GiB gets its size in an extended header, as GNU tar and Python's tarfile read it.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def stream_length(manifest: Mapping[str, Any]) -> int:
    """The bytes write_stream will write for this manifest (said first to the relay, which copies that many)."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    count = BLOCK + len(data) + _padding(len(data)) + 2 * BLOCK
    for relative, info in members(manifest).items():
        count += len(_header(relative, info["size"])) + info["size"] + _padding(info["size"])
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
        _write_all(fd, bytes(step))
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
        _write_all(fd, header)
        _zeros(fd, size)
        return
    with handle:
        actual = os.fstat(handle.fileno()).st_size
        if extents is None and actual != size and not lenient:
            raise StreamError(f"{full} changed size since its manifest was made ({actual} bytes, the manifest says "
                              f"{size})")
        _write_all(fd, header)
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
    _write_all(fd, _header(MANIFEST_NAME, len(data)) + data + bytes(_padding(len(data))))
    count = BLOCK + len(data) + _padding(len(data))
    disk = dict(sorted(((manifest.get("disk") or {}).get("files") or {}).items()))
    for relative, info in [*sorted(manifest["files"].items()), *disk.items()]:
        size = info["size"]
        source = (disk_sources or {}).get(relative) if relative in disk else (
            os.path.join(source_dir, *relative.split("/")), None)
        header = _header(relative, size)
        if isinstance(source, bytes):
            if len(source) != size:
                raise StreamError(f"{relative} is {len(source)} bytes, the manifest says {size}")
            _write_all(fd, header + source)
        elif source is None:
            raise StreamError(f"nothing to send for {relative}")
        else:
            _send_file(fd, header, source[0], source[1], size, lenient)
        _write_all(fd, bytes(_padding(size)))
        count += len(header) + size + _padding(size)
    _write_all(fd, _ZERO_BLOCK * 2)  # the end of the archive
    return count + 2 * BLOCK


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
        stderr = cast(IO[bytes], self.proc.stderr)  # stderr=PIPE
        self._reader = threading.Thread(target=lambda: self._errors.append(stderr.read()), daemon=True)
        self._reader.start()

    def wait_ready(self, seconds: float) -> None:
        """Wait until the relay on the target holds the receiver's FIFO open; raise StreamError (with the far side's
        message) when it will not - before anything is dumped."""
        stdout = cast(IO[bytes], self.proc.stdout)  # stdout=PIPE
        deadline = time.monotonic() + seconds
        line: bytes | None = None
        while line != b"" and select.select([stdout], [], [], max(0, deadline - time.monotonic()))[0]:
            line = stdout.readline()  # a login's shell start-up files may print something first
            if line == b"ready\n":
                return
        self.abort()
        detail = b"".join(self._errors).decode("utf-8", "replace").strip()
        raise StreamError(detail or (f"the connection ended (exit code {self.proc.returncode})" if line == b""
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

    def send_more(self, manifest: Mapping[str, Any], disk_sources: Mapping[str, Any], timeout: float) -> dict[str, float]:
        """A first segment on the connection - the disk state's pre-copy, the container still running - written but not
        confirmed (the relay confirms the whole after the last segment); returns {'bytes', 'seconds'}."""
        stdin = cast(IO[bytes], self.proc.stdin)  # stdin=PIPE
        begin = time.monotonic()
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            stdin.write(stream_preamble(manifest, more=True))
            stdin.flush()
            sent = write_stream(stdin, "", manifest, disk_sources, lenient=True)
        except OSError as exc:
            self.abort()
            detail = b"".join(self._errors).decode("utf-8", "replace").strip()
            raise StreamError(f"sending the pre-copy over SSH failed: {detail or exc}") from exc
        finally:
            timer.cancel()
        return {"bytes": sent, "seconds": round(time.monotonic() - begin, 3)}

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
                stdin.write(stream_preamble(manifest))
                stdin.flush()
                sent = write_stream(stdin, source_dir, manifest, disk_sources)
                stdin.close()
            except (BrokenPipeError, ConnectionResetError) as exc:
                broken = exc
            except OSError as exc:
                self.proc.kill()
                raise StreamError(f"reading the checkpoint to send failed: {exc}") from exc
            # The relay's "done" (after "ready") says that every byte reached the receiver's FIFO.
            answer = b"" if broken else cast(IO[bytes], self.proc.stdout).read()
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
        if block == _ZERO_BLOCK:
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
            pax = _pax_records(_read_exact(fileobj, info.size + _padding(info.size))[:info.size])
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
    data = _read_exact(fileobj, first.size + _padding(first.size))[:first.size]
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
            _write_all(fd, data)
            left -= len(data)
    finally:
        os.close(fd)
    _read_exact(fileobj, _padding(size))
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
    if _read_exact(fileobj, BLOCK) != _ZERO_BLOCK:  # the archive's second end block: the sender is done
        raise ArchiveError("the stream goes on after the end of its archive")
    return manifest
