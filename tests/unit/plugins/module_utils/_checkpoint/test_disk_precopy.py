# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Disk state in two passes, end to end on real files, a real FIFO and the relay as it runs on the target, against a
fake Docker API: the pre-copy while the container runs, the final pass with only what changed, the receive that
builds the trees from both - and what it leaves behind when the final pass lies about what the pre-copy brought."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply, disk_walk, receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

from ansible_collections.fleet.checkpoint.tests.unit.plugins.module_utils._checkpoint.test_disk_state import (
    make_tree,
    snapshot,
)

CID = "ab" * 32
INSPECT = {"Id": CID, "Name": "/web", "Image": "sha256:" + "c" * 64, "Config": {"Image": "busybox"},
           "HostConfig": {"RestartPolicy": {"Name": "no"}}, "State": {"Running": False}}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.0"}


class FakeHost:
    """The target's Engine: no container `web` until the receive creates it; volumes made under tmp/volumes."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.volumes = {}
        self.deleted = []
        self.created = False
        layer = tmp_path / "overlay2" / "x"
        (layer / "diff").mkdir(parents=True)
        (layer / "diff" / "made-by-create").write_text("docker create's working dir")
        self.inspect = dict(INSPECT, GraphDriver={"Name": "overlay2", "Data": {
            "UpperDir": str(layer / "diff"), "MergedDir": str(layer / "merged")}})

    def get(self, path, **query):
        if path.startswith("/containers/") and self.created:
            return self.inspect
        if path.startswith("/volumes/") and path[9:] in self.volumes:
            return {"Name": path[9:], "Mountpoint": self.volumes[path[9:]]}
        raise DockerAPIError(f"{path}: 404", status=404)

    def post(self, path, body=None, **query):
        assert path == "/volumes/create"
        data = self.tmp / "volumes" / body["Name"] / "_data"
        data.mkdir(parents=True)
        (data / "copied-from-the-image").write_text("x")
        self.volumes[body["Name"]] = str(data)

    def delete(self, path, **query):
        self.deleted.append(path)


def passes(tmp_path, change):
    """The two passes of a source with a writable layer and a volume `data`, `change` run between them; the bytes
    on the wire (both segments, as a sender frames them) and the source's trees."""
    upper, volume = tmp_path / "src" / "upper", tmp_path / "src" / "volume"
    upper.mkdir(parents=True)
    volume.mkdir()
    make_tree(upper)
    (volume / "rows.db").write_bytes(os.urandom(2 * 1024 * 1024))
    trees = [disk_walk.Tree("rootfs", str(upper)), disk_walk.Tree("volume", str(volume), "data", {"app": "web"})]
    first = disk_walk.collect(trees, precopy=True)
    ahead = build("move", INSPECT, {}, VERSIONS, "containerd", 1763900000.0)
    ahead["phase"] = "precopy"
    ahead["disk"] = first.manifest_section({"data": {"app": "web"}}, True)
    wire = tmp_path / "wire"
    with open(wire, "wb") as out:
        out.write(stream.stream_preamble(ahead, more=True))
        out.flush()
        stream.write_stream(out, "", ahead, first.sources, lenient=True)
        change(upper, volume)
        cp = tmp_path / "cp"
        cp.mkdir()
        (cp / "pages-1.img").write_bytes(b"p" * 4096)
        final = disk_walk.collect(trees, previous=first)
        manifest = build("move", INSPECT, file_inventory(str(cp)), VERSIONS, "containerd", 1763900001.0)
        manifest["disk"] = final.manifest_section({"data": {"app": "web"}}, True)
        out.write(stream.stream_preamble(manifest))
        out.flush()
        stream.write_stream(out, str(cp), manifest, final.sources)
    return wire.read_bytes(), first, final, upper, volume


def receive_from(tmp_path, data, monkeypatch, host=None):
    host = host or FakeHost(tmp_path / "target")
    ctx = HostContext(api=host, root_dir=str(tmp_path / "target" / "docker"))

    def create(ctx, ref, config, origin, create, allowed=None, annotations=None):
        host.created = True
        return host.inspect, True
    monkeypatch.setattr(receive, "inspect_or_create", create)
    fifo = tmp_path / "in" / "web-move.stream"
    relay = threading.Thread(target=subprocess.run, args=([sys.executable, "-c", stream.RELAY, str(fifo), "10"],),
                             kwargs={"input": data, "capture_output": True})
    relay.start()
    try:
        return host, receive.receive(ctx, "web", receive.ReceiveOptions("move", str(tmp_path / "in"), 20,
                                                                        create=True))
    finally:
        relay.join(30)


