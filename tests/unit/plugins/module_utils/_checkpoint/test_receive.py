# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's receiving end (receive.receive) on a real FIFO and tree, against a fake Docker API: what it
leaves behind when the stream is whole, cut, or not the checkpoint it waits for."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import integrity
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build

CID = "ab" * 32
INSPECT = {"Id": CID, "Name": "/web", "Image": "sha256:" + "c" * 64, "Config": {"Image": "busybox"},
           "HostConfig": {"RestartPolicy": {"Name": "always"}}, "State": {"Running": False}}


class FakeAPI:
    def __init__(self):
        self.deleted = []

    def delete(self, path, **query):
        self.deleted.append((path, query))


class Receiver:
    """A receive of checkpoint `name` into container web on a fake host; the container is created (recorded in
    `created`) from the stream's manifest."""

    def __init__(self, tmp_path, name, monkeypatch):
        self.api = FakeAPI()
        self.ctx = HostContext(api=self.api, root_dir=str(tmp_path / "docker"))
        self.opts = receive.ReceiveOptions(name, str(tmp_path / "in"), 20, force=False, create=True)
        self.created = []
        monkeypatch.setattr(receive, "inspect_or_create", self.inspect_or_create)

    def inspect_or_create(self, ctx, ref, config, origin, create, allowed=None, annotations=None):
        self.created.append((ref, config["name"], origin))
        return INSPECT, True

    def receive(self, ref):
        return receive.receive(self.ctx, ref, self.opts)


@pytest.fixture
def make_ops(monkeypatch):
    def make(tmp_path, name="move"):
        receiver = Receiver(tmp_path, name, monkeypatch)
        return receiver, receiver.created
    return make


@pytest.fixture
def sent(tmp_path):
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "pages-1.img").write_bytes(os.urandom(2 * 1024 * 1024))
    (cp / "core-1.img").write_bytes(b"core")
    manifest = build("move", INSPECT, file_inventory(str(cp)), {"criu": "4.2.1"}, "containerd", 1763900000.0)
    with tempfile.TemporaryFile() as out:
        stream.write_stream(out, str(cp), manifest)
        out.seek(0)
        return cp, out.read()


def feed(fifo, data):
    """The relay, as ssh runs it on the target, writing `data` into the FIFO once the receiver is there (after the
    length a sender says first)."""
    relay = [sys.executable, "-c", stream.RELAY, fifo, "10"]
    framed = b"fleet-stream %d\n" % len(data) + data
    thread = threading.Thread(target=subprocess.run, args=(relay,), kwargs={"input": framed, "capture_output": True})
    thread.start()
    return thread


def test_a_whole_stream_is_installed_root_only_with_its_metadata(tmp_path, sent, make_ops):
    cp, data = sent
    ops, created = make_ops(tmp_path)
    writer = feed(str(tmp_path / "in" / "web-move.stream"), data)
    got = ops.receive("web")
    writer.join(30)
    path = store.checkpoint_dir(str(tmp_path / "docker"), CID, "move")
    assert created == [("web", "web", f"the stream at {tmp_path / 'in' / 'web-move.stream'}")]
    assert got["inspect"] is INSPECT and got["bytes"] == len(data) and got["seconds"] >= 0
    assert (tmp_path / "docker" / "containers" / CID / "checkpoints" / "move" / "pages-1.img").read_bytes() == \
        (cp / "pages-1.img").read_bytes()
    assert store.read_metadata(path)["files"] == file_inventory(str(cp))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert not (tmp_path / "in").exists()  # the FIFO is gone, and the directory made for it
    assert not [name for name in os.listdir(os.path.dirname(path)) if name.startswith(".")]


def test_a_renamed_container_is_awaited_under_the_senders_name_and_created_under_its_own(tmp_path, sent, make_ops):
    _cp, data = sent
    ops, created = make_ops(tmp_path)
    ops.opts = receive.ReceiveOptions("move", ops.opts.directory, 20, create=True, rename={"web": "web-2"})
    fifo = tmp_path / "in" / "web-move.stream"
    writer = feed(str(fifo), data)
    got = ops.receive("web")
    writer.join(30)
    assert created == [("web-2", "web", f"the stream at {fifo}")]  # the manifest's name stays the sender's
    assert got["created"] and got["bytes"] == len(data)


