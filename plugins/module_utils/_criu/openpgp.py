# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fingerprint of an OpenPGP public key (RFC 4880, version 4), to check a downloaded apt signing key against the
one expected, without gpg on the host."""

from __future__ import annotations

import base64
import binascii
import hashlib


class OpenPGPError(ValueError):
    """Not an OpenPGP public key this module can read."""


def dearmor(data: bytes) -> bytes:
    """The binary packets of an armored key (or the data itself when it is binary already)."""
    text = data.strip()
    if not text.startswith(b"-----BEGIN PGP"):
        return data
    lines = text.splitlines()
    body, started = [], False
    for line in lines[1:]:
        line = line.strip()
        if line.startswith(b"-----END"):
            break
        if not started:
            if not line:
                started = True  # the headers end at the first empty line
            elif b":" not in line:
                started = True
                body.append(line)
            continue
        if line.startswith(b"="):  # the CRC24 checksum
            break
        body.append(line)
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OpenPGPError(f"the armored key cannot be decoded: {exc}") from exc


def _first_packet(data: bytes) -> tuple[int, bytes]:
    """(tag, body) of the first packet."""
    if not data or not data[0] & 0x80:
        raise OpenPGPError("not an OpenPGP packet")
    first = data[0]
    if first & 0x40:  # new format
        tag, pos = first & 0x3F, 1
        if pos >= len(data):
            raise OpenPGPError("truncated packet header")
        octet = data[pos]
        if octet < 192:
            length, pos = octet, pos + 1
        elif octet < 224:
            if pos + 1 >= len(data):
                raise OpenPGPError("truncated packet header")
            length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
        elif octet == 255:
            length, pos = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
        else:
            raise OpenPGPError("a partial-length packet cannot hold a public key")
    else:  # old format
        tag, kind = (first >> 2) & 0x0F, first & 0x03
        sizes = {0: 1, 1: 2, 2: 4}
        if kind not in sizes:
            raise OpenPGPError("an indeterminate-length packet cannot hold a public key")
        length = int.from_bytes(data[1:1 + sizes[kind]], "big")
        pos = 1 + sizes[kind]
    body = data[pos:pos + length]
    if len(body) != length:
        raise OpenPGPError("truncated packet")
    return tag, body


def fingerprint(key: bytes) -> str:
    """The version 4 fingerprint (40 hex digits, upper case) of the primary key of an armored or binary key."""
    tag, body = _first_packet(dearmor(key))
    if tag != 6:
        raise OpenPGPError(f"the first packet is not a public key (tag {tag})")
    if not body or body[0] != 4:
        raise OpenPGPError(f"a version {body[0] if body else '?'} key: only version 4 fingerprints are checked")
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()  # nosec - RFC 4880 v4


def normalize(value: str) -> str:
    """A fingerprint as given by a user ('0x...', spaces allowed) in the form fingerprint() returns."""
    text = value.replace(" ", "").upper()
    return text[2:] if text.startswith("0X") else text
