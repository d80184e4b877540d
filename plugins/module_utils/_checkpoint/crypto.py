# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Authenticated encryption at rest of checkpoint archives, streamed in chunks (never the whole file in memory).

Format: a 39-byte header, then the chunks (STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizar, AES-256-GCM).

- header: magic ``FLEETCK\\x02`` (8 bytes), kdf id (1 byte, 1 = scrypt), scrypt log2(N), r and p (1 byte each),
  salt (16 random bytes), nonce prefix (7 random bytes), chunk size (4 bytes big-endian, 1 MiB by default), then the
  length of the context (2 bytes big-endian, at most 1024) and the context: what the archive is for (docker_checkpoint
  writes its container's and checkpoint's names as JSON), authenticated with everything else. Version 1
  (``FLEETCK\\x01``, written by 0.1.0) has no context; it is still read, and says so (decrypt_file returns None).
- key: ``hashlib.scrypt(secret, salt, n=2**log2N, r, p, dklen=32)``.
- chunk i: ``AESGCM(key).encrypt(prefix + i (4 bytes big-endian) + last flag (1 byte), plaintext, header)``, stored
  as is (plaintext then the 16-byte tag). Every chunk but the last holds exactly chunk size plaintext bytes; the last
  holds 0 to chunk size bytes and has the last flag 1, so truncation, trailing data, reordered or duplicated chunks
  and any change to the header all fail authentication.

Outputs are created 0600 with O_EXCL; on any failure the partial output is removed, so decryption never leaves
unauthenticated plaintext behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC_V1 = b"FLEETCK\x01"
MAGIC = b"FLEETCK\x02"
MAX_CONTEXT = 1024
KDF_SCRYPT = 1
SCRYPT_LOG2N = 15
SCRYPT_R = 8
SCRYPT_P = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 16 << 20
MIN_SECRET_LENGTH = 16
TAG_SIZE = 16
_HEADER = struct.Struct(">8sBBBB16s7sI")
_CONTEXT_LENGTH = struct.Struct(">H")
_MAX_CHUNKS = 1 << 32
_NOT_OURS = "not a fleet.checkpoint encrypted archive or an unsupported version"
_BAD_ARCHIVE = ("the archive could not be decrypted: wrong encryption key, or the archive was altered or truncated; "
                "give the key it was exported with")


class CryptoError(Exception):
    """Any failure to encrypt or decrypt; the message says what is wrong and what to do, and never holds a secret."""


_NO_LIBRARY = ("encryption needs the Python cryptography library on the managed host: install the "
               "python3-cryptography package (Debian/Ubuntu) or pip install cryptography")


def _aesgcm() -> type[AESGCM]:
    """cryptography's AESGCM, imported on first use: a run without a key does not pay for the import (~12 ms)."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise CryptoError(_NO_LIBRARY) from None
    return AESGCM


def _is_invalid_tag(exc: BaseException) -> bool:
    """Whether exc is cryptography's InvalidTag (a failed authentication)."""
    try:
        from cryptography.exceptions import InvalidTag  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    return isinstance(exc, InvalidTag)


def require_cryptography() -> None:
    _aesgcm()


