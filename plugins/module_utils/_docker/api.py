# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A minimal client for the Docker Engine API over a unix socket or plain TCP.

The collection needs a handful of raw endpoints (some of them experimental, which the Docker SDK does not wrap),
and a client with no dependency on the managed host keeps the hosts' requirements to Python alone. It speaks just
the HTTP/1.1 the Engine answers with (one request per connection, a Content-Length or chunked body): Python's
http.client would cost every module run ~25 ms of imports (the email package) for nothing more.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO, TypeAlias, TypedDict

    JSONValue: TypeAlias = Any
    """A decoded Engine API answer: any JSON (object, array, string, number, bool) or None for an empty body."""
    JSONDict: TypeAlias = dict[str, Any]
    """A decoded JSON object, such as the answer of /info or /containers/ID/json."""
    Address: TypeAlias = tuple[str, str] | tuple[str, tuple[str, int]]
    """What parse_docker_host returns: ('unix', path) or ('tcp', (host, port))."""

    class RunningContainer(TypedDict):
        """One value of DockerAPI.running_containers()."""

        name: str
        pid: int | None
        started_at: str | None

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_MAX_LINE = 65536
_MAX_HEADERS = 100


class DockerAPIError(Exception):
    """The Engine answered with an error status, or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BadResponse(OSError):
    """What came back is not the HTTP this client understands."""


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise BadResponse("a response line is too long")
    if not line:
        raise BadResponse("the connection closed before the response was complete")
    return line.rstrip(b"\r\n")


def _headers(reader: BinaryIO) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _count in range(_MAX_HEADERS + 1):
        line = _line(reader)
        if not line:
            return headers
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadResponse(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raise BadResponse(f"more than {_MAX_HEADERS} headers")


def _exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise BadResponse(f"the body ended after {len(data)} of {size} bytes")
    return data


def _chunked(reader: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"malformed chunk size {size_text[:20]!r}") from None
        if size == 0:
            _headers(reader)  # trailers, if any, up to the blank line
            return b"".join(parts)
        parts.append(_exactly(reader, size))
        if _line(reader):
            raise BadResponse("a chunk is not followed by CRLF")


def read_response(reader: BinaryIO, method: str = "GET") -> tuple[int, bytes]:
    """(status, body bytes) of one HTTP/1.x response read from a binary file object."""
    while True:
        parts = _line(reader).split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP response: {b' '.join(parts)[:80]!r}")
        status = int(parts[1])
        headers = _headers(reader)
        if status >= 200:
            break  # 1xx (100 Continue): the real answer follows
    if method == "HEAD" or status in (204, 304):
        return status, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, _chunked(reader)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadResponse(f"malformed Content-Length {headers['content-length']!r}") from None
        return status, _exactly(reader, length)
    return status, reader.read()  # the body ends with the connection (Connection: close)


def parse_docker_host(docker_host: str | None) -> Address:
    """Return ('unix', path) or ('tcp', (host, port)) for a docker_host URL; raise ValueError when unsupported."""
    if not docker_host:
        docker_host = DEFAULT_DOCKER_HOST
    if docker_host.startswith("unix://"):
        path = docker_host[len("unix://"):]
        if not path.startswith("/"):
            raise ValueError(f"docker_host {docker_host!r}: a unix socket path must be absolute, e.g. {DEFAULT_DOCKER_HOST}")
        return "unix", path
    if docker_host.startswith(("tcp://", "http://")):
        parsed = urllib.parse.urlsplit(docker_host)
        if not parsed.hostname:
            raise ValueError(f"docker_host {docker_host!r}: no host name")
        return "tcp", (parsed.hostname, parsed.port or 2375)
    raise ValueError(
        f"docker_host {docker_host!r} is not supported: use unix:///path/to/docker.sock or tcp://host:port "
        "(TLS is not supported; reach a remote engine through Ansible's own connection instead)"
    )


class DockerAPI:
    """Engine API requests returning decoded JSON. Paths are unversioned: the daemon serves its own API version."""

    kind: str  # 'unix' or 'tcp'
    address: str | tuple[str, int]  # a socket path for 'unix', (host, port) for 'tcp'

    def __init__(self, docker_host: str | None = None, timeout: float = 60) -> None:
        self.docker_host = docker_host or DEFAULT_DOCKER_HOST
        self.kind, self.address = parse_docker_host(self.docker_host)
        self.timeout = timeout

    def _connect(self, timeout: float) -> socket.socket:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            return sock
        if not isinstance(self.address, tuple):  # not reached: kind 'tcp' has a (host, port) address
            raise DockerAPIError(f"{self.docker_host}: not a tcp address")
        return socket.create_connection(self.address, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: JSONValue = None,
        timeout: float | None = None,
    ) -> JSONValue:
        """Send one request; return the decoded JSON body (None when empty). Raise DockerAPIError on failure."""
        path = urllib.parse.quote(path, safe="/:@")  # a name with a space or a control character stays one path
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        payload = b""
        head = [f"{method} {path} HTTP/1.1", "Host: docker", "Connection: close"]
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            head.append("Content-Type: application/json")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(payload)}")
        wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
        try:
            sock = self._connect(timeout or self.timeout)
            try:
                sock.sendall(wire)
                with sock.makefile("rb") as reader:
                    status, raw = read_response(reader, method)
            finally:
                sock.close()
        except OSError as exc:
            raise DockerAPIError(f"cannot reach the Docker Engine at {self.docker_host}: {exc}") from exc
        text = raw.decode("utf-8", errors="replace")
        if status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise DockerAPIError(f"{method} {path}: {status} {message.strip()}", status=status)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def get(self, path: str, **query: Any) -> JSONValue:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: JSONValue = None, timeout: float | None = None, **query: Any) -> JSONValue:
        return self.request("POST", path, query=query or None, body=body, timeout=timeout)

    def delete(self, path: str, **query: Any) -> JSONValue:
        return self.request("DELETE", path, query=query or None)

    def info(self) -> JSONDict:
        return self.get("/info")

    def ping(self, timeout: float = 5) -> bool:
        """True when the daemon answers /_ping."""
        try:
            return self.request("GET", "/_ping", timeout=timeout) == "OK"
        except DockerAPIError:
            return False

    def running_containers(self) -> dict[str, RunningContainer]:
        """Running containers as {id: {'name', 'pid', 'started_at'}} (one inspect per container)."""
        result: dict[str, RunningContainer] = {}
        for summary in self.get("/containers/json") or []:
            try:
                details = self.get(f"/containers/{summary['Id']}/json")
            except DockerAPIError as exc:
                if exc.status == 404:  # gone in between
                    continue
                raise
            state = details.get("State") or {}
            if not state.get("Running"):
                continue
            result[summary["Id"]] = {
                "name": details.get("Name", "").lstrip("/"),
                "pid": state.get("Pid"),
                "started_at": state.get("StartedAt"),
            }
        return result
