# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
import sys

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import crypto
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.crypto import (
    MAGIC,
    TAG_SIZE,
    CryptoError,
    decrypt_file,
    encrypt_file,
    is_encrypted,
    normalize_secret,
    require_cryptography,
)

CHUNK = 4096
HEADER = 41  # 39 bytes, then the context's length (2 bytes) and the context (empty here)
SECRET = b"correct horse battery staple"
MARKER = b"FLEET-PLAINTEXT-MARKER-1234567890"


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(crypto, "SCRYPT_LOG2N", 10)


def payload(size):
    return (os.urandom(64) * (size // 64 + 1))[:size]


def encrypted(tmp_path, data, secret=SECRET, chunk_size=CHUNK):
    source = tmp_path / "plain"
    source.write_bytes(data)
    destination = tmp_path / "plain.enc"
    encrypt_file(str(source), str(destination), secret, chunk_size=chunk_size)
    return destination


def assert_refused(tmp_path, path, match="could not be decrypted", secret=SECRET):
    out = tmp_path / "out"
    with pytest.raises(CryptoError, match=match):
        decrypt_file(str(path), str(out), secret)
    assert not out.exists()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip(tmp_path, size):
    data = payload(size)
    enc = encrypted(tmp_path, data)
    chunks = max(1, -(-size // CHUNK))
    assert enc.stat().st_size == HEADER + size + chunks * TAG_SIZE
    out = tmp_path / "out"
    decrypt_file(str(enc), str(out), SECRET)
    assert out.read_bytes() == data


def test_default_parameters_and_chunk_size(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto, "SCRYPT_LOG2N", 15)
    source = tmp_path / "plain"
    source.write_bytes(b"x" * 100)
    enc = tmp_path / "enc"
    encrypt_file(str(source), str(enc), SECRET)
    header = enc.read_bytes()[:HEADER]
    assert header[:8] == MAGIC
    assert tuple(header[8:12]) == (1, 15, 8, 1)
    assert struct.unpack(">I", header[35:39])[0] == 1 << 20
    out = tmp_path / "out"
    decrypt_file(str(enc), str(out), SECRET)
    assert out.read_bytes() == b"x" * 100


def test_format_matches_the_documented_construction(tmp_path):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = payload(CHUNK + 10)
    raw = encrypted(tmp_path, data).read_bytes()
    header = raw[:HEADER]
    magic, kdf, log2n, r, p, salt, prefix, chunk_size, context = struct.unpack(">8sBBBB16s7sIH", header)
    assert (magic, kdf, log2n, r, p, chunk_size, context) == (MAGIC, 1, 10, 8, 1, CHUNK, 0)
    aead = AESGCM(hashlib.scrypt(SECRET, salt=salt, n=2 ** log2n, r=r, p=p, dklen=32))
    first, last = raw[HEADER:HEADER + CHUNK + TAG_SIZE], raw[HEADER + CHUNK + TAG_SIZE:]
    assert aead.decrypt(prefix + b"\0\0\0\0\0", first, header) == data[:CHUNK]
    assert aead.decrypt(prefix + b"\0\0\0\1\1", last, header) == data[CHUNK:]


def test_outputs_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        enc = encrypted(tmp_path, b"data")
        out = tmp_path / "out"
        decrypt_file(str(enc), str(out), SECRET)
    finally:
        os.umask(old)
    assert stat.S_IMODE(enc.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_existing_destination_is_refused_and_kept(tmp_path):
    enc = encrypted(tmp_path, b"data")
    out = tmp_path / "out"
    out.write_bytes(b"keep me")
    with pytest.raises(CryptoError, match="already exists"):
        decrypt_file(str(enc), str(out), SECRET)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(CryptoError, match="already exists"):
        encrypt_file(str(tmp_path / "plain"), str(out), SECRET, chunk_size=CHUNK)
    assert out.read_bytes() == b"keep me"


def test_missing_source(tmp_path):
    with pytest.raises(CryptoError, match="could not encrypt"):
        encrypt_file(str(tmp_path / "nope"), str(tmp_path / "enc"), SECRET)
    with pytest.raises(CryptoError, match="could not decrypt"):
        decrypt_file(str(tmp_path / "nope"), str(tmp_path / "out"), SECRET)
    assert not (tmp_path / "enc").exists() and not (tmp_path / "out").exists()


def test_ciphertext_hides_plaintext_and_is_randomized(tmp_path):
    data = (MARKER + b"\n") * 1000
    enc = encrypted(tmp_path, data)
    first = enc.read_bytes()
    assert MARKER not in first
    enc.unlink()
    assert encrypted(tmp_path, data).read_bytes() != first


def test_wrong_key(tmp_path):
    enc = encrypted(tmp_path, payload(2 * CHUNK))
    out = tmp_path / "out"
    with pytest.raises(CryptoError, match="wrong encryption key") as info:
        decrypt_file(str(enc), str(out), b"another secret of 16+ bytes")
    assert "give the key it was exported with" in str(info.value)
    assert SECRET.decode() not in str(info.value)
    assert not out.exists()


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset", [
    12,  # salt
    28,  # nonce prefix
    37,  # chunk size (4096 -> 4352, still in range)
    HEADER,  # first byte of the first chunk
    HEADER + CHUNK + 7,  # inside the first tag
    HEADER + CHUNK + TAG_SIZE + 100,  # second chunk
    -1,  # last byte of the final tag
])
def test_flipped_bit(tmp_path, offset):
    enc = encrypted(tmp_path, payload(2 * CHUNK + 10))
    flip(enc, offset)
    assert_refused(tmp_path, enc)


def split(path):
    data = path.read_bytes()
    body = data[HEADER:]
    step = CHUNK + TAG_SIZE
    return data[:HEADER], [body[i:i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("size", [3 * CHUNK, 3 * CHUNK + 5])
@pytest.mark.parametrize("change", [
    "truncate_byte", "drop_last_chunk", "header_only", "empty", "trailing_garbage", "trailing_chunk",
    "swap", "duplicate", "drop_first_chunk",
])
def test_stream_tampering(tmp_path, size, change):
    enc = encrypted(tmp_path, payload(size))
    header, chunks = split(enc)
    if change == "truncate_byte":
        data = enc.read_bytes()[:-1]
    elif change == "drop_last_chunk":
        data = header + b"".join(chunks[:-1])
    elif change == "header_only":
        data = header
    elif change == "empty":
        data = b""
    elif change == "trailing_garbage":
        data = enc.read_bytes() + b"\0"
    elif change == "trailing_chunk":
        data = enc.read_bytes() + chunks[0]
    elif change == "swap":
        data = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    elif change == "duplicate":
        data = header + chunks[0] + b"".join(chunks)
    else:
        data = header + b"".join(chunks[1:])
    enc.write_bytes(data)
    assert_refused(tmp_path, enc, match="could not be decrypted|not a fleet.checkpoint encrypted archive")


def test_is_encrypted(tmp_path):
    enc = encrypted(tmp_path, b"data")
    assert is_encrypted(str(enc))
    assert not is_encrypted(str(tmp_path / "plain"))
    (tmp_path / "empty").write_bytes(b"")
    assert not is_encrypted(str(tmp_path / "empty"))


@pytest.mark.parametrize("offset,value", [
    (0, b"X"), (7, b"\x03"), (8, b"\x02"), (8, b"\x00"), (9, b"\x09"), (9, b"\x15"), (10, b"\x00"), (10, b"\x11"),
    (11, b"\x00"), (11, b"\x05"), (35, struct.pack(">I", 4095)), (35, struct.pack(">I", (16 << 20) + 1)),
])
def test_bad_header_values(tmp_path, offset, value):
    enc = encrypted(tmp_path, b"data")
    data = bytearray(enc.read_bytes())
    data[offset:offset + len(value)] = value
    enc.write_bytes(bytes(data))
    assert_refused(tmp_path, enc, match="not a fleet.checkpoint encrypted archive or an unsupported version")


@pytest.mark.parametrize("log2n,r,p", [(20, 16, 4), (14, 8, 1), (10, 9, 1), (10, 8, 2)])
def test_a_scrypt_cost_other_than_ours_is_refused_before_any_work(tmp_path, log2n, r, p):
    """The header is authenticated only with the first chunk: its scrypt cost (up to about 2 GiB of memory and seconds
    of work with log2N=20, r=16, p=4) used to be taken from it as it was, before any tag was checked."""
    enc = encrypted(tmp_path, b"data")
    data = bytearray(enc.read_bytes())
    data[9:12] = bytes([log2n, r, p])
    enc.write_bytes(bytes(data))
    started = time.monotonic()
    assert_refused(tmp_path, enc, match="not a fleet.checkpoint encrypted archive or an unsupported version")
    assert time.monotonic() - started < 1


def test_plain_file_and_short_file_refused(tmp_path):
    plain = tmp_path / "plain.tar"
    plain.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    assert_refused(tmp_path, plain, match="not a fleet.checkpoint encrypted archive")
    plain.write_bytes(MAGIC + b"\x01\x0f")
    assert_refused(tmp_path, plain, match="not a fleet.checkpoint encrypted archive")


def test_chunk_size_range(tmp_path):
    (tmp_path / "plain").write_bytes(b"data")
    for size in (4095, (16 << 20) + 1):
        with pytest.raises(CryptoError, match="chunk size"):
            encrypt_file(str(tmp_path / "plain"), str(tmp_path / "enc"), SECRET, chunk_size=size)
    assert not (tmp_path / "enc").exists()


def test_counter_overflow_removes_output(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto, "_MAX_CHUNKS", 2)
    (tmp_path / "plain").write_bytes(payload(2 * CHUNK + 1))
    with pytest.raises(CryptoError, match="too large for this format"):
        encrypt_file(str(tmp_path / "plain"), str(tmp_path / "enc"), SECRET, chunk_size=CHUNK)
    assert not (tmp_path / "enc").exists()


def test_short_secret_refused(tmp_path):
    (tmp_path / "plain").write_bytes(b"data")
    with pytest.raises(CryptoError, match="at least 16 bytes"):
        encrypt_file(str(tmp_path / "plain"), str(tmp_path / "enc"), b"short", chunk_size=CHUNK)
    assert not (tmp_path / "enc").exists()


def test_require_cryptography(monkeypatch):
    require_cryptography()
    # The library is imported on first use only: a missing one is an import that fails.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(CryptoError, match="install the python3-cryptography package .* or pip install cryptography"):
        require_cryptography()
    with pytest.raises(CryptoError, match="python3-cryptography"):
        encrypt_file("/nonexistent", "/nonexistent.enc", SECRET)


def test_normalize_secret_key():
    assert normalize_secret(key="a passphrase of 16+") == b"a passphrase of 16+"
    with pytest.raises(CryptoError, match="encryption_key is too short: use at least 16 characters"):
        normalize_secret(key="fifteen chars!!")


def test_normalize_secret_exactly_one(tmp_path):
    with pytest.raises(CryptoError, match="exactly one"):
        normalize_secret()
    with pytest.raises(CryptoError, match="exactly one"):
        normalize_secret(key="a passphrase of 16+", key_file=str(tmp_path / "key"))


def key_file(tmp_path, content, mode=0o600):
    path = tmp_path / "key"
    path.write_bytes(content)
    os.chmod(path, mode)
    return str(path)


def test_normalize_secret_key_file(tmp_path):
    assert normalize_secret(key_file=key_file(tmp_path, b"0123456789abcdef\n")) == b"0123456789abcdef"
    assert normalize_secret(key_file=key_file(tmp_path, b"0123456789abcdef\n\n")) == b"0123456789abcdef\n"
    assert normalize_secret(key_file=key_file(tmp_path, b"0123456789abcdef", 0o400)) == b"0123456789abcdef"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_normalize_secret_key_file_permissions(tmp_path, mode):
    path = key_file(tmp_path, b"0123456789abcdef\n", mode)
    with pytest.raises(CryptoError, match="group or others") as info:
        normalize_secret(key_file=path)
    assert f"chmod 600 {path}" in str(info.value)
    assert "0123456789abcdef" not in str(info.value)


def test_normalize_secret_key_file_problems(tmp_path):
    with pytest.raises(CryptoError, match="does not exist"):
        normalize_secret(key_file=str(tmp_path / "missing"))
    with pytest.raises(CryptoError, match="not a regular file"):
        normalize_secret(key_file=str(tmp_path))
    with pytest.raises(CryptoError, match="fewer than 16 bytes"):
        normalize_secret(key_file=key_file(tmp_path, b"0123456789abcde\n"))


def test_the_context_is_stored_authenticated_and_returned(tmp_path):
    """Issue 20, finding 4: what an archive is for (its container and checkpoint) is in the authenticated header."""
    source = tmp_path / "plain"
    source.write_bytes(b"memory" * 1000)
    enc = tmp_path / "plain.enc"
    context = b'{"checkpoint": "cp", "container": "billing"}'
    encrypt_file(str(source), str(enc), SECRET, chunk_size=CHUNK, context=context)
    assert decrypt_file(str(enc), str(tmp_path / "first"), SECRET) == context
    # Another container's name in its place: the header no longer authenticates.
    forged = enc.read_bytes().replace(b"billing", b"payroll")
    (tmp_path / "forged.enc").write_bytes(forged)
    assert_refused(tmp_path, tmp_path / "forged.enc")
    with pytest.raises(CryptoError, match="at most 1024"):
        encrypt_file(str(source), str(tmp_path / "big.enc"), SECRET, context=b"x" * 1025)


def test_a_version_1_archive_is_still_read_and_says_it_has_no_context(tmp_path):
    """0.1.0 wrote FLEETCK\\x01 headers without a context: decrypt_file reads them and returns None."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = b"old archive" * 100
    salt, prefix = os.urandom(16), os.urandom(7)
    header = struct.pack(">8sBBBB16s7sI", crypto.MAGIC_V1, 1, 10, 8, 1, salt, prefix, CHUNK)
    aead = AESGCM(hashlib.scrypt(SECRET, salt=salt, n=2 ** 10, r=8, p=1, dklen=32))
    (tmp_path / "v1.enc").write_bytes(header + aead.encrypt(prefix + b"\0\0\0\0\1", data, header))
    assert is_encrypted(str(tmp_path / "v1.enc"))
    assert decrypt_file(str(tmp_path / "v1.enc"), str(tmp_path / "out"), SECRET) is None
    assert (tmp_path / "out").read_bytes() == data


def test_a_context_length_beyond_the_file_or_the_limit_is_refused(tmp_path):
    enc = encrypted(tmp_path, b"data")
    data = bytearray(enc.read_bytes())
    data[39:41] = struct.pack(">H", 2000)
    enc.write_bytes(bytes(data))
    assert_refused(tmp_path, enc, match="not a fleet.checkpoint encrypted archive")
