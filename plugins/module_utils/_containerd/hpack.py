# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HPACK (RFC 7541) for one HTTP/2 connection, with the Python standard library only.

A full decoder (static and dynamic tables, Huffman coding, table size updates), and an encoder that only writes
literals without indexing and without Huffman coding, so the peer's dynamic table is left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TypeAlias

    Header: TypeAlias = tuple[str, str]
    """A header field: (name, value). Decoded octets are latin-1 characters, one per octet."""


class HpackError(ValueError):
    """A header block or Huffman string that cannot be decoded."""


# Appendix A: index i + 1 is _STATIC_TABLE[i].
_STATIC_TABLE: list[Header] = [(name, "") for name in (
    ":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status", ":status", ":status",
    ":status", ":status", ":status", ":status", "accept-charset", "accept-encoding", "accept-language",
    "accept-ranges", "accept", "access-control-allow-origin", "age", "allow", "authorization", "cache-control",
    "content-disposition", "content-encoding", "content-language", "content-length", "content-location",
    "content-range", "content-type", "cookie", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "link", "location",
    "max-forwards", "proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after",
    "server", "set-cookie", "strict-transport-security", "transfer-encoding", "user-agent", "vary", "via",
    "www-authenticate")]
for _index, _value in ((2, "GET"), (3, "POST"), (4, "/"), (5, "/index.html"), (6, "http"), (7, "https"), (8, "200"),
                       (9, "204"), (10, "206"), (11, "304"), (12, "400"), (13, "404"), (14, "500"),
                       (16, "gzip, deflate")):
    _STATIC_TABLE[_index - 1] = (_STATIC_TABLE[_index - 1][0], _value)
del _index, _value

# Appendix B is a canonical Huffman code (codes of one length are consecutive in symbol order, shorter codes first),
# so the code length of each symbol (0-255, and EOS = 256) defines it. Length L is stored as chr(ord('A') + L - 5).
_HUFFMAN_LENGTHS = (
    "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCC"
    "CCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSS"
    "SSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQ"
    "VWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ")
_HUFFMAN_EOS = 256


def _huffman_code() -> tuple[list[tuple[int, int]], dict[tuple[int, int], int]]:
    """The (code, length) of each symbol, and {(length, code): symbol}."""
    lengths = [ord(char) - ord("A") + 5 for char in _HUFFMAN_LENGTHS]
    codes = [(0, 0)] * len(lengths)
    code = previous = 0
    for rank, symbol in enumerate(sorted(range(len(lengths)), key=lambda s: (lengths[s], s))):
        if rank:
            code = (code + 1) << (lengths[symbol] - previous)
        previous = lengths[symbol]
        codes[symbol] = (code, previous)
    return codes, {(length, code): symbol for symbol, (code, length) in enumerate(codes)}


_HUFFMAN_CODES, _HUFFMAN_SYMBOLS = _huffman_code()


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded HPACK string (bytes to bytes)."""
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            symbol = _HUFFMAN_SYMBOLS.get((length, code))
            if symbol == _HUFFMAN_EOS:
                raise HpackError("EOS symbol in a Huffman string")
            if symbol is not None:
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise HpackError("invalid Huffman code")
    if length > 7 or code != (1 << length) - 1:  # the padding: fewer than 8 bits, all ones (a prefix of EOS)
        raise HpackError("invalid Huffman padding")
    return bytes(out)


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_encode(headers: Iterable[Header]) -> bytes:
    """(name, value) pairs as literal fields without indexing, literal names, no Huffman: the server's dynamic
    table is left alone."""
    out = bytearray()
    for field in headers:
        out.append(0)
        for text in field:
            data = text.encode("utf-8")
            out += _hpack_int(len(data), 7) + data
    return bytes(out)


class HpackDecoder:
    """HPACK decoder of one connection (the dynamic table spans all its header blocks)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        self.max_allowed = max_table_size  # what we advertise (4096: the default); the encoder may use less
        self.max_size = max_table_size
        self.size = 0
        self.dynamic: list[Header] = []  # newest first

    def _evict(self) -> None:
        while self.size > self.max_size:
            name, value = self.dynamic.pop()
            self.size -= len(name) + len(value) + 32

    def _lookup(self, index: int) -> Header:
        if index <= 0:
            raise HpackError("index 0 is invalid")
        if index <= len(_STATIC_TABLE):
            return _STATIC_TABLE[index - 1]
        if index - len(_STATIC_TABLE) > len(self.dynamic):
            raise HpackError(f"index {index} out of range")
        return self.dynamic[index - len(_STATIC_TABLE) - 1]

    @staticmethod
    def _int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        if pos >= len(data):
            raise HpackError("truncated integer")
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data):
                raise HpackError("truncated integer")
            byte = data[pos]
            pos += 1
            value += (byte & 0x7f) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos
            if shift > 28:
                raise HpackError("integer too large")

    def _str(self, data: bytes, pos: int) -> tuple[str, int]:
        huffman = pos < len(data) and data[pos] & 0x80
        length, pos = self._int(data, pos, 7)
        if pos + length > len(data):
            raise HpackError("truncated string")
        raw = data[pos:pos + length]
        # latin-1 keeps each octet as one character: lossless, and len() is the octet count the table size needs.
        return (huffman_decode(raw) if huffman else raw).decode("latin-1"), pos + length

    def decode(self, block: bytes | bytearray) -> list[Header]:
        """Decode one complete header block into a list of (name, value)."""
        data = bytes(block)
        pos = 0
        headers: list[Header] = []
        while pos < len(data):
            byte = data[pos]
            if byte & 0x80:  # 6.1 indexed field
                index, pos = self._int(data, pos, 7)
                headers.append(self._lookup(index))
            elif byte & 0xe0 == 0x20:  # 6.3 dynamic table size update
                if headers:
                    raise HpackError("table size update after a header field")
                size, pos = self._int(data, pos, 5)
                if size > self.max_allowed:
                    raise HpackError(f"table size {size} exceeds {self.max_allowed}")
                self.max_size = size
                self._evict()
            else:  # 6.2 literal field, with incremental indexing (0x40) or not
                indexing = byte & 0xc0 == 0x40
                index, pos = self._int(data, pos, 6 if indexing else 4)
                if index:
                    name = self._lookup(index)[0]
                else:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                if indexing:
                    self.dynamic.insert(0, (name, value))
                    self.size += len(name) + len(value) + 32
                    self._evict()  # an entry larger than the table empties it
                headers.append((name, value))
        return headers
