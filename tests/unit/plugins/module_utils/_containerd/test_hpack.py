# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Tests for _hpack: the decoder against RFC 7541 Appendix C, Huffman codes against Appendix B, errors."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import hpack as hp


def raises_exactly(cls, func, *args, match=None, **kwargs):
    """The exception ``func`` raises, which must be of class ``cls`` itself, not of a subclass."""
    with pytest.raises(cls, match=match) as info:
        func(*args, **kwargs)
    assert info.value.__class__ is cls, repr(info.value)
    return info.value


# --------------------------------------------------------------------------
# HPACK: RFC 7541 Appendix C
# --------------------------------------------------------------------------

REQ = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
     ("cache-control", "no-cache")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
     ("custom-key", "custom-value")],
]
REQ_TABLE = [(":authority", "www.example.com"), ("cache-control", "no-cache"), ("custom-key", "custom-value")]
DATE1, DATE2 = "Mon, 21 Oct 2013 20:13:21 GMT", "Mon, 21 Oct 2013 20:13:22 GMT"
LOC = "https://www.example.com"
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESP = [
    [(":status", "302"), ("cache-control", "private"), ("date", DATE1), ("location", LOC)],
    [(":status", "307"), ("cache-control", "private"), ("date", DATE1), ("location", LOC)],
    [(":status", "200"), ("cache-control", "private"), ("date", DATE2), ("location", LOC),
     ("content-encoding", "gzip"), ("set-cookie", COOKIE)],
]
# The dynamic table (newest first) and its size after each response block.
RESP_TABLES = [
    ([("location", LOC), ("date", DATE1), ("cache-control", "private"), (":status", "302")], 222),
    ([(":status", "307"), ("location", LOC), ("date", DATE1), ("cache-control", "private")], 222),
    ([("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE2)], 215),
]

C3 = ["828684410f7777772e6578616d706c652e636f6d",
      "828684be58086e6f2d6361636865",
      "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"]
C4 = ["828684418cf1e3c2e5f23a6ba0ab90f4ff",
      "828684be5886a8eb10649cbf",
      "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]
C5 = ["4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032"
      "303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f"
      "6d",
      "4803333037c1c0bf",
      "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a"
      "04677a69707738666f6f3d4153444a4b48514b425a584f5157454f5049554158515745"
      "4f49553b206d61782d6167653d333630303b2076657273696f6e3d31"]
C6 = ["488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1b"
      "ff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
      "4883640effc1c0bf",
      "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94"
      "e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f958731606"
      "5c003ed4ee5b1063d5007"]


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3", "C.4-huffman"])
def test_hpack_requests(blocks):
    dec = hp.HpackDecoder()
    for block, expected in zip(blocks, REQ):
        assert dec.decode(bytes.fromhex(block)) == expected
    assert dec.dynamic == REQ_TABLE[::-1]
    assert dec.size == 164


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5", "C.6-huffman"])
def test_hpack_responses_with_eviction(blocks):
    dec = hp.HpackDecoder(max_table_size=256)
    for block, expected, (table, size) in zip(blocks, RESP, RESP_TABLES):
        assert dec.decode(bytes.fromhex(block)) == expected
        assert dec.dynamic == table
        assert dec.size == size


def test_hpack_table_size_update_and_errors():
    dec = hp.HpackDecoder()
    dec.decode(bytes.fromhex(C3[0]))
    assert dec.size == 57
    # A size update to 0 (0x20) empties the table, then one back to 4096 (0x3fe11f).
    assert dec.decode(b"\x20\x3f\xe1\x1f\x82") == [(":method", "GET")]
    assert dec.dynamic == [] and dec.max_size == 4096
    for block, match in ((b"\x3f\xe2\x1f", "exceeds 4096"), (b"\xbe", "index 62 out of range"),
                         (b"\x80", "index 0"), (b"\x82\x20", "after a header field"),
                         (b"\x00\x05ab", "truncated string"), (b"\x7f", "truncated integer"),
                         (b"\x7f\xff\xff\xff\xff\xff\x01", "integer too large")):
        raises_exactly(hp.HpackError, dec.decode, block, match=match)


def test_hpack_encode_roundtrip():
    headers = [(":path", "/a/b"), ("x" * 200, "y" * 300)]
    assert hp.HpackDecoder().decode(hp.hpack_encode(headers)) == headers


# --------------------------------------------------------------------------
# Huffman
# --------------------------------------------------------------------------

def huffman_encode(data):
    """A reference encoder: the codes concatenated, padded with ones."""
    bits = nbits = 0
    for byte in data:
        code, length = hp._HUFFMAN_CODES[byte]
        bits = (bits << length) | code
        nbits += length
    pad = -nbits % 8
    bits = (bits << pad) | ((1 << pad) - 1)
    return bits.to_bytes((nbits + pad) // 8, "big")


def test_huffman_known_codes():
    codes = hp._HUFFMAN_CODES
    # Spot checks against RFC 7541 Appendix B.
    assert codes[0] == (0x1ff8, 13)
    assert codes[ord(" ")] == (0x14, 6)
    assert codes[ord("0")] == (0x0, 5)
    assert codes[ord("a")] == (0x3, 5)
    assert codes[ord("{")] == (0x7ffe, 15)
    assert codes[255] == (0x3ffffee, 26)
    assert codes[256] == (0x3fffffff, 30)  # EOS
    assert huffman_encode(b"www.example.com") == bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")


@pytest.mark.parametrize("text", [
    b"", b"a", b"application/grpc", b"grpc-status", b'container "nosuch" in namespace "moby": not found',
    bytes(range(256)), b"\xff\x00%~|"])
def test_huffman_roundtrip(text):
    assert hp.huffman_decode(huffman_encode(text)) == text


@pytest.mark.parametrize("data, match", [
    (b"\x00", "padding"),  # '0' then padding of zeros
    (b"\xff\xff\xff\xff", "EOS"),
    (b"\xff", "padding"),  # 8 bits of padding
])
def test_huffman_bad_strings(data, match):
    raises_exactly(hp.HpackError, hp.huffman_decode, data, match=match)