def leftovers(host):
    return sorted(str(path) for path in host.tmp.rglob("*.fleet-*"))


def change_some(upper, volume):
    (upper / "etc" / "app" / "app.conf").write_text("debug = false\n")  # changed
    (upper / "bin" / "tool").unlink()  # removed
    (upper / "new.txt").write_text("written during the pre-copy")  # added
    with open(volume / "rows.db", "r+b") as handle:  # a database page rewritten in place
        handle.seek(4096)
        handle.write(b"new page")


def test_the_final_pass_sends_only_what_changed_and_the_target_builds_both(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)  # files made by this test are not "hot"
    data, first, final, upper, volume = passes(tmp_path, change_some)
    # The pre-copy carried every file (a hard link's bytes once); the final pass, the three that changed or are new
    # (and the index), not the 3 MiB log or the sparse file that stayed as they were.
    assert len(first.files) - 1 == 5 and first.size > 5 * 1024 * 1024
    assert len(final.files) - 1 == 3 and final.unchanged == 2 and final.size < 3 * 1024 * 1024
    host, got = receive_from(tmp_path, data, monkeypatch)
    assert got["disk"]["precopy"] == {"bytes": first.size, "files": 5, "damaged": 0}
    assert got["disk"]["applied"] == ["the writable layer", "volume data"]
    assert snapshot(host.inspect["GraphDriver"]["Data"]["UpperDir"]) == snapshot(upper)
    assert snapshot(host.volumes["data"]) == snapshot(volume)
    assert leftovers(host) == [] and host.deleted == []


def test_a_file_that_changes_while_it_is_pre_copied_is_dropped_there_and_sent_again(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)
    real = stream._send_file  # pylint: disable=protected-access

    def changing(fd, header, full, extents, size, lenient):
        if full.endswith("rows.db") and lenient:  # written to between its hash and its sending
            with open(full, "r+b") as handle:
                handle.write(b"torn")
        real(fd, header, full, extents, size, lenient)
    monkeypatch.setattr(stream, "_send_file", changing)
    data, first, final, upper, volume = passes(tmp_path, lambda upper, volume: None)
    assert final.unchanged == 4 and len(final.files) - 1 == 1  # rows.db changed: sent again
    host, got = receive_from(tmp_path, data, monkeypatch)
    assert got["disk"]["precopy"]["damaged"] == 1
    assert snapshot(host.volumes["data"]) == snapshot(volume)


def test_a_final_pass_that_claims_a_file_the_pre_copy_did_not_bring_leaves_nothing(tmp_path, monkeypatch):
    """The final pass says var/sparse.db is unchanged since the pre-copy, and the pre-copy's tree lacks it (lost here
    on purpose): refused, and the container, the volume made for it and every tree built are gone."""
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)
    data = passes(tmp_path, change_some)[0]
    monkeypatch.setattr(disk_apply, "build", _dropping(disk_apply.build, "sparse.db"))
    host = FakeHost(tmp_path / "target")
    with pytest.raises(OpError, match="marked unchanged since the pre-copy, but the pre-copy did not bring it"):
        receive_from(tmp_path, data, monkeypatch, host)
    assert host.deleted == [f"/containers/{CID}", "/volumes/data"]
    assert leftovers(host) == []


def _dropping(build, name):
    def wrapped(entries, blobs, root, *args, **kwargs):
        if kwargs.get("metadata") is False:  # the pre-copy's tree: lose one file
            entries = [entry for entry in entries if not entry["path"].endswith(name)]
        return build(entries, blobs, root, *args, **kwargs)
    return wrapped


def test_the_relay_passes_a_pre_copy_segment_then_the_checkpoint_and_refuses_a_sender_that_stops(tmp_path):
    fifo = str(tmp_path / "seg.stream")
    reader = stream_receive.FifoReader(fifo)
    framed = b"fleet-stream 3 more\nabcfleet-stream 2\nde"
    relay = subprocess.run([sys.executable, "-c", stream.RELAY, fifo, "10"], input=framed, capture_output=True,
                           check=False, timeout=30)
    reader.wait(5)
    assert relay.stdout == b"ready\ndone\n" and reader.read(100) == b"abcde"
    reader.close()
    reader = stream_receive.FifoReader(fifo)
    stopped = subprocess.run([sys.executable, "-c", stream.RELAY, fifo, "10"], input=b"fleet-stream 3 more\nabc",
                             capture_output=True, check=False, timeout=30)
    reader.close()
    assert stopped.returncode != 0 and b"stopped after its pre-copy" in stopped.stderr


