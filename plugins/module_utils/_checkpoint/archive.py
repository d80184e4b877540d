# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Checkpoint archives: a tar (zstd, gzip or plain) holding manifest.json first, then the checkpoint's files.

Writing is atomic and root-only; reading trusts nothing: the manifest is validated, every entry is checked before
anything is written, and every file's size and sha256 must match the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import Literal

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import tar_limits
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    MANIFEST_NAME,
    ArchiveError,
    check_member,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.crypto import (
    CryptoError,
    decrypt_file,
    encrypt_file,
    is_encrypted,
    require_cryptography,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import Run
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import Manifest, from_bytes
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import scratch as scratch_dir

EXTENSIONS = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


ENCRYPTED_SUFFIX = ".enc"
PODMAN_CHECKPOINT_DIR = "checkpoint"  # (podman_layout.CHECKPOINT_DIR)


def archive_name(container_name: str, checkpoint: str, compression: str, encrypted: bool = False) -> str:
    return f"{container_name}-{checkpoint}{EXTENSIONS[compression]}{ENCRYPTED_SUFFIX if encrypted else ''}"


def is_zstd(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == _ZSTD_MAGIC


def _private_tmpdir(near: str) -> str:
    parent = os.path.dirname(os.path.abspath(near)) or "."
    return tempfile.mkdtemp(prefix=".fleet-checkpoint-", dir=parent)


def archive_context(container: str, checkpoint: str) -> bytes:
    """What an encrypted archive is for, bound into its authenticated header: its container and checkpoint."""
    return json.dumps({"checkpoint": checkpoint, "container": container}, sort_keys=True).encode("utf-8")


class Tarball:
    """A readable tar for an archive path: an encrypted archive is authenticated and decrypted, a zstd one
    decompressed, into a private directory under `scratch` (the host's local root-only scratch: never beside the
    archive) first; nothing unauthenticated is ever read as a tar. With `bound_to` (container, checkpoint), an
    encrypted archive made for another container or checkpoint, or one that names none (0.1.0's), is refused unless
    `force`."""

    def __init__(self, path: str, run: Run, zstd_path: str | None, scratch: str | None = None,
                 secret: bytes | None = None, bound_to: tuple[str, str] | None = None, force: bool = False) -> None:
        self.path = path
        self.run = run
        self.zstd = zstd_path
        self.scratch = scratch
        self.secret = secret
        self.bound_to = bound_to
        self.force = force
        self._tmp: str | None = None

    def _private(self) -> str:
        if not self._tmp:
            self._tmp = scratch_dir.new_dir(self.scratch) if self.scratch else tempfile.mkdtemp(prefix="fleet-")
        return self._tmp

    def _check_binding(self, context: bytes | None) -> None:
        if self.bound_to is None or self.force:
            return
        container, checkpoint = self.bound_to
        if context is None:
            raise ArchiveError(f"{self.path} was encrypted by fleet.checkpoint 0.1.0, which did not bind an archive to "
                               "its container and checkpoint: they cannot be checked. Export it again, or use "
                               "force=true to import it anyway")
        try:
            bound = json.loads(context.decode("utf-8"))
        except ValueError:
            bound = {}
        if (bound.get("container"), bound.get("checkpoint")) != (container, checkpoint):
            raise ArchiveError(f"{self.path} was exported for container {bound.get('container')!r}, checkpoint "
                               f"{bound.get('checkpoint')!r}, not for {container!r}, {checkpoint!r}: an archive copied "
                               "or renamed to another container's or checkpoint's name is refused. Use force=true to "
                               "import it anyway")

    def __enter__(self) -> str:
        try:
            return self._open()
        except BaseException:
            self.__exit__()
            raise

    def _open(self) -> str:
        if not os.path.isfile(self.path):
            raise ArchiveError(f"archive {self.path} does not exist or is not a file")
        source = self.path
        if is_encrypted(source):
            if self.secret is None:
                raise ArchiveError(f"{self.path} is encrypted: give encryption_key or encryption_key_file")
            try:
                require_cryptography()
                source = os.path.join(self._private(), "archive.decrypted")
                context = decrypt_file(self.path, source, self.secret)
            except CryptoError as exc:
                raise ArchiveError(str(exc)) from exc
            self._check_binding(context)
        elif self.secret is not None:
            raise ArchiveError(f"{self.path} is not encrypted, but an encryption key was given: refusing an "
                               "unprotected archive where an encrypted one is expected (leave the key out to import it)")
        if not is_zstd(source):
            _scan(source)
            return source
        if not self.zstd:
            raise ArchiveError(f"{self.path} is zstd-compressed and zstd is not installed: install the zstd package")
        tar_path = os.path.join(self._private(), "archive.tar")
        try:  # through a pipe, stopped at what its manifest accounts for (never decompressed unbounded to disk)
            bound = tar_limits.manifest_bound(self.zstd, source)
            tar_limits.decompress(self.zstd, source, tar_path, bound, free=_free_bytes)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.path}: {exc}") from exc
        if source != self.path:
            os.remove(source)
        _scan(tar_path)
        return tar_path

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._tmp:
            scratch_dir.remove(self._tmp, self.scratch)
            self._tmp = None
        return False


def looks_like_an_archive(path: str) -> bool:
    """Whether a file is an archive of some kind (encrypted, zstd, gzip, tar): what export's force may overwrite."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return (head[:8] in (b"FLEETCK\x01", b"FLEETCK\x02") or head[:4] == _ZSTD_MAGIC or head[:2] == b"\x1f\x8b"
            or head[257:262] == b"ustar")


def _free_bytes(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _scan(tar_path: str) -> None:
    """Walk the tar's headers before tarfile reads them (tar_limits.scan_headers), gzip-compressed or not."""
    try:
        with open(tar_path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if gzipped:
                with gzip.GzipFile(fileobj=raw) as plain:
                    tar_limits.scan_headers(plain)
            else:
                tar_limits.scan_headers(raw)
    except (OSError, EOFError, zlib.error):
        return  # damaged: tarfile says so when it reads it


def read_manifest(tar_path: str) -> Manifest:
    """The validated manifest of an (uncompressed or gzip) archive; it must be the first entry."""
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            first = tar.next()
            if first is None or check_member(first) != MANIFEST_NAME or not first.isfile():
                raise ArchiveError(f"{tar_path} does not start with {MANIFEST_NAME}: not a fleet.checkpoint archive")
            if first.size > 16 * 1024 * 1024:
                raise ArchiveError(f"{MANIFEST_NAME} is {first.size} bytes: too large to be a manifest")
            member = tar.extractfile(first)
            if member is None:  # not reached: checked to be a file above
                raise ArchiveError(f"{MANIFEST_NAME} cannot be read from {tar_path}")
            data = member.read()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"not a readable tar archive (truncated or damaged?): {exc}") from exc
    return from_bytes(data, MANIFEST_NAME)


def importable(manifest: Manifest) -> Manifest:
    """The manifest of an archive that state=imported can read; ArchiveError for one in Podman's layout."""
    if manifest.get("layout", "fleet") != "fleet":
        raise ArchiveError(f"the archive is in {manifest.get('layout')}'s layout (archive_layout="
                           f"{manifest.get('layout')}, written for checkpointctl): export the checkpoint again with "
                           "archive_layout=fleet to import it")
    return manifest


def verify_stream(tar_path: str, manifest: Manifest) -> list[str]:
    """Check every entry and checksum without writing anything; return a list of problems (empty when sound)."""
    problems: list[str] = []
    seen: set[str] = set()
    expected = manifest["files"]
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                relative = check_member(member)
                if not member.isfile() or relative == MANIFEST_NAME:
                    continue
                seen.add(relative)
                info = expected.get(relative)
                if info is None:
                    problems.append(f"{relative} is not in the manifest")
                    continue
                digest = hashlib.sha256()
                source = tar.extractfile(member)
                if source is None:  # not reached: a regular file
                    raise ArchiveError(f"{relative} cannot be read from the archive")
                for block in iter(lambda: source.read(1024 * 1024), b""):
                    digest.update(block)
                if member.size != info["size"]:
                    problems.append(f"{relative} has {member.size} bytes, the manifest says {info['size']} (truncated?)")
                elif digest.hexdigest() != info["sha256"]:
                    problems.append(f"{relative} does not match its sha256 (corrupted)")
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"not a readable tar archive (truncated or damaged?): {exc}") from exc
    problems.extend(f"{name} is missing" for name in sorted(set(expected) - seen))
    return problems


