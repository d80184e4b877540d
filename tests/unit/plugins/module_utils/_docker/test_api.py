# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Engine API client against a fake Engine on a unix socket (the one thing unit tests may fake)."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import socketserver
import tempfile
import threading

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import (
    BadResponse,
    DockerAPI,
    DockerAPIError,
    parse_docker_host,
    read_response,
)

CONTAINERS = {
    "aaa": {"Name": "/web", "State": {"Running": True, "Pid": 101, "StartedAt": "2026-11-23T10:00:00Z"}},
    "bbb": {"Name": "/gone", "State": {"Running": True, "Pid": 102, "StartedAt": "2026-11-23T10:00:00Z"}},
    "ccc": {"Name": "/stopped", "State": {"Running": False, "Pid": 0, "StartedAt": "2026-11-23T10:00:00Z"}},
}


class FakeEngine(http.server.BaseHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        FakeEngine.requests.append(("GET", self.path, None))
        if self.path == "/_ping":
            return self.reply(200, b"OK")
        if self.path == "/info":
            return self.reply(200, {"ServerVersion": "26.1.5", "ExperimentalBuild": False})
        if self.path == "/containers/json":
            return self.reply(200, [{"Id": cid} for cid in CONTAINERS])
        if self.path.startswith("/containers/") and self.path.endswith("/json"):
            cid = self.path.split("/")[2]
            if cid == "bbb":
                return self.reply(404, {"message": "No such container: bbb"})
            return self.reply(200, CONTAINERS[cid])
        return self.reply(404, {"message": f"page not found: {self.path}"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        FakeEngine.requests.append(("POST", self.path, body))
        if self.path.startswith("/containers/web/checkpoints"):
            return self.reply(201, b"")
        return self.reply(500, {"message": "experimental mode is off"})


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine():
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "docker.sock")
    server = UnixServer(path, FakeEngine)
    server.get_request = lambda: (server.socket.accept()[0], ("local", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeEngine.requests = []
    yield DockerAPI(f"unix://{path}", timeout=5)
    server.shutdown()
    server.server_close()
    os.unlink(path)
    os.rmdir(directory)


def test_info_and_ping(engine):
    assert engine.info()["ExperimentalBuild"] is False
    assert engine.ping() is True


def test_error_status_carries_the_engine_message(engine):
    with pytest.raises(DockerAPIError) as err:
        engine.post("/containers/x/start")
    assert err.value.status == 500
    assert "experimental mode is off" in str(err.value)


def test_post_sends_json_and_query(engine):
    assert engine.post("/containers/web/checkpoints", body={"CheckpointID": "c1", "Exit": True}) is None
    method, path, body = FakeEngine.requests[-1]
    assert (method, path, json.loads(body)) == ("POST", "/containers/web/checkpoints", {"CheckpointID": "c1", "Exit": True})
    with pytest.raises(DockerAPIError, match="404"):
        engine.request("GET", "/info", query={"a": "b c"})
    assert FakeEngine.requests[-1][1] == "/info?a=b+c"


def test_running_containers_skips_stopped_and_vanished_ones(engine):
    assert engine.running_containers() == {
        "aaa": {"name": "web", "pid": 101, "started_at": "2026-11-23T10:00:00Z"},
    }


def test_unreachable_socket_is_a_clear_error(tmp_path):
    api = DockerAPI(f"unix://{tmp_path}/nothing.sock", timeout=1)
    with pytest.raises(DockerAPIError, match="cannot reach the Docker Engine"):
        api.info()
    assert api.ping() is False


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ("unix", "/var/run/docker.sock")),
        ("unix:///run/docker.sock", ("unix", "/run/docker.sock")),
        ("tcp://10.0.0.1:2375", ("tcp", ("10.0.0.1", 2375))),
        ("tcp://docker", ("tcp", ("docker", 2375))),
    ],
)
def test_parse_docker_host(value, expected):
    assert parse_docker_host(value) == expected


@pytest.mark.parametrize("value", ["unix://relative.sock", "ssh://host", "https://host:2376", "tcp://"])
def test_parse_docker_host_refuses_what_it_cannot_do(value):
    with pytest.raises(ValueError):
        parse_docker_host(value)


def _read(raw, method="GET"):
    return read_response(io.BytesIO(raw), method)


def test_response_with_content_length():
    assert _read(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nApi-Version: 1.45\r\n\r\n{}\r\nignored") == (200, b"{}\r\n")


def test_chunked_response_is_joined():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n[1,\r\n2\r\n2]\r\n0\r\nTrailer: x\r\n\r\n"
    assert _read(raw) == (200, b"[1,2]")


def test_continue_is_skipped_and_no_length_reads_to_the_end():
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nServer: x\r\n\r\nbody to eof"
    assert _read(raw) == (201, b"body to eof")


def test_no_body_for_204_and_head():
    assert _read(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n") == (204, b"")
    assert _read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD") == (200, b"")


@pytest.mark.parametrize("raw, error", [
    (b"", "closed before the response was complete"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended after 5 of 10 bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 101 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", "too long"),
])
def test_malformed_responses_are_refused(raw, error):
    with pytest.raises(BadResponse, match=error):
        _read(raw)


def test_a_malformed_answer_is_an_unreachable_engine(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer():
        conn = server.accept()[0]
        conn.recv(65536)
        conn.sendall(b"garbage\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with pytest.raises(DockerAPIError, match="cannot reach the Docker Engine.*not an HTTP response") as err:
        DockerAPI(f"unix://{path}", timeout=5).info()
    assert err.value.status is None
    thread.join(5)
    server.close()


def test_names_are_quoted_into_one_path(engine):
    with pytest.raises(DockerAPIError, match="404"):
        engine.get("/images/a b\r\nX: y/history")
    assert FakeEngine.requests[-1][1] == "/images/a%20b%0D%0AX:%20y/history"
    with pytest.raises(DockerAPIError, match="404"):
        engine.get("/images/registry:5000/app@sha256:0123/json")  # as the Docker SDK sends image references
    assert FakeEngine.requests[-1][1] == "/images/registry:5000/app@sha256:0123/json"