def test_a_received_container_that_does_not_restore_is_removed_once_the_daemon_is_back(monkeypatch):
    """The daemon killed mid-restore: its answers are awaited, a copy containerd finished behind it is stopped,
    then the container and the volumes made for it are removed."""
    class Restarting:
        def __init__(self):
            self.pings, self.deleted = 0, []

        def get(self, path, **query):
            self.pings += 1
            if self.pings < 3:
                raise DockerAPIError("connection refused")  # no status: nobody answers
            return {"Version": "26.1.5"}

        def delete(self, path, **query):
            self.deleted.append(path)

    stopped = []
    monkeypatch.setattr(restore.shims, "lingering_shims", lambda cid: {4242: [4243]})
    monkeypatch.setattr(restore.shims, "stop_shims", lambda found: stopped.append(found) or [])
    monkeypatch.setattr(restore.time, "sleep", lambda seconds: None)
    api = Restarting()
    removed = restore.abandon_received(HostContext(api=api, root_dir="/nonexistent"), CID, ["data"])
    assert api.pings == 3 and stopped == [{4242: [4243]}]
    assert api.deleted == [f"/containers/{CID}", "/volumes/data"]
    assert removed == ["the copy containerd restored behind the killed Docker daemon", "the container created for it",
                       "volume data"]


def test_a_damaged_pre_copy_member_does_not_hide_a_final_pass_file_of_the_same_number(tmp_path, monkeypatch):
    """Member numbers start again in each pass: the pre-copy's damaged disk/4 is not the final pass's disk/4 (a new
    file here) - the target must build every file the final pass sends (a review found it skipped)."""
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)
    real = stream._send_file  # pylint: disable=protected-access

    def changing(fd, header, full, extents, size, lenient):
        if full.endswith("rows.db") and lenient:
            with open(full, "r+b") as handle:
                handle.write(b"torn")
        real(fd, header, full, extents, size, lenient)
    monkeypatch.setattr(stream, "_send_file", changing)

    def many_new(upper, volume):
        for number in range(8):
            (upper / f"new{number}.txt").write_text(f"file {number}")
    data, first, final, upper, volume = passes(tmp_path, many_new)
    assert first.index["trees"][1]["entries"][1]["blob"] in final.files  # the same member name in both passes
    host, got = receive_from(tmp_path, data, monkeypatch)
    assert got["disk"]["precopy"]["damaged"] == 1
    assert snapshot(host.inspect["GraphDriver"]["Data"]["UpperDir"]) == snapshot(upper)
    assert snapshot(host.volumes["data"]) == snapshot(volume)


def test_a_final_pass_that_names_another_volume_than_its_pre_copy_is_refused(tmp_path, monkeypatch):
    """The checkpoint's manifest may not bring a volume the pre-copy did not (one that exists here, say): no volume
    but those this receive made is ever written."""
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)
    data = passes(tmp_path, change_some)[0]
    first_end = data.index(b"\n") + 1 + int(data.split(b" ")[1])
    final = data[first_end:].replace(b'"data": {', b'"dat4": {', 1)  # the checkpoint names another volume
    assert final != data[first_end:]
    host = FakeHost(tmp_path / "target")
    with pytest.raises(OpError, match="names other disk state .* than in its pre-copy"):
        receive_from(tmp_path, data[:first_end] + final, monkeypatch, host)
    assert host.deleted == [f"/containers/{CID}", "/volumes/data"]
    assert leftovers(host) == []


def test_files_mapped_shared_and_writable_are_left_to_the_final_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_walk, "HOT_SECONDS", -60.0)
    (tmp_path / "db.mdb").write_bytes(bytes(8192))
    (tmp_path / "plain").write_bytes(b"x" * 100)
    with open(tmp_path / "db.mdb", "r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            mapped = disk_walk.shared_writable_inodes([os.getpid()])
            assert os.stat(tmp_path / "db.mdb").st_ino in mapped
            state = disk_walk.collect([disk_walk.Tree("volume", str(tmp_path), "v")], precopy=True, mapped=mapped)
        finally:
            mapping.close()
    assert [e["path"] for e in state.index["trees"][0]["entries"]] == [".", "plain"]
