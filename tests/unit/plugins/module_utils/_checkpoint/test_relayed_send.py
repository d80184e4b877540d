# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A checkpoint stream relayed by the controller, on real sockets, pipes and FIFOs: the sender's socket, the bridge
(run on the source), the controller's relay and the relay into the receiver's FIFO (run on the target) are the real
code; only the two SSH hops are left out (each end's command runs here directly)."""

from __future__ import annotations

import os
import stat
import sys
import threading

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import relayed_send, stream, stream_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build
from ansible_collections.fleet.checkpoint.plugins.plugin_utils import _ssh_relay as ssh_relay

INSPECT = {"Id": "ab" * 32, "Name": "/web", "Image": "sha256:" + "c" * 64, "Config": {"Image": "busybox"},
           "HostConfig": {"RestartPolicy": {"Name": "always"}}}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.0"}


@pytest.fixture
def checkpoint(tmp_path):
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "pages-1.img").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    (cp / "core-1.img").write_bytes(b"core")
    return cp, build("move", INSPECT, file_inventory(str(cp)), VERSIONS, "containerd", 1763900000.0)


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def bridge(path, wait=10):
    return [sys.executable, "-c", relayed_send.BRIDGE, str(path), str(wait)]


# What sshd does with a command's output: its end of file goes out only once the command's stdout AND stderr are both
# closed. A bridge that kept stderr open after its stream ended hung every relayed migration on the lab.
SSHD_LIKE = r"""
import os, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
def drain(src, dst):
    while True:
        data = os.read(src, 65536)
        if not data:
            return
        os.write(dst, data)
err = threading.Thread(target=drain, args=(child.stderr.fileno(), 2))
err.start()
drain(child.stdout.fileno(), 1)
err.join()
os.close(1)
sys.exit(child.wait())
"""


def bridge_behind_sshd(path, wait=10):
    return [sys.executable, "-c", SSHD_LIKE] + bridge(path, wait)


def relay(path, wait=10):
    return [sys.executable, "-c", stream.RELAY, str(path), str(wait)]


def sending(sock, cp, manifest, out, timeout=60):
    """The source's docker_checkpoint: listen, wait for ready, send (in a thread, as it runs beside the relay)."""
    def run():
        sender = relayed_send.SocketSender(str(sock))
        try:
            sender.wait_ready(20)
            out.update(sender.send(str(cp), manifest, timeout))
        except stream.StreamError as exc:
            out["error"] = str(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_relayed_stream_arrives_whole_and_the_sender_knows(checkpoint, tmp_path):
    cp, manifest = checkpoint
    sock, fifo = tmp_path / "web-move.send", tmp_path / "web-move.stream"
    reader = stream_receive.FifoReader(str(fifo))
    received = {}

    def receive():
        reader.wait(30)
        received["manifest"] = stream_receive.receive(reader, str(tmp_path / "in"))
        reader.close()
    receiver = threading.Thread(target=receive)
    receiver.start()
    out = {}
    sender = sending(sock, cp, manifest, out)
    relayed = ssh_relay.run(bridge_behind_sshd(sock), relay(fifo), 60)
    sender.join(30)
    receiver.join(30)
    assert "error" not in out, out
    assert relayed["source_rc"] == 0 and relayed["target_rc"] == 0, relayed
    assert out["bytes"] == reader.count > 5 * 1024 * 1024
    assert relayed["bytes"] == len(stream.stream_preamble(manifest)) + out["bytes"]  # the length said first
    assert relayed["bytes_back"] == len(b"ready\ndone\n")
    assert tree(tmp_path / "in") == tree(cp) and received["manifest"]["files"] == manifest["files"]
    assert not sock.exists(), "the sender's socket is removed once the relay is in"
    # Memory stays flat: the relay holds a pipe's worth, not the stream (5 MiB here, the limit far below any checkpoint).
    assert relayed["peak_rss"]["relay"] > 0 and relayed["peak_rss"]["ssh"] > 0


def test_the_sockets_are_root_only(tmp_path):
    sender = relayed_send.SocketSender(str(tmp_path / "a-b.send"))
    try:
        st = os.stat(tmp_path / "a-b.send")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    finally:
        sender.abort()
    assert not (tmp_path / "a-b.send").exists()


def test_no_restore_waiting_stops_the_sender_before_it_sends(checkpoint, tmp_path):
    cp, manifest = checkpoint
    sock = tmp_path / "web-move.send"
    out = {}
    sender = sending(sock, cp, manifest, out)
    relayed = ssh_relay.run(bridge(sock), relay(tmp_path / "nobody.stream", wait=1), 60)
    sender.join(30)
    assert "ended before the target was ready" in out["error"], out
    assert relayed["target_rc"] != 0 and "nothing is receiving" in relayed["target_stderr"], relayed


def test_no_sender_fails_the_relay_in_time(tmp_path):
    fifo = tmp_path / "web-move.stream"
    reader = stream_receive.FifoReader(str(fifo))
    try:
        relayed = ssh_relay.run(bridge(tmp_path / "web-move.send", wait=1), relay(fifo), 60)
    finally:
        reader.close()
    assert relayed["source_rc"] != 0 and "nothing sends at" in relayed["source_stderr"], relayed


def test_a_target_that_dies_mid_stream_fails_the_sender(checkpoint, tmp_path):
    cp, manifest = checkpoint
    sock = tmp_path / "web-move.send"
    out = {}
    sender = sending(sock, cp, manifest, out)
    # The target takes 1 MiB, says ready, then is gone (a cut connection, a killed restore): no "done".
    cut = [sys.executable, "-c", "import os, sys; os.write(1, b'ready\\n'); sys.stdin.buffer.read(1 << 20)"]
    relayed = ssh_relay.run(bridge(sock), cut, 60)
    sender.join(30)
    assert "error" in out and ("failed" in out["error"] or "did not confirm" in out["error"]), out
    assert relayed["bytes"] < sum(entry["size"] for entry in manifest["files"].values())


def test_the_relay_is_cut_after_its_timeout(tmp_path):
    relayed = ssh_relay.run([sys.executable, "-c", "import time; time.sleep(60)"],
                            [sys.executable, "-c", "import sys; sys.stdin.read()"], 1)
    assert relayed["timed_out"] is True and relayed["seconds"] < 30


def test_one_way_relay_keeps_the_target_output(tmp_path):
    payload = os.urandom(3 * 1024 * 1024)
    (tmp_path / "src").write_bytes(payload)
    relayed = ssh_relay.run(["cat", str(tmp_path / "src")],
                            ["sh", "-c", f"cat > {tmp_path / 'dst'}; echo Loaded image ID: x"], 60,
                            answers_back=False)
    assert relayed["source_rc"] == relayed["target_rc"] == 0
    assert (tmp_path / "dst").read_bytes() == payload and relayed["bytes"] == len(payload)
    assert relayed["target_stdout"] == "Loaded image ID: x"
