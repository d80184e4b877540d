# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending end of a stream that the controller relays (send_to.via=relay), for hosts that cannot reach each other.

The sender listens on a root-only Unix socket on the source and waits for the controller's relay
(fleet.checkpoint.stream_relay) to connect to it: the relay runs `ssh <source> python3 -c BRIDGE <socket>` and
`ssh <target> python3 -c stream.RELAY <fifo>` and joins the two connections with pipes, so the stream goes from the
dump to the restore waiting on the target without landing on the controller, in its memory or on its disk. The far
side's "ready" and "done" come back the same way; the rest is stream.py's protocol, unchanged.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Mapping

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.stream import (
    StreamError,
    send_precopy,
    write_segment,
)

# Runs on the source under the relay's SSH login (kept to what Python 3.6 understands): connect to the sender's socket
# (a sender that is still starting is given until the deadline), then copy the socket to stdout (the stream, out to
# the controller) and stdin to the socket (the target's answers, back).
BRIDGE = r"""
import errno, os, socket, sys, threading, time
path, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while True:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        break
    except OSError as exc:
        sock.close()
        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.time() > deadline:
            sys.exit("fleet.checkpoint: nothing sends at %s on this host (%s): start the sending checkpoint "
                     "(state=present with send_to.via=relay) first" % (path, exc.strerror))
        time.sleep(0.1)
def back():
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
answers = threading.Thread(target=back, daemon=True)
answers.start()
try:
    while os.splice(sock.fileno(), 1, 1048576):  # socket to SSH's pipe without a copy through Python (3.10+)
        pass
except (AttributeError, OSError):
    while True:
        data = sock.recv(1048576)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
# The stream's end, out to the target (sshd passes it on once stdout and stderr are both closed); its "done" still
# has to come back.
os.close(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
answers.join()
"""


def socket_name(container: str, checkpoint: str) -> str:
    """The sender's socket's file name in send_to.directory on the source."""
    return f"{container}-{checkpoint}.send"


class SocketSender:
    """A root-only Unix socket at `path` that the controller's relay connects to; then fed the checkpoint like a
    stream.Sender."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: socket.socket | None = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.lexists(path):
            os.unlink(path)  # a sender killed earlier left it
        umask = os.umask(0o177)  # the socket is made 0600 (and chmod'ed again below)
        try:
            self.listener.bind(path)
            os.chmod(path, 0o600)
            self.listener.listen(1)
        except OSError as exc:
            self.abort()
            raise StreamError(f"cannot listen at {path}: {exc}") from exc
        finally:
            os.umask(umask)

    def wait_ready(self, seconds: float) -> None:
        """Wait for the relay to connect and the restore on the target to answer "ready"; raise StreamError when it
        does not within `seconds` - before anything is dumped."""
        deadline = time.monotonic() + seconds
        self.listener.settimeout(seconds)
        try:
            conn = self.listener.accept()[0]
        except OSError as exc:  # socket.timeout is an OSError
            self.abort()
            raise StreamError(f"the controller's relay did not connect to {self.path} within {seconds}s "
                              f"({exc or 'timed out'})") from exc
        self.conn = conn
        self._unlink()  # one relay only
        line = b""
        while True:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                byte = conn.recv(1)
            except OSError:
                byte = b""
            if not byte:
                self.abort()
                raise StreamError("the relayed connection ended before the target was ready (the controller's relay "
                                  "reports why)" if time.monotonic() < deadline
                                  else f"no answer from the target within {seconds}s")
            line += byte
            if byte == b"\n":
                if line == b"ready\n":
                    conn.settimeout(None)
                    return
                line = b""  # a login's shell start-up files may print something first

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def abort(self) -> None:
        """Nothing to send after all: the far side sees an empty stream and gives up."""
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()
        self._unlink()

    def _cut(self) -> None:
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_more(self, manifest: Mapping[str, Any], disk_sources: Mapping[str, Any], timeout: float) -> dict[str, float]:
        """A first segment (the disk state's pre-copy), like stream.Sender.send_more."""
        if self.conn is None:
            raise StreamError("the relay is not connected")
        try:
            return send_precopy(self.conn.fileno(), manifest, disk_sources, timeout, self._cut)
        except OSError as exc:
            self.abort()
            raise StreamError(f"sending the pre-copy through the controller's relay failed: {exc}") from exc

    def send(self, source_dir: str, manifest: Mapping[str, Any], timeout: float,
             disk_sources: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Stream the checkpoint; returns {'bytes', 'seconds', 'started_at'}, like stream.Sender.send."""
        if self.conn is None:
            raise StreamError("the relay is not connected")
        started_at, begin = time.time(), time.monotonic()
        timer = threading.Timer(timeout, self._cut)
        timer.start()
        try:
            sent = write_segment(self.conn.fileno(), source_dir, manifest, disk_sources)
            self.conn.shutdown(socket.SHUT_WR)
            answer = b""
            while True:
                data = self.conn.recv(4096)
                if not data:
                    break
                answer += data[:4096 - len(answer)]
        except OSError as exc:
            if time.monotonic() - begin >= timeout:
                raise StreamError(f"the transfer did not finish within timeout={timeout}s") from exc
            raise StreamError(f"sending through the controller's relay failed: {exc}") from exc
        finally:
            timer.cancel()
            self.abort()
        if b"done\n" not in answer.splitlines(keepends=True):
            if time.monotonic() - begin >= timeout:
                raise StreamError(f"the transfer did not finish within timeout={timeout}s")
            raise StreamError("the target did not confirm that the stream arrived whole (the controller's relay "
                              "reports why)")
        return {"bytes": sent, "seconds": round(time.monotonic() - begin, 3), "started_at": round(started_at, 3)}
