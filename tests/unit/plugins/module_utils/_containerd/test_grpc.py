# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Tests for _containerd.grpc: the CheckpointTaskRequest bytes against a ctr capture, and HTTP/2 and gRPC handling
against a scripted fake server on a unix socket (HPACK itself: test_hpack)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import grpc as cg
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import hpack as hp
from ansible_collections.fleet.checkpoint.tests.unit.plugins.module_utils._containerd.test_hpack import huffman_encode


def raises_exactly(cls, func, *args, match=None, **kwargs):
    """The exception ``func`` raises, which must be of class ``cls`` itself, not of a subclass."""
    with pytest.raises(cls, match=match) as info:
        func(*args, **kwargs)
    assert info.value.__class__ is cls, repr(info.value)
    return info.value


# --------------------------------------------------------------------------
# CheckpointTaskRequest
# --------------------------------------------------------------------------

URL = b"containerd.runc.v1.CheckpointOptions"  # 36 octets


def test_checkpoint_request_hand_derived():
    options = b"\x08\x01" + b"\x42\x05/ckpt"  # exit = 1, image_path = 8
    any_ = b"\x0a\x24" + URL + b"\x12\x09" + options  # 49 = 0x31 octets
    assert cg.encode_checkpoint_request("cpt1", image_path="/ckpt", exit_task=True) == b"\x0a\x04cpt1\x1a\x31" + any_
    assert cg.encode_checkpoint_request("cpt1", "") == b"\x0a\x04cpt1\x1a\x26\x0a\x24" + URL  # empty options: omitted


# The gRPC message `ctr task checkpoint --exit --image-path /tmp/grpc/ckpt/ctr --work-path /tmp/grpc/ckpt/work cpt1`
# wrote (containerd 1.6.20), captured with strace.
CTR_CAPTURE = bytes.fromhex(
    "0a04637074311a530a24636f6e7461696e6572642e72756e632e76312e436865636b"
    "706f696e744f7074696f6e73122b080142122f746d702f677270632f636b70742f63"
    "74724a132f746d702f677270632f636b70742f776f726b")
WORK_PATH = b"\x4a\x13/tmp/grpc/ckpt/work"  # its last field, work_path (9), sent only when a work path is given


def test_checkpoint_request_matches_ctr_capture():
    assert cg.encode_checkpoint_request("cpt1", image_path="/tmp/grpc/ckpt/ctr", exit_task=True,
                                        work_path="/tmp/grpc/ckpt/work") == CTR_CAPTURE
    assert CTR_CAPTURE.endswith(WORK_PATH)
    capture = bytearray(CTR_CAPTURE[:-len(WORK_PATH)])
    # Without it, the two lengths that enclose it shrink: the Any's (options = 3) and its value's (2).
    assert capture[6] == 0x1a and capture[8:10] == b"\x0a\x24" and capture[46] == 0x12
    capture[7] -= len(WORK_PATH)
    capture[47] -= len(WORK_PATH)
    assert cg.encode_checkpoint_request("cpt1", image_path="/tmp/grpc/ckpt/ctr", exit_task=True) == capture


# --------------------------------------------------------------------------
# HTTP/2 and gRPC against a scripted fake server
# --------------------------------------------------------------------------

def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream) + payload


