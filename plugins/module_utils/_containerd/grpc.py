# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""containerd's Tasks.Checkpoint over its unix socket, with the Python standard library only (no grpcio, no protobuf).

One unary gRPC call per connection: HTTP/2 with prior knowledge, stream 1. The request (a few hundred octets) goes out
in one write: client preface, SETTINGS, one HEADERS frame, one DATA frame. The answer is read with a full HPACK decoder
(`_hpack`: containerd's Go server uses the dynamic table and Huffman coding) and is capped below the default
flow-control window, so no WINDOW_UPDATE is ever sent. The timeout is ours only: no grpc-timeout is sent, since
containerd would pass it on to the shim, and runc would be killed in the middle of a dump.

Once the request may have reached containerd, every failure is a ContainerdGrpcError, never a stray exception: the
caller must know whether the dump is in doubt.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.hpack import HpackDecoder, HpackError, hpack_encode

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn, TypeAlias

    from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.hpack import Header

    Frame: TypeAlias = tuple[int, int, int, bytes]
    """An HTTP/2 frame as read: (type, flags, stream id, payload)."""


class ContainerdGrpcError(Exception):
    """Base class of every error raised here."""


class NotConnected(ContainerdGrpcError):
    """containerd processed nothing: the socket took no connection, or the server refused our stream before
    processing it (GOAWAY with a last stream id below ours, or RST_STREAM REFUSED_STREAM before any answer)."""


class ProtocolError(ContainerdGrpcError):
    """The answer could not be read (transport, HTTP/2, HPACK or gRPC framing, any other reset or failure), or was
    not the expected one: the request may have been processed, and may still be running."""


class DeadlineExceeded(ContainerdGrpcError):
    """Our timeout passed before the answer came: the server may still be working on the request."""


class GrpcError(ContainerdGrpcError):
    """containerd answered with a non-OK grpc-status."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.code_name = GRPC_CODES.get(code, f"CODE_{code}")
        self.grpc_message = message
        super().__init__(f"grpc-status {code} ({self.code_name}): {message}")


GRPC_CODES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
    11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}

# --------------------------------------------------------------------------
# HTTP/2 (RFC 9113), the client side of one stream
# --------------------------------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
(_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE,
 _CONTINUATION) = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_REFUSED_STREAM = 0x7
_STREAM_ID = 1  # the only stream we open
_MAX_FRAME = 16384  # the default SETTINGS_MAX_FRAME_SIZE, both ways: we never change it
_MAX_HEADER_BLOCK = 64 << 10
_MAX_ANSWER = 60 << 10  # DATA octets: below the default 65535 window, so we never have to credit any


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream_id) + payload


def _strip(flags: int, payload: bytes, headers: bool) -> bytes:
    """A DATA or HEADERS payload without its padding (and a HEADERS frame's priority fields)."""
    pad = 0
    if flags & _PADDED:
        if not payload:
            raise ProtocolError("HTTP/2: padded frame without a pad length")
        pad, payload = payload[0], payload[1:]
    if headers and flags & _PRIORITY_FLAG:
        if len(payload) < 5:
            raise ProtocolError("HTTP/2: HEADERS frame too short for its priority fields")
        payload = payload[5:]  # stream dependency (4) and weight (1)
    if pad > len(payload):
        raise ProtocolError("HTTP/2: padding exceeds the frame payload")
    return payload[:len(payload) - pad]


class _Connection:
    """One HTTP/2 connection over a connected socket, for one request on stream 1."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.hpack = HpackDecoder()
        self.answered = False  # a frame of our stream came: no refusal can prove it unprocessed any more
        self.goaway = ""
        self.writable = True  # False once a send of ours has failed: the rest may be a partial frame

    def _settimeout(self) -> None:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("deadline exceeded")
            self.sock.settimeout(remaining)

    def send(self, data: bytes) -> None:
        self._settimeout()
        try:
            self.sock.sendall(data)
        except socket.timeout as exc:
            raise DeadlineExceeded("deadline exceeded while sending") from exc
        except OSError as exc:
            raise ProtocolError(f"send failed: {exc}") from exc

    def _ack(self, frame: bytes) -> None:
        """Send a SETTINGS or PING ACK. A failure is ignored, and stops further sends: the answer may already be
        buffered, and reading tells whether it is."""
        if self.writable:
            try:
                self.send(frame)
            except (ProtocolError, DeadlineExceeded):
                self.writable = False

    def _read(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._settimeout()
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as exc:
                raise DeadlineExceeded("deadline exceeded while waiting for the server") from exc
            except OSError as exc:
                raise ProtocolError(f"receive failed: {exc}") from exc
            if not chunk:
                raise ProtocolError(f"connection closed by the server{self.goaway}")
            self.buf += chunk
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def read_frame(self) -> Frame:
        head = self._read(9)
        length = int.from_bytes(head[:3], "big")
        if length > _MAX_FRAME:
            raise ProtocolError(f"HTTP/2 frame of {length} octets exceeds SETTINGS_MAX_FRAME_SIZE")
        ftype, flags, stream_id = struct.unpack(">BBI", head[3:])
        return ftype, flags, stream_id & 0x7fffffff, self._read(length)

    def _refused(self, what: str) -> NoReturn:
        if not self.answered:
            raise NotConnected(f"{what}: containerd processed nothing")
        raise ProtocolError(f"{what}, after it had started to answer")

    def handle_control(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> bool:
        """Process a frame that is not part of our stream's answer; False for one that is."""
        if ftype == _SETTINGS:
            if flags & _ACK:
                return True
            if stream_id or len(payload) % 6:
                raise ProtocolError("HTTP/2: malformed SETTINGS")
            self._ack(_frame(_SETTINGS, _ACK, 0))
        elif ftype == _PING:
            if len(payload) != 8:
                raise ProtocolError("HTTP/2: malformed PING")
            if not flags & _ACK:
                self._ack(_frame(_PING, _ACK, 0, payload))
        elif ftype == _GOAWAY:
            if len(payload) < 8:
                raise ProtocolError("HTTP/2: malformed GOAWAY")
            last_id, code = struct.unpack(">II", payload[:8])
            last_id &= 0x7fffffff  # RFC 9113 6.8: the reserved bit is ignored
            debug = payload[8:].decode("utf-8", "replace")
            self.goaway = f" after GOAWAY (error {code}: {debug})" if debug else f" after GOAWAY (error {code})"
            if last_id < _STREAM_ID:  # streams above last_id were not processed
                self._refused(f"server sent GOAWAY (error {code}) with last stream id {last_id}")
        elif ftype == _RST_STREAM and stream_id == _STREAM_ID:
            if len(payload) != 4:
                raise ProtocolError("HTTP/2: malformed RST_STREAM")
            code = struct.unpack(">I", payload)[0]
            if code == _REFUSED_STREAM:  # RFC 9113 8.7: the stream was not processed
                self._refused("server refused the stream (REFUSED_STREAM)")
            raise ProtocolError(f"server reset the stream (HTTP/2 error code {code})")
        elif ftype == _PUSH_PROMISE:
            raise ProtocolError("HTTP/2: PUSH_PROMISE although push is disabled")
        elif ftype in (_DATA, _HEADERS, _CONTINUATION) and stream_id == _STREAM_ID:
            self.answered = True
            return False
        elif ftype in (_HEADERS, _CONTINUATION):  # it would desynchronise HPACK
            raise ProtocolError(f"HTTP/2: header block on stream {stream_id}, which we did not open")
        # WINDOW_UPDATE (we send nothing more), PRIORITY, unknown types, other streams' DATA: ignored.
        return True

    def response(self) -> tuple[list[list[Header]], bytes]:
        """Read our stream's answer: (its decoded header blocks, its DATA octets)."""
        # the response headers, then the trailers (one block for a trailers-only answer)
        blocks: list[list[Header]] = []
        data = bytearray()
        received = 0  # DATA payload octets, padding included, as flow control counts them
        pending: tuple[bytearray, int] | None = None  # (header block being assembled, flags of its HEADERS frame)
        while True:
            ftype, flags, stream_id, payload = self.read_frame()
            if pending is not None:
                if ftype != _CONTINUATION or stream_id != _STREAM_ID:
                    raise ProtocolError("HTTP/2: expected a CONTINUATION frame")
                pending[0].extend(payload)
            elif self.handle_control(ftype, flags, stream_id, payload):
                continue
            elif ftype == _HEADERS:
                pending = (bytearray(_strip(flags, payload, True)), flags)
            elif ftype == _DATA:
                if not blocks:
                    raise ProtocolError("HTTP/2: DATA before HEADERS")
                received += len(payload)
                if received > _MAX_ANSWER:
                    raise ProtocolError(f"answer larger than {_MAX_ANSWER} octets")
                data += _strip(flags, payload, False)
                if flags & _END_STREAM:
                    return blocks, bytes(data)
                continue
            else:
                raise ProtocolError("HTTP/2: unexpected CONTINUATION frame")
            if len(pending[0]) > _MAX_HEADER_BLOCK:
                raise ProtocolError(f"HTTP/2: header block larger than {_MAX_HEADER_BLOCK} octets")
            if flags & _END_HEADERS:
                blocks.append(self.hpack.decode(pending[0]))  # decoded even if unused: HPACK state
                if pending[1] & _END_STREAM:
                    return blocks, bytes(data)
                pending = None
                if len(blocks) > 1:
                    raise ProtocolError("HTTP/2: more header blocks than a gRPC answer has")


# --------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------

def _answer(blocks: Sequence[Sequence[Header]], data: bytes) -> bytes:
    """The one response message of a gRPC answer; GrpcError for a non-OK grpc-status."""
    headers, trailers = dict(blocks[0]), dict(blocks[-1])
    if headers.get(":status") != "200":
        raise ProtocolError(f"HTTP status {headers.get(':status', '(missing)')} ({trailers.get('grpc-message', '-')})")
    if "grpc-status" not in trailers:
        raise ProtocolError("answer without grpc-status")
    try:
        status = int(trailers["grpc-status"])
    except ValueError:
        raise ProtocolError(f"invalid grpc-status {trailers['grpc-status']!r}") from None
    message = unquote_to_bytes(trailers.get("grpc-message", "")).decode("utf-8", "replace")
    messages: list[bytes] = []
    pos = 0
    while pos < len(data):  # length-prefixed messages
        if pos + 5 > len(data):
            raise ProtocolError("truncated gRPC message prefix")
        compressed, size = struct.unpack(">BI", data[pos:pos + 5])
        if compressed:
            raise ProtocolError("compressed gRPC message")
        if pos + 5 + size > len(data):
            raise ProtocolError("truncated gRPC message")
        messages.append(data[pos + 5:pos + 5 + size])
        pos += 5 + size
    if status:
        raise GrpcError(status, message)
    if len(messages) != 1:
        raise ProtocolError(f"expected one response message, got {len(messages)}")
    return messages[0]


def call(
    socket_path: str,
    path: str,
    request: bytes | bytearray,
    namespace: str | None = None,
    timeout: float | None = None,
) -> bytes:
    """Make one unary gRPC call to '/package.Service/Method' ``path`` with the serialised ``request``; returns the
    serialised response. ValueError, before connecting, for a request larger than one frame."""
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
               ("content-type", "application/grpc"), ("te", "trailers")]
    if namespace:
        headers.append(("containerd-namespace", namespace))
    block = hpack_encode(headers)
    body = b"\x00" + struct.pack(">I", len(request)) + bytes(request)
    if len(block) > _MAX_FRAME or len(body) > _MAX_FRAME:
        raise ValueError(f"request too large: header block {len(block)}, body {len(body)} octets (max {_MAX_FRAME})")
    wire = (_PREFACE + _frame(_SETTINGS, 0, 0, struct.pack(">HI", 2, 0)) +  # SETTINGS_ENABLE_PUSH = 0
            _frame(_HEADERS, _END_HEADERS, _STREAM_ID, block) + _frame(_DATA, _END_STREAM, _STREAM_ID, body))
    timeout = timeout or None
    deadline = time.monotonic() + timeout if timeout else None
    sock: socket.socket | None = None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise NotConnected(f"cannot connect to {socket_path}: {exc}") from exc
    with sock:
        # Never a stray exception from here on: the request may have been processed, so the dump is in doubt.
        try:
            conn = _Connection(sock, deadline)
            conn.send(wire)
            blocks, data = conn.response()
            if conn.writable:
                try:  # polite close: GOAWAY(last stream 0, NO_ERROR)
                    conn.send(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
                except ContainerdGrpcError:
                    pass
            return _answer(blocks, data)
        except ContainerdGrpcError:
            raise
        except HpackError as exc:
            raise ProtocolError(f"malformed answer from containerd: HPACK: {exc}") from exc
        except (struct.error, ValueError, IndexError, KeyError) as exc:
            raise ProtocolError(f"malformed answer from containerd: {exc}") from exc
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise ProtocolError(f"unexpected error while reading the answer from containerd: {exc!r}") from exc


# --------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------

# The typeurl of containerd.runc.v1.CheckpointOptions: containerd's typeurl uses the bare message name.
CHECKPOINT_OPTIONS_TYPE_URL = "containerd.runc.v1.CheckpointOptions"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _pb_bytes(field: int, value: str | bytes) -> bytes:
    """A length-delimited protobuf field; proto3 omits an empty one."""
    value = value.encode("utf-8") if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(value)) + value if value else b""


def encode_checkpoint_request(container_id: str, image_path: str | None, exit_task: bool = False,
                              work_path: str | None = None) -> bytes:
    """containerd.services.tasks.v1.CheckpointTaskRequest with options = Any(CheckpointOptions), as ctr sends it.
    With a work_path, the runc shim keeps CRIU's work directory there (its dump statistics, stats-dump) instead of
    making and removing one of its own."""
    options = ((b"\x08\x01" if exit_task else b"") + _pb_bytes(8, image_path or "")  # exit = 1, image_path = 8
               + _pb_bytes(9, work_path or ""))  # work_path = 9
    any_ = _pb_bytes(1, CHECKPOINT_OPTIONS_TYPE_URL) + _pb_bytes(2, options)
    return _pb_bytes(1, container_id) + _pb_bytes(3, any_)  # container_id = 1, options = 3


def checkpoint(
    socket_path: str,
    namespace: str | None,
    container_id: str,
    image_path: str,
    exit_task: bool = False,
    timeout: float | None = None,
    work_path: str | None = None,
) -> None:
    """containerd's Tasks.Checkpoint of a runc task: runc writes the CRIU images to ``image_path``; ``exit_task``
    stops the task after the dump. Unlike ctr, the task is not paused around the dump. Returns None.

    ValueError, before connecting, for an empty ``image_path`` (containerd would dump into its content store).
    ProtocolError if containerd answers with checkpoint descriptors: it ignored the image path."""
    if not image_path:
        raise ValueError("image_path is required: without it containerd would dump into its content store")
    response = call(socket_path, "/containerd.services.tasks.v1.Tasks/Checkpoint",
                    encode_checkpoint_request(container_id, image_path, exit_task=exit_task, work_path=work_path),
                    namespace=namespace,
                    timeout=timeout)
    if response:  # with an image path, the CheckpointTaskResponse is empty
        raise ProtocolError(f"containerd answered with checkpoint descriptors ({len(response)} octets) instead of "
                            f"writing to the image path {image_path} (a runtime that ignores it?): the checkpoint "
                            "is in doubt")
