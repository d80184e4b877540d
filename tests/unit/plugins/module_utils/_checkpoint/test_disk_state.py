# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A container's disk state on real files: walked (disk_walk), streamed with a checkpoint and received (stream),
validated (disk_index) and built again (disk_apply) - the same tree comes out, and a hostile index is refused before
anything is written. Whiteouts and other owners need root: the lab's integration tests carry those."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply, disk_index, disk_walk
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import (
    ManifestError,
    build,
    validate,
)

INSPECT = {"Id": "ab" * 32, "Name": "/web", "Image": "sha256:" + "c" * 64, "Config": {"Image": "busybox"},
           "HostConfig": {"RestartPolicy": {"Name": "no"}}}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.0"}
MiB = 1024 * 1024


def make_tree(root):
    """Files of every kind a writable layer or volume holds, as an unprivileged user can make them."""
    (root / "etc" / "app").mkdir(parents=True)
    (root / "etc" / "app" / "app.conf").write_text("debug = true\n")
    os.chmod(root / "etc" / "app" / "app.conf", 0o640)
    (root / "var" / "log").mkdir(parents=True)
    log = root / "var" / "log" / "app.log"
    log.write_bytes(os.urandom(3 * MiB + 5))
    os.link(log, root / "var" / "log" / "app.log.1")  # a hard link
    with open(root / "var" / "sparse.db", "wb") as handle:  # 64 MiB, 2 data extents
        handle.write(b"head" * 1024)
        handle.seek(40 * MiB)
        handle.write(b"middle" * 1000)
        handle.truncate(64 * MiB)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o755)
    os.symlink("../etc/app/app.conf", root / "bin" / "conf")
    os.symlink("/nonexistent/absolute", root / "bin" / "dangling")
    os.mkfifo(root / "var" / "pipe", 0o620)
    (root / "empty").mkdir(mode=0o1777)
    os.chmod(root / "empty", 0o1777)
    os.setxattr(root / "etc" / "app" / "app.conf", "user.origin", b"fleet\0binary")
    os.utime(root / "etc", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def snapshot(root):
    """Everything about a tree that must survive: per path, type, mode, owner, mtime, size, contents, links,
    xattrs, allocated extents."""
    found = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = sorted(dirnames + filenames) + ([""] if dirpath == str(root) else [])
        for name in names:
            full = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(full, root)
            info = os.lstat(full)
            item = {"mode": info.st_mode, "uid": info.st_uid, "gid": info.st_gid, "mtime": info.st_mtime_ns}
            if stat.S_ISREG(info.st_mode):
                with open(full, "rb") as handle:
                    item["sha"] = hashlib.sha256(handle.read()).hexdigest()
                    item["extents"] = disk_walk.data_extents(handle.fileno(), info.st_size)
                item["size"] = info.st_size
                item["link"] = inodes.setdefault(info.st_ino, rel)
            if stat.S_ISLNK(info.st_mode):
                item["target"] = os.readlink(full)
            else:
                item["xattrs"] = {n: os.getxattr(full, n) for n in os.listxattr(full) if n.startswith("user.")}
            found[rel] = item
    return found


def carry(tmp_path, source):
    """Walk `source`, stream it with a checkpoint, receive it: the received directory, the manifest, the state."""
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "pages-1.img").write_bytes(b"p" * 4096)
    state = disk_walk.collect([disk_walk.Tree("rootfs", str(source))])
    manifest = build("move", INSPECT, file_inventory(str(cp)), VERSIONS, "containerd", 1763900000.0)
    manifest["disk"] = state.manifest_section({}, True)
    wire = tmp_path / "wire.tar"
    with open(wire, "wb") as out:
        written = stream.write_stream(out, str(cp), manifest, state.sources)
    assert written == os.path.getsize(wire) == stream.stream_length(manifest)
    received = tmp_path / "received"
    with open(wire, "rb") as handle:
        stream_receive.receive(handle, str(received))
    return received, manifest, state