def check_members(tar_path: str, manifest: Manifest) -> list[str]:
    """Problems found from the tar's index alone (cheap, before anything is written): every entry safe, every file
    listed in the manifest with its size, no entry twice, nothing missing. Raises ArchiveError on an unsafe entry."""
    problems: list[str] = []
    seen: set[str] = set()
    expected = manifest["files"]
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"not a readable tar archive (truncated or damaged?): {exc}") from exc
    for member in members:
        relative = check_member(member)
        if not member.isfile() or relative == MANIFEST_NAME:
            continue
        if relative in seen:
            problems.append(f"{relative} appears twice")
        seen.add(relative)
        info = expected.get(relative)
        if info is None:
            problems.append(f"{relative} is not in the manifest")
        elif member.size != info["size"]:
            problems.append(f"{relative} has {member.size} bytes, the manifest says {info['size']}")
    problems.extend(f"{name} is missing" for name in sorted(set(expected) - seen))
    return problems


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_archive(source_dir: str, manifest: Manifest, destination: str, compression: str, run: Run,
                  zstd_path: str | None, secret: bytes | None = None, context: bytes = b"",
                  scratch: str | None = None, podman_top: dict[str, bytes] | None = None) -> str:
    """Write the archive atomically (0600, its directory created 0700), encrypted when a secret is given (see
    crypto; `context` goes into its authenticated header); return the archive's sha256. An encrypted archive's plain
    tar is made under `scratch` (the host's local root-only scratch), never beside the destination: only ciphertext
    lands there. With `podman_top` (podman_layout.top_files), the checkpoint's files go under checkpoint/ and those
    files at the top: Podman's export layout."""
    if compression == "zstd" and not zstd_path:
        raise ArchiveError("compression=zstd needs the zstd command on the managed host: install the zstd package, "
                           "or use compression=gzip or none")
    parent = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
    tmpdir = _private_tmpdir(destination)
    plain = tmpdir
    if secret is not None:
        plain = scratch_dir.new_dir(scratch) if scratch else tempfile.mkdtemp(prefix="fleet-")
    try:
        os.chmod(tmpdir, 0o700)
        tar_path = os.path.join(plain, "archive.tar")
        fd = os.open(tar_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            if compression == "gzip":
                opened = tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=1)
            else:
                opened = tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT)
            with opened as tar:
                _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
                prefix = ""
                if podman_top is not None:
                    prefix = PODMAN_CHECKPOINT_DIR + "/"
                    folder = tarfile.TarInfo(PODMAN_CHECKPOINT_DIR)
                    folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o700, 0
                    tar.addfile(folder)
                for relative in sorted(manifest["files"]):
                    info = tar.gettarinfo(os.path.join(source_dir, *relative.split("/")), arcname=prefix + relative)
                    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "root", "root"
                    with open(os.path.join(source_dir, *relative.split("/")), "rb") as handle:
                        tar.addfile(info, handle)
                for name, data in sorted((podman_top or {}).items()):
                    _add_bytes(tar, name, data)
        final = tar_path
        if compression == "zstd" and zstd_path:  # (zstd without zstd_path is refused above)
            final = os.path.join(plain, "archive.tar.zst")
            rc, out, err = run([zstd_path, "-q", "-T0", "-f", "-o", final, tar_path])
            if rc != 0:
                raise ArchiveError(f"zstd failed: {(err or out).strip()}")
        if secret is not None:
            encrypted = os.path.join(tmpdir, os.path.basename(final) + ENCRYPTED_SUFFIX)
            try:
                require_cryptography()
                encrypt_file(final, encrypted, secret, context=context)
            except CryptoError as exc:
                raise ArchiveError(str(exc)) from exc
            os.remove(final)
            final = encrypted
        os.chmod(final, 0o600)
        digest = hashlib.sha256()
        with open(final, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        os.replace(final, destination)
        return digest.hexdigest()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if plain != tmpdir:
            scratch_dir.remove(plain, scratch)


@dataclass(frozen=True)
class ArchiveOptions:
    """Where a container's archive is (archive_path, or archive_dir with the standard name), how it is compressed
    when written, and the encryption secret (bytes) when there is one."""

    path: str | None = None
    directory: str | None = None
    compression: str = "zstd"
    secret: bytes | None = None
    layout: str = "fleet"  # or podman (export only: podman_layout.py)

    def to_write(self, container: str, checkpoint: str) -> str:
        """The archive an export writes."""
        if self.path:
            return self.path
        if not self.directory:
            raise ValueError("an archive needs archive_path or archive_dir")
        return os.path.join(self.directory, archive_name(container, checkpoint, self.compression,
                                                         self.secret is not None))

    def to_read(self, container: str, checkpoint: str) -> str:
        """The archive an import reads: with archive_dir, the encrypted name first when a key is given; either way
        the other kind is found too, and refused with a message saying why (a key missing, or an unprotected archive
        where an encrypted one is expected). Nothing found: the name an export would write."""
        if self.path:
            return self.path
        if not self.directory:
            raise ValueError("an archive needs archive_path or archive_dir")
        keyed = self.secret is not None
        for encrypted in (keyed, not keyed):
            for compression in ("zstd", "gzip", "none"):
                candidate = os.path.join(self.directory, archive_name(container, checkpoint, compression, encrypted))
                if os.path.exists(candidate):
                    return candidate
        return self.to_write(container, checkpoint)