def normalize_secret(key: str | None = None, key_file: str | None = None) -> bytes:
    """The secret as bytes, from a passphrase or from a file only its owner can read and write."""
    if (key is None) == (key_file is None):
        raise CryptoError("give exactly one of encryption_key and encryption_key_file")
    if key is not None:
        if not isinstance(key, str) or len(key) < MIN_SECRET_LENGTH:
            raise CryptoError("encryption_key is too short: use at least 16 characters (e.g. openssl rand -base64 32)")
        return key.encode("utf-8")
    if key_file is None:  # not reached: exactly one was given, and it is not key
        raise CryptoError("give exactly one of encryption_key and encryption_key_file")
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CryptoError(f"encryption_key_file {key_file} does not exist") from None
    except OSError as exc:
        raise CryptoError(f"encryption_key_file {key_file} cannot be opened: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CryptoError(f"encryption_key_file {key_file} is not a regular file")
        if mode & 0o077:
            raise CryptoError(f"encryption_key_file {key_file} can be read or written by group or others: "
                              f"run chmod 600 {key_file}")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        data = handle.read()
    data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if len(data) < MIN_SECRET_LENGTH:
        raise CryptoError(f"encryption_key_file {key_file} holds fewer than 16 bytes: put a longer key in it "
                          f"(e.g. openssl rand -base64 32 > {key_file})")
    return data


def is_encrypted(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) in (MAGIC, MAGIC_V1)


def _derive_key(secret: bytes, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_LENGTH:
        raise CryptoError("the encryption secret must be at least 16 bytes: build it with normalize_secret()")
    n = 1 << log2n
    maxmem = min(128 * r * (n + p + 2) + (1 << 20), 2 ** 31 - 1)
    try:
        return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)
    except (ValueError, MemoryError) as exc:
        raise CryptoError(f"the encryption key could not be derived with scrypt log2N={log2n} r={r} p={p} "
                          f"(too much memory for this host?): {exc}") from None


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def _chunks(handle: BinaryIO, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (counter, data, last) for reads of size bytes: a chunk is the last one iff nothing follows it."""
    data = handle.read(size)
    for counter in range(_MAX_CHUNKS):
        following = handle.read(size)
        yield counter, data, not following
        if not following:
            return
        data = following
    raise CryptoError(f"more than {_MAX_CHUNKS} chunks: too large for this format, or altered; use a larger chunk size")


@contextlib.contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    """A new 0600 file, removed again if anything fails before it is complete."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


@contextlib.contextmanager
def _errors(action: str, source_path: str, destination_path: str) -> Iterator[None]:
    """Turn OS and authentication failures into a CryptoError (the partial output is already gone by then)."""
    try:
        yield
    except FileExistsError:
        raise CryptoError(f"{destination_path} already exists: remove it or choose another destination") from None
    except OSError as exc:
        raise CryptoError(f"could not {action} {source_path} to {destination_path}: {exc.strerror or exc}") from None
    except Exception as exc:
        if _is_invalid_tag(exc):
            raise CryptoError(_BAD_ARCHIVE) from None
        raise


def encrypt_file(source_path: str, destination_path: str, secret: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 context: bytes = b"") -> None:
    """Encrypt source into a new file; `context` (what the archive is for) is stored in the header, authenticated."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise CryptoError(f"chunk size {chunk_size} is out of range: use {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    if len(context) > MAX_CONTEXT:
        raise CryptoError(f"the archive's context is {len(context)} bytes: at most {MAX_CONTEXT}")
    salt, prefix = os.urandom(16), os.urandom(7)
    header = (_HEADER.pack(MAGIC, KDF_SCRYPT, SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P, salt, prefix, chunk_size)
              + _CONTEXT_LENGTH.pack(len(context)) + context)
    aead = _aesgcm()(_derive_key(secret, salt, SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P))
    with _errors("encrypt", source_path, destination_path), open(source_path, "rb") as source:
        with _output(destination_path) as out:
            out.write(header)
            for counter, data, last in _chunks(source, chunk_size):
                out.write(aead.encrypt(_nonce(prefix, counter, last), data, header))


def decrypt_file(source_path: str, destination_path: str, secret: bytes) -> bytes | None:
    """Authenticate and decrypt source into a new file; return the header's context (None for a version 1 archive,
    which has none). Nothing of an archive that fails authentication is left."""
    with _errors("decrypt", source_path, destination_path), open(source_path, "rb") as source:
        header = source.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise CryptoError(f"{source_path}: {_NOT_OURS}")
        magic, kdf, log2n, r, p, salt, prefix, chunk_size = _HEADER.unpack(header)
        context: bytes | None = None
        if magic == MAGIC:
            length = source.read(_CONTEXT_LENGTH.size)
            size = _CONTEXT_LENGTH.unpack(length)[0] if len(length) == _CONTEXT_LENGTH.size else MAX_CONTEXT + 1
            context = source.read(size) if size <= MAX_CONTEXT else b""
            if size > MAX_CONTEXT or len(context) != size:
                raise CryptoError(f"{source_path}: {_NOT_OURS}")
            header += length + context
        # The header is not authenticated until the first chunk is: only the scrypt cost this module writes is
        # accepted (a crafted one could ask for up to 2 GiB of memory and seconds of work before any tag is checked).
        if (magic not in (MAGIC, MAGIC_V1) or kdf != KDF_SCRYPT or (log2n, r, p) != (SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P)
                or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE):
            raise CryptoError(f"{source_path}: {_NOT_OURS}")
        aead = _aesgcm()(_derive_key(secret, salt, log2n, r, p))
        with _output(destination_path) as out:
            for counter, data, last in _chunks(source, chunk_size + TAG_SIZE):
                out.write(aead.decrypt(_nonce(prefix, counter, last), data, header))
    return context