def test_a_tree_walked_streamed_and_built_again_is_the_same_tree(tmp_path):
    source = tmp_path / "upper"
    source.mkdir()
    make_tree(source)
    received, manifest, state = carry(tmp_path, source)
    assert validate(json.loads(json.dumps(manifest))) == manifest
    index = disk_index.decode((received / "disk" / "index.json").read_bytes(), manifest["disk"]["files"])
    built = tmp_path / "built"
    disk_apply.build(index["trees"][0]["entries"], str(received / "disk"), str(built))
    assert snapshot(built) == snapshot(source)
    # Only the data travelled: 3 MiB + the small files + the sparse file's two extents, not its 64 MiB.
    assert state.size < 4 * MiB
    sparse = [e for e in index["trees"][0]["entries"] if e["path"] == "var/sparse.db"][0]
    assert len(sparse["extents"]) == 2 and sparse["size"] == 64 * MiB
    assert os.stat(built / "var" / "sparse.db").st_blocks * 512 < MiB
    assert [e["type"] for e in index["trees"][0]["entries"] if e["path"] == "var/log/app.log.1"] == ["hardlink"]


def test_a_socket_file_is_left_out_and_a_device_node_is_refused(tmp_path):
    import socket
    source = tmp_path / "s"
    source.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "app.sock"))
    try:
        state = disk_walk.collect([disk_walk.Tree("volume", str(source), "data")])
    finally:
        sock.close()
    assert [e["path"] for e in state.index["trees"][0]["entries"]] == ["."]


def test_the_index_is_bound_to_the_stream_members(tmp_path):
    source = tmp_path / "upper"
    source.mkdir()
    make_tree(source)
    state = disk_walk.collect([disk_walk.Tree("rootfs", str(source))])
    members = state.files
    index = json.loads(json.dumps(state.index))
    disk_index.validate(index, members)
    extra = dict(members, **{"disk/999": {"size": 1, "sha256": "0" * 64}})
    with pytest.raises(disk_index.DiskIndexError, match="belong to no file"):
        disk_index.validate(index, extra)
    fewer = {k: v for k, v in members.items() if k != "disk/0"}
    with pytest.raises(disk_index.DiskIndexError, match="not a member of the stream"):
        disk_index.validate(index, fewer)