def read_exact(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def lit(name, value):
    """An HPACK literal with incremental indexing and a Huffman-coded value."""
    enc = huffman_encode(value.encode())
    return b"\x40" + bytes([len(name)]) + name.encode() + bytes([0x80 | len(enc)]) + enc


def grpc_message(payload, compressed=0):
    return bytes([compressed]) + struct.pack(">I", len(payload)) + payload


OK_HEADERS = b"\x88" + lit("content-type", "application/grpc")  # :status 200
OK_TRAILERS = lit("grpc-status", "0") + lit("grpc-message", "")


class FakeServer:
    """A unix-socket HTTP/2 server in a daemon thread: reads the client's preface and frames up to its END_STREAM
    DATA frame, runs ``script(conn, server)``, then records what the client sends until it closes."""

    def __init__(self, tmp_path, script):
        self.path = str(tmp_path / "fake.sock")
        self.script = script
        self.preface = b""
        self.frames = []
        self.error = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def next_frame(self, conn):
        head = read_exact(conn, 9)
        ftype, flags, stream = struct.unpack(">BBI", head[3:])
        got = (ftype, flags, stream, read_exact(conn, int.from_bytes(head[:3], "big")))
        self.frames.append(got)
        return got

    def run(self):
        try:
            with self.listener:
                conn = self.listener.accept()[0]
            with conn:
                conn.settimeout(5)
                self.preface = read_exact(conn, 24)
                while True:
                    ftype, flags = self.next_frame(conn)[:2]
                    if ftype == 0 and flags & 1:
                        break
                self.script(conn, self)
                try:
                    while True:
                        self.next_frame(conn)
                except (EOFError, OSError):
                    pass
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc  # raised again by join()

    def join(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error

    def sent(self, ftype):
        return [got for got in self.frames if got[0] == ftype]


def answer(*frames):
    """A script that sends these frames, then closes its side."""
    def script(conn, _srv):
        conn.sendall(b"".join(frames))
        conn.shutdown(socket.SHUT_WR)
    return script


def ok_answer(payload=b""):
    return answer(frame(1, 0x04, 1, OK_HEADERS), frame(0, 0, 1, grpc_message(payload)),
                  frame(1, 0x05, 1, OK_TRAILERS))


@pytest.fixture
def sends(monkeypatch):
    """Every write of the connection, in order (the writes still go out)."""
    written = []
    real_send = cg._Connection.send

    def spy(conn, data):
        written.append(data)
        return real_send(conn, data)

    monkeypatch.setattr(cg._Connection, "send", spy)
    return written


def test_checkpoint_is_one_write_and_sends_no_grpc_timeout(tmp_path, sends):
    writes = sends
    srv = FakeServer(tmp_path, ok_answer())
    assert cg.checkpoint(srv.path, "moby", "cpt1", image_path="/ckpt", exit_task=True, timeout=5) is None
    srv.join()
    settings, headers, data = srv.frames[:3]
    assert writes[0] == srv.preface + b"".join(frame(*got) for got in (settings, headers, data))
    assert srv.preface == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert settings == (4, 0, 0, b"\x00\x02\x00\x00\x00\x00")  # ENABLE_PUSH = 0
    assert headers[:3] == (1, 0x04, 1)
    assert hp.HpackDecoder().decode(headers[3]) == [
        (":method", "POST"), (":scheme", "http"), (":path", "/containerd.services.tasks.v1.Tasks/Checkpoint"),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("containerd-namespace", "moby")]  # no grpc-timeout
    assert data == (0, 0x01, 1, grpc_message(cg.encode_checkpoint_request("cpt1", "/ckpt", exit_task=True)))
    assert writes[1:] == [frame(7, 0, 0, bytes(8))] == [frame(*got) for got in srv.frames[3:]]  # GOAWAY on close


@pytest.mark.parametrize("request_size, namespace", [(16380, None), (0, "n" * 16384)], ids=["body", "headers"])
def test_a_request_larger_than_one_frame_is_refused_before_connecting(tmp_path, request_size, namespace):
    with pytest.raises(ValueError, match="request too large"):
        cg.call(str(tmp_path / "none.sock"), "/svc/M", b"x" * request_size, namespace=namespace, timeout=1)


def test_padding_priority_continuation_and_control_frames(tmp_path):
    message = b"\x0a\x03abc"
    body = grpc_message(message)

    def script(conn, _srv):
        conn.sendall(frame(4, 0, 0, struct.pack(">HI", 4, 1 << 20)) +  # SETTINGS
                     frame(8, 0, 0, struct.pack(">I", 1000)) +  # WINDOW_UPDATE
                     frame(6, 0, 0, b"12345678") +  # PING
                     frame(2, 0, 1, b"\x00\x00\x00\x00\x10") +  # PRIORITY
                     frame(4, 1, 0))  # SETTINGS ACK
        # HEADERS, PADDED and PRIORITY, without END_HEADERS; then a CONTINUATION.
        conn.sendall(frame(1, 0x08 | 0x20, 1, b"\x03" + b"\x00\x00\x00\x00\x10" + OK_HEADERS[:3] + b"\x00" * 3) +
                     frame(9, 0x04, 1, OK_HEADERS[3:]))
        # DATA, padded and split in two frames, around a frame for another stream.
        conn.sendall(frame(0, 0x08, 1, b"\x02" + body[:4] + b"\x00\x00") + frame(0, 0, 3, b"ignored") +
                     frame(0, 0, 1, body[4:]))
        # The trailers: HEADERS with END_STREAM, then two CONTINUATIONs.
        conn.sendall(frame(1, 0x01, 1, OK_TRAILERS[:2]) + frame(9, 0, 1, OK_TRAILERS[2:5]) +
                     frame(9, 0x04, 1, OK_TRAILERS[5:]))

    srv = FakeServer(tmp_path, script)
    assert cg.call(srv.path, "/svc/M", b"\x08\x01", timeout=5) == message
    srv.join()
    assert srv.frames[2][3] == grpc_message(b"\x08\x01")
    assert srv.frames[3:] == [(4, 1, 0, b""), (6, 1, 0, b"12345678"), (7, 0, 0, bytes(8))]  # acks, GOAWAY


@pytest.mark.parametrize("frames", [
    [frame(1, 0x05, 1, OK_HEADERS + lit("grpc-status", "5") + lit("grpc-message", "no %22such%22 thing %E2%9C%93"))],
    [frame(1, 0x04, 1, OK_HEADERS),
     frame(1, 0x05, 1, lit("grpc-status", "5") + lit("grpc-message", "no %22such%22 thing %E2%9C%93"))],
], ids=["trailers-only", "headers-and-trailers"])
def test_an_error_answer_is_a_grpc_error(tmp_path, frames):
    srv = FakeServer(tmp_path, answer(*frames))
    err = raises_exactly(cg.GrpcError, cg.call, srv.path, "/svc/M", b"", timeout=5)
    srv.join()
    assert (err.code, err.code_name, err.grpc_message) == (5, "NOT_FOUND", 'no "such" thing \u2713')
    assert str(err) == 'grpc-status 5 (NOT_FOUND): no "such" thing \u2713'


def test_a_graceful_goaway_still_lets_our_stream_finish(tmp_path):
    srv = FakeServer(tmp_path, answer(frame(7, 0, 0, struct.pack(">II", 1, 0)), frame(1, 0x04, 1, OK_HEADERS),
                                      frame(0, 0, 1, grpc_message(b"ok")), frame(1, 0x05, 1, OK_TRAILERS)))
    assert cg.call(srv.path, "/svc/M", b"", timeout=5) == b"ok"
    srv.join()


# grpc-go's graceful drain writes GOAWAY(math.MaxUint32) through x/net/http2, which masks it to 0x7fffffff; a server
# that does not mask sends 0xffffffff, whose reserved bit must be ignored (RFC 9113 6.8).
@pytest.mark.parametrize("first_last_id", [0x7fffffff, 0xffffffff], ids=["grpc-go", "reserved-bit"])
def test_grpc_go_graceful_drain(tmp_path, first_last_id):
    def script(conn, srv):
        conn.sendall(frame(7, 0, 0, struct.pack(">II", first_last_id, 0)) + frame(6, 0, 0, b"drainpng"))
        while srv.next_frame(conn)[:2] != (6, 1):  # grpc-go waits for the PING ACK, then sends the real GOAWAY
            pass
        conn.sendall(frame(7, 0, 0, struct.pack(">II", 1, 0)) + frame(1, 0x04, 1, OK_HEADERS) +
                     frame(0, 0, 1, grpc_message(b"")) + frame(1, 0x05, 1, OK_TRAILERS))
        conn.shutdown(socket.SHUT_WR)

    srv = FakeServer(tmp_path, script)
    assert cg.checkpoint(srv.path, "moby", "cpt1", "/ckpt", timeout=5) is None
    srv.join()
    assert srv.sent(6) == [(6, 1, 0, b"drainpng")]


def test_a_goaway_whose_last_stream_id_is_zero_but_for_the_reserved_bit_refuses_our_stream(tmp_path):
    srv = FakeServer(tmp_path, answer(frame(7, 0, 0, struct.pack(">II", 0x80000000, 0))))
    raises_exactly(cg.NotConnected, cg.call, srv.path, "/svc/M", b"", timeout=5, match="last stream id 0:")
    srv.join()


@pytest.mark.parametrize("size, error", [(60 << 10, None), ((60 << 10) + 1, "answer larger than 61440 octets")])
def test_the_answer_is_capped_below_the_window_and_never_credited(tmp_path, size, error):
    body = grpc_message(b"x" * (size - 5))
    chunks = [frame(0, 0, 1, body[pos:pos + 16384]) for pos in range(0, size, 16384)]
    srv = FakeServer(tmp_path, answer(frame(1, 0x04, 1, OK_HEADERS), *chunks, frame(1, 0x05, 1, OK_TRAILERS)))
    if error:
        raises_exactly(cg.ProtocolError, cg.call, srv.path, "/svc/M", b"", timeout=5, match=error)
    else:
        assert cg.call(srv.path, "/svc/M", b"", timeout=5) == body[5:]
    srv.join()
    assert not srv.sent(8)  # no WINDOW_UPDATE


TOO_LONG_HEADERS = [frame(1, 0, 1, b"\x00" * 16384)] + [frame(9, 0, 1, b"\x00" * 16384)] * 4


@pytest.mark.parametrize("frames, error, match", [
    ([frame(7, 0, 0, struct.pack(">II", 0, 0) + b"shutting down")], cg.NotConnected, "GOAWAY .* processed nothing"),
    ([frame(3, 0, 1, struct.pack(">I", 7))], cg.NotConnected, "REFUSED_STREAM.* processed nothing"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(3, 0, 1, struct.pack(">I", 7))], cg.ProtocolError,
     "REFUSED_STREAM.*after it had started"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(7, 0, 0, struct.pack(">II", 0, 0))], cg.ProtocolError,
     "GOAWAY.*after it had started"),
    ([frame(3, 0, 1, struct.pack(">I", 8))], cg.ProtocolError, r"reset the stream \(HTTP/2 error code 8\)"),
    ([frame(7, 0, 0, struct.pack(">II", 1, 2) + b"bye")], cg.ProtocolError, r"closed.*after GOAWAY \(error 2: bye\)"),
    ([frame(1, 0x04, 1, OK_HEADERS)], cg.ProtocolError, "connection closed by the server$"),
    ([frame(1, 0, 1, OK_HEADERS[:2]), frame(0, 0, 1, b"x")], cg.ProtocolError, "expected a CONTINUATION"),
    ([frame(9, 0x04, 1, OK_HEADERS)], cg.ProtocolError, "unexpected CONTINUATION"),
    ([frame(0, 0x01, 1, grpc_message(b""))], cg.ProtocolError, "DATA before HEADERS"),
    ([frame(5, 0x04, 1, struct.pack(">I", 2) + OK_HEADERS)], cg.ProtocolError, "PUSH_PROMISE"),
    ([frame(1, 0x04, 3, OK_HEADERS)], cg.ProtocolError, "stream 3, which we did not open"),
    ([frame(1, 0x04, 1, OK_HEADERS)] * 3, cg.ProtocolError, "more header blocks"),
    ([frame(1, 0x04, 1, b"\xbe")], cg.ProtocolError, "HPACK: index 62 out of range"),
    ([frame(0, 0, 1, bytes(16385))], cg.ProtocolError, "frame of 16385 octets"),
    (TOO_LONG_HEADERS, cg.ProtocolError, "header block larger than 65536"),
    ([frame(1, 0x08 | 0x04, 1, b"\xff" + OK_HEADERS)], cg.ProtocolError, "padding exceeds"),
    ([frame(1, 0x20 | 0x04, 1, b"\x00\x00")], cg.ProtocolError, "too short for its priority"),
    ([frame(1, 0x05, 1, b"\x8d" + lit("grpc-status", "5"))], cg.ProtocolError, "HTTP status 404"),
    ([frame(1, 0x05, 1, OK_HEADERS)], cg.ProtocolError, "without grpc-status"),
    ([frame(1, 0x05, 1, OK_HEADERS + lit("grpc-status", "x"))], cg.ProtocolError, "invalid grpc-status 'x'"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(0, 0, 1, grpc_message(b"", compressed=1)), frame(1, 0x05, 1, OK_TRAILERS)],
     cg.ProtocolError, "compressed"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(0, 0, 1, b"\x00\x00"), frame(1, 0x05, 1, OK_TRAILERS)],
     cg.ProtocolError, "truncated gRPC message prefix"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(0, 0, 1, b"\x00\x00\x00\x00\x09ab"), frame(1, 0x05, 1, OK_TRAILERS)],
     cg.ProtocolError, "truncated gRPC message$"),
    ([frame(1, 0x04, 1, OK_HEADERS), frame(0, 0, 1, grpc_message(b"a") * 2), frame(1, 0x05, 1, OK_TRAILERS)],
     cg.ProtocolError, "expected one response message, got 2"),
    ([frame(1, 0x05, 1, OK_HEADERS + OK_TRAILERS)], cg.ProtocolError, "expected one response message, got 0"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_answers_that_fail(tmp_path, frames, error, match):
    srv = FakeServer(tmp_path, answer(*frames))
    raises_exactly(error, cg.call, srv.path, "/svc/M", b"", timeout=5, match=match)
    srv.join()


@pytest.mark.parametrize("control", [
    (7, 0, 0, b"\x00\x00"),  # GOAWAY shorter than 8 octets
    (3, 0, 1, b"\x00"),  # RST_STREAM shorter than 4 octets
    (6, 0, 0, b"1234"),  # PING shorter than 8 octets
    (4, 0, 0, b"\x00\x02\x00"),  # SETTINGS not a multiple of 6 octets
])
def test_short_control_frames_are_protocol_errors(control):
    raises_exactly(cg.ProtocolError, cg._Connection(None, None).handle_control, *control, match="malformed")


@pytest.mark.parametrize("exc, message", [
    (struct.error("unpack"), "malformed answer from containerd: unpack"),
    (ValueError("bad"), "malformed answer from containerd: bad"),
    (IndexError("index"), "malformed answer from containerd: index"),
    (KeyError("key"), "malformed answer from containerd: 'key'"),
    (hp.HpackError("index 62 out of range"), "malformed answer from containerd: HPACK: index 62 out of range"),
    (TypeError("type"), "unexpected error while reading the answer from containerd: TypeError('type')"),
    (RuntimeError("bug"), "unexpected error while reading the answer from containerd: RuntimeError('bug')"),
    (MemoryError(), "unexpected error while reading the answer from containerd: MemoryError()"),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_an_unparsable_answer_is_a_protocol_error_not_a_stray_exception(tmp_path, monkeypatch, exc, message):
    def broken(blocks, data):
        raise exc
    monkeypatch.setattr(cg, "_answer", broken)
    srv = FakeServer(tmp_path, ok_answer())
    err = raises_exactly(cg.ProtocolError, cg.call, srv.path, "/svc/M", b"", timeout=5)
    srv.join()
    assert str(err) == message and err.__cause__ is exc


def test_a_keyboard_interrupt_is_not_caught(tmp_path, monkeypatch):
    def interrupted(blocks, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(cg, "_answer", interrupted)
    srv = FakeServer(tmp_path, ok_answer())
    with pytest.raises(KeyboardInterrupt):
        cg.call(srv.path, "/svc/M", b"", timeout=5)
    srv.join()


@pytest.mark.parametrize("block, match", [
    (b"\xbe", "HPACK: index 62 out of range"),
    (b"\x88\x40\x01x\x81\x00", "HPACK: invalid Huffman padding"),  # a Huffman value of one zero octet
], ids=["index", "huffman"])
def test_an_hpack_failure_in_a_real_answer_is_a_protocol_error(tmp_path, block, match):
    srv = FakeServer(tmp_path, answer(frame(1, 0x04, 1, block)))
    err = raises_exactly(cg.ProtocolError, cg.call, srv.path, "/svc/M", b"", timeout=5, match=match)
    srv.join()
    assert err.__cause__.__class__ is hp.HpackError


def test_a_send_failure_after_connecting_is_a_protocol_error(tmp_path, monkeypatch):
    """The request may have reached containerd in part or in full: in doubt, not NotConnected."""
    path = str(tmp_path / "closing.sock")
    closed = threading.Event()

    def accept_and_close():
        with listener:
            listener.accept()[0].close()
        closed.set()

    real_sendall = socket.socket.sendall

    def late_sendall(sock, data):
        assert closed.wait(5)
        return real_sendall(sock, data)  # to a closed peer: EPIPE

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(5)
    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    monkeypatch.setattr(socket.socket, "sendall", late_sendall)
    err = raises_exactly(cg.ProtocolError, cg.checkpoint, path, "moby", "cpt1", "/ckpt", timeout=5,
                         match="send failed")
    thread.join(5)
    assert isinstance(err.__cause__, BrokenPipeError)


def test_a_failed_ack_send_still_returns_the_buffered_answer(tmp_path, monkeypatch, sends):
    """The server sends SETTINGS, PING and the whole answer, then closes: our ACKs hit a closed peer."""
    closed = threading.Event()
    real_ack = cg._Connection._ack
    acks = []

    def late_ack(conn, data):
        assert closed.wait(5)
        acks.append(data)
        return real_ack(conn, data)

    def script(conn, _srv):
        conn.sendall(frame(4, 0, 0) + frame(6, 0, 0, b"12345678") + frame(1, 0x04, 1, OK_HEADERS) +
                     frame(0, 0, 1, grpc_message(b"")) + frame(1, 0x05, 1, OK_TRAILERS))
        conn.close()
        closed.set()

    monkeypatch.setattr(cg._Connection, "_ack", late_ack)
    srv = FakeServer(tmp_path, script)
    assert cg.checkpoint(srv.path, "moby", "cpt1", "/ckpt", timeout=5) is None
    srv.join()
    # The SETTINGS ACK failed (EPIPE); the PING ACK and the closing GOAWAY were not attempted.
    assert acks == [frame(4, 1, 0), frame(6, 1, 0, b"12345678")] and len(sends) == 2 and sends[1] == acks[0]


def test_a_non_empty_checkpoint_response_is_a_protocol_error(tmp_path):
    """containerd ignored the image path and answered with descriptors of a checkpoint in its content store."""
    descriptor = b"\x0a\x0c\x0a\x0aapplication"  # CheckpointTaskResponse.descriptors (1), truncated: any octets
    srv = FakeServer(tmp_path, ok_answer(descriptor))
    err = raises_exactly(cg.ProtocolError, cg.checkpoint, srv.path, "moby", "cpt1", "/ckpt", timeout=5,
                         match="answered with checkpoint descriptors .* instead of writing to the image path /ckpt")
    srv.join()
    assert "in doubt" in str(err)


@pytest.mark.parametrize("image_path", ["", None])
def test_checkpoint_without_an_image_path_is_refused_before_connecting(tmp_path, image_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "listening.sock")
    with listener:
        listener.bind(path)
        listener.listen(1)
        raises_exactly(ValueError, cg.checkpoint, path, "moby", "cpt1", image_path, timeout=1,
                       match="image_path is required")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # a unix connect is queued at once: none was made
            listener.accept()


def test_timeout_is_deadline_exceeded(tmp_path):
    srv = FakeServer(tmp_path, lambda conn, srv: time.sleep(1.0))
    started = time.monotonic()
    err = raises_exactly(cg.DeadlineExceeded, cg.call, srv.path, "/svc/M", b"", timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert "deadline exceeded" in str(err)
    srv.join()


def test_connect_failure_is_not_connected(tmp_path):
    err = raises_exactly(cg.NotConnected, cg.checkpoint, str(tmp_path / "none.sock"), "moby", "c", "/ckpt", timeout=1)
    assert "cannot connect" in str(err)