def test_a_cut_stream_removes_the_container_it_created_and_every_file(tmp_path, sent, make_ops):
    _cp, data = sent
    ops, created = make_ops(tmp_path)
    writer = feed(str(tmp_path / "in" / "web-move.stream"), data[: len(data) // 2])
    with pytest.raises(OpError, match="nothing was restored and the container created for it was removed"):
        ops.receive("web")
    writer.join(30)
    assert len(created) == 1 and ops.api.deleted == [(f"/containers/{CID}", {"force": 1})]
    assert not os.path.exists(tmp_path / "docker" / "containers" / CID / "checkpoints")
    assert not (tmp_path / "in").exists()  # made for the FIFO, removed with it


def test_another_checkpoint_is_refused_before_any_container_is_made(tmp_path, sent, make_ops):
    _cp, data = sent
    ops, created = make_ops(tmp_path, name="other")
    writer = feed(str(tmp_path / "in" / "web-other.stream"), data)
    with pytest.raises(OpError, match="holds checkpoint 'move', not 'other'"):
        ops.receive("web")
    writer.join(30)
    assert created == [] and ops.api.deleted == []


def test_nothing_arriving_ends_the_wait_with_nothing_made(tmp_path, make_ops):
    ops, created = make_ops(tmp_path)
    ops.opts = receive.ReceiveOptions("move", ops.opts.directory, 1, create=True)
    with pytest.raises(OpError, match="nothing arrived .* within 1s"):
        ops.receive("web")
    assert created == [] and not (tmp_path / "in").exists()


def test_a_directory_that_was_there_before_stays(tmp_path, sent, make_ops):
    """Only the directory a receive made for its FIFO is removed with it; an existing archive_dir stays as it was."""
    cp, data = sent
    (tmp_path / "in").mkdir(mode=0o700)
    (tmp_path / "in" / "keep").write_bytes(b"mine")
    ops = make_ops(tmp_path)[0]
    writer = feed(str(tmp_path / "in" / "web-move.stream"), data)
    ops.receive("web")
    writer.join(30)
    assert os.listdir(tmp_path / "in") == ["keep"]


def _memory_stream(tmp_path, rounds, says=True):
    """A pre-copy move's stream: `rounds` memory rounds ("more" segments), then the final dump naming them (`says`)."""
    frames = b""
    for number in range(1, rounds + 1):
        images = tmp_path / f"round-{number}"
        images.mkdir()
        (images / "pages-1.img").write_bytes(bytes([number]) * 4096 * (4 - number))
        manifest = build("move", INSPECT, file_inventory(str(images)), {"criu": "4.1"}, "api", 1763900000.0)
        manifest.update(phase="memory", round=number)
        with tempfile.TemporaryFile() as out:
            stream.write_stream(out, str(images), manifest)
            out.seek(0)
            data = out.read()
        frames += b"fleet-stream %d more\n" % len(data) + data
    final = tmp_path / "final"
    final.mkdir()
    (final / "pages-1.img").write_bytes(b"f" * 4096)
    (final / "core-1.img").write_bytes(b"core")
    manifest = build("move", INSPECT, file_inventory(str(final)), {"criu": "4.1"}, "api", 1763900000.0)
    if says:
        manifest["memory_rounds"] = rounds
    with tempfile.TemporaryFile() as out:
        stream.write_stream(out, str(final), manifest)
        out.seek(0)
        data = out.read()
    return frames + b"fleet-stream %d\n" % len(data) + data


def feed_framed(fifo, framed):
    relay = [sys.executable, "-c", stream.RELAY, fifo, "10"]
    thread = threading.Thread(target=subprocess.run, args=(relay,), kwargs={"input": framed, "capture_output": True})
    thread.start()
    return thread


def test_a_pre_copy_moves_rounds_become_the_parents_of_its_final_dump(tmp_path, make_ops):
    ops, created = make_ops(tmp_path)
    writer = feed_framed(str(tmp_path / "in" / "web-move.stream"), _memory_stream(tmp_path, 2))
    ops.receive("web")
    writer.join(30)
    assert len(created) == 1  # one container, made for the first round
    path = tmp_path / "docker" / "containers" / CID / "checkpoints" / "move"
    assert (path / "pages-1.img").read_bytes() == b"f" * 4096
    assert (path / "parent" / "pages-1.img").read_bytes() == b"\x02" * 8192  # the last round
    assert (path / "parent" / "parent" / "pages-1.img").read_bytes() == b"\x01" * 12288
    assert sorted(name for name in os.listdir(path.parent) if name.startswith(".")) == []  # no round left aside
    assert stat.S_IMODE(os.stat(path / "parent" / "parent").st_mode) == 0o700
    # Its metadata lists the whole chain, so a later restore or export finds it intact (nothing "added").
    recorded = store.read_metadata(str(path))["files"]
    assert sorted(recorded) == ["core-1.img", "pages-1.img", "parent/pages-1.img", "parent/parent/pages-1.img"]
    assert integrity.damage(store.read_metadata(str(path)), integrity.images(str(path))) == []


def test_a_final_dump_that_names_other_rounds_than_came_is_refused_and_leaves_nothing(tmp_path, make_ops):
    ops, created = make_ops(tmp_path)
    framed = _memory_stream(tmp_path, 2)
    # The final dump's manifest says 3 rounds while 2 came.
    framed = framed.replace(b'"memory_rounds": 2', b'"memory_rounds": 3')
    writer = feed_framed(str(tmp_path / "in" / "web-move.stream"), framed)
    with pytest.raises(OpError, match="sent 2 memory rounds, and its checkpoint builds on 3"):
        ops.receive("web")
    writer.join(30)
    assert len(created) == 1 and ops.api.deleted == [(f"/containers/{CID}", {"force": 1})]
    assert not os.path.exists(tmp_path / "docker" / "containers" / CID / "checkpoints")


def test_a_checkpoint_after_memory_rounds_that_does_not_say_so_is_refused(tmp_path, make_ops):
    ops, created = make_ops(tmp_path)
    framed = _memory_stream(tmp_path, 1, says=False)
    writer = feed_framed(str(tmp_path / "in" / "web-move.stream"), framed)
    with pytest.raises(OpError, match="sent 1 memory rounds, and its checkpoint builds on None"):
        ops.receive("web")
    writer.join(30)
    assert len(created) == 1 and ops.api.deleted == [(f"/containers/{CID}", {"force": 1})]
    assert not os.path.exists(tmp_path / "docker" / "containers" / CID / "checkpoints")