def entry(path, kind="dir", **more):
    base = {"path": path, "type": kind, "mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 0}
    base.update(more)
    return base


HOSTILE = {
    "a path with ..": [entry("."), entry("../etc", "file", size=1, blob="disk/0")],
    "an absolute path": [entry("."), entry("/etc/passwd", "file", size=1, blob="disk/0")],
    "a file under a symbolic link": [entry("."), entry("link", "symlink", target="/etc"),
                                     entry("link/passwd", "file", size=1, blob="disk/0")],
    "a file under a file": [entry("."), entry("f", "file", size=1, blob="disk/0"),
                            entry("f/x", "file", size=1, blob="disk/1")],
    "a hard link to a path outside": [entry("."), entry("h", "hardlink", target="/etc/shadow")],
    "a hard link to a later file": [entry("."), entry("h", "hardlink", target="f"),
                                    entry("f", "file", size=1, blob="disk/0")],
    "a member used twice": [entry("."), entry("a", "file", size=1, blob="disk/0"),
                            entry("b", "file", size=1, blob="disk/0")],
    "a host-layer xattr": [entry(".", xattrs={"trusted.overlay.origin": "AA=="})],
    "a selinux label": [entry(".", xattrs={"security.selinux": "AA=="})],
    "a device node": [entry("."), entry("sda", "blockdev")],
    "a set-id bit beyond the mode bits": [entry(".", mode=0o17777)],
    "a size that is not the member's": [entry("."), entry("f", "file", size=5, blob="disk/0")],
    "overlapping extents": [entry("."), entry("f", "file", size=100, blob="disk/0", extents=[[0, 1], [0, 1]])],
    "extents past the end": [entry("."), entry("f", "file", size=2, blob="disk/0", extents=[[1, 1], [5, 1]])],
    "no root first": [entry("a")],
    "a path twice": [entry("."), entry("a"), entry("a")],
    "a NUL in a name": [entry("."), entry("a\0b")],
    "a name too long": [entry("."), entry("x" * 256)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_index_is_refused_before_anything_is_written(tmp_path, case):
    members = {"disk/0": {"size": 1, "sha256": "0" * 64}, "disk/1": {"size": 1, "sha256": "0" * 64}}
    if case == "overlapping extents" or case == "extents past the end":
        members["disk/0"]["size"] = 2
    entries = copy.deepcopy(HOSTILE[case])
    used = {e.get("blob") for e in entries}
    members = {k: v for k, v in members.items() if k in used}
    index = {"format": disk_index.FORMAT, "format_version": 1, "trees": [{"kind": "rootfs", "entries": entries}]}
    with pytest.raises(disk_index.DiskIndexError):
        disk_index.decode(json.dumps(index).encode(), members)


def test_a_volume_may_not_carry_overlay_marks_and_needs_a_docker_name():
    opaque = {"format": disk_index.FORMAT, "format_version": 1,
              "trees": [{"kind": "volume", "name": "data", "entries": [
                  entry(".", xattrs={"trusted.overlay.opaque": "eQ=="})]}]}
    with pytest.raises(disk_index.DiskIndexError, match="not one that travels"):
        disk_index.validate(opaque, {})
    opaque["trees"][0]["kind"] = "rootfs"
    disk_index.validate(opaque, {})
    bad = {"format": disk_index.FORMAT, "format_version": 1,
           "trees": [{"kind": "volume", "name": "../x", "entries": [entry(".")]}]}
    with pytest.raises(disk_index.DiskIndexError, match="not a Docker volume name"):
        disk_index.validate(bad, {})


def test_a_manifest_disk_section_is_checked_like_its_files(tmp_path):
    source = tmp_path / "upper"
    source.mkdir()
    (source / "f").write_bytes(b"abc")
    manifest = carry(tmp_path, source)[1]
    broken = copy.deepcopy(manifest)
    broken["disk"]["size"] += 1
    with pytest.raises(ManifestError, match="disk size"):
        validate(broken)
    broken = copy.deepcopy(manifest)
    broken["disk"]["files"]["../escape"] = {"size": 0, "sha256": "0" * 64}
    with pytest.raises(ManifestError):
        validate(broken)
    broken = copy.deepcopy(manifest)
    broken["disk"]["volumes"] = {"../x": {}}
    with pytest.raises(ManifestError, match="volume names"):
        validate(broken)


def test_a_corrupted_disk_member_is_refused_by_its_sha256(tmp_path):
    source = tmp_path / "upper"
    source.mkdir()
    (source / "f").write_bytes(b"abc" * 1000)
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "pages-1.img").write_bytes(b"p")
    state = disk_walk.collect([disk_walk.Tree("rootfs", str(source))])
    manifest = build("move", INSPECT, file_inventory(str(cp)), VERSIONS, "containerd", 1763900000.0)
    manifest["disk"] = state.manifest_section({}, True)
    (source / "f").write_bytes(b"abd" * 1000)  # changed after it was hashed: the target must notice
    wire = tmp_path / "wire.tar"
    with open(wire, "wb") as out:
        stream.write_stream(out, str(cp), manifest, state.sources)
    with open(wire, "rb") as handle, pytest.raises(Exception, match="sha256"):
        stream_receive.receive(handle, str(tmp_path / "received"))


def test_a_swap_replaces_the_directory_and_keeps_it_when_the_rename_fails(tmp_path):
    place = tmp_path / "diff"
    place.mkdir()
    (place / "made-by-create").write_text("x")
    new = tmp_path / ("diff" + disk_apply.BUILDING)
    new.mkdir()
    (new / "ours").write_text("y")
    disk_apply.swap(str(new), str(place))
    assert sorted(os.listdir(place)) == ["ours"] and not new.exists()
    assert not (tmp_path / ("diff" + disk_apply.OLD)).exists()
    with pytest.raises(OSError):
        disk_apply.swap(str(tmp_path / "missing"), str(place))
    assert sorted(os.listdir(place)) == ["ours"]
