# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A minimal client for the Docker Engine API over a unix socket or plain TCP.

The collection needs a handful of raw endpoints (some of them experimental, which the Docker SDK does not wrap),
and a client with no dependency on the managed host keeps the hosts' requirements to Python alone.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class DockerAPIError(Exception):
    """The Engine answered with an error status, or could not be reached (status None)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def parse_docker_host(docker_host):
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

    def __init__(self, docker_host=None, timeout=60):
        self.docker_host = docker_host or DEFAULT_DOCKER_HOST
        self.kind, self.address = parse_docker_host(self.docker_host)
        self.timeout = timeout

    def _connection(self, timeout):
        if self.kind == "unix":
            return _UnixHTTPConnection(self.address, timeout)
        return http.client.HTTPConnection(self.address[0], self.address[1], timeout=timeout)

    def request(self, method, path, query=None, body=None, timeout=None):
        """Send one request; return the decoded JSON body (None when empty). Raise DockerAPIError on failure."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        payload = None
        headers = {"Host": "docker"}
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout or self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerAPIError(f"cannot reach the Docker Engine at {self.docker_host}: {exc}") from exc
        finally:
            conn.close()
        text = raw.decode("utf-8", errors="replace")
        if response.status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise DockerAPIError(f"{method} {path}: {response.status} {message.strip()}", status=response.status)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def get(self, path, **query):
        return self.request("GET", path, query=query or None)

    def post(self, path, body=None, timeout=None, **query):
        return self.request("POST", path, query=query or None, body=body, timeout=timeout)

    def delete(self, path, **query):
        return self.request("DELETE", path, query=query or None)

    def info(self):
        return self.get("/info")

    def ping(self, timeout=5):
        """True when the daemon answers /_ping."""
        try:
            return self.request("GET", "/_ping", timeout=timeout) == "OK"
        except DockerAPIError:
            return False

    def running_containers(self):
        """Running containers as {id: {'name', 'pid', 'started_at'}} (one inspect per container)."""
        result = {}
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
