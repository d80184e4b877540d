# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""archive_layout=podman: the archive checkpointctl reads (checkpointctl itself reads one in the integration tests)."""

from __future__ import annotations

import json
import tarfile

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive, podman_layout
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build

FOUND = {"Id": "a" * 64, "Name": "/web", "Image": "sha256:" + "b" * 64, "Created": "2026-12-04T05:00:00.1Z",
         "Config": {"Image": "fleet-lab-workload:busybox", "Cmd": ["counter"], "Hostname": "a1"},
         "HostConfig": {"Runtime": "runc"},
         "Mounts": [{"Destination": "/data", "Source": "/var/lib/docker/volumes/d/_data", "RW": True}]}


def checkpoint(tmp_path):
    source = tmp_path / "cp"
    source.mkdir()
    (source / "pages-1.img").write_bytes(b"p" * 100)
    (source / "pstree.img").write_bytes(b"t")
    (source / "stats-dump").write_bytes(b"s")
    return source


def test_the_archive_has_podman_s_layout_and_our_manifest_first(tmp_path):
    source = checkpoint(tmp_path)
    manifest = build("cp", FOUND, images(str(source)), {}, "containerd", 1796360000.5)
    manifest["layout"] = "podman"
    top = podman_layout.top_files(FOUND, {"created": 1796360000.5}, str(source))
    destination = tmp_path / "out.tar.gz"
    archive.write_archive(str(source), manifest, str(destination), "gzip", lambda argv: (0, "", ""), None,
                          podman_top=top)
    with tarfile.open(destination) as tar:
        members = tar.getmembers()
        names = [member.name for member in members]
        assert names[0] == "manifest.json" and names[1] == "checkpoint" and members[1].isdir()
        assert set(names[2:]) == {"checkpoint/pages-1.img", "checkpoint/pstree.img", "checkpoint/stats-dump",
                                  "config.dump", "spec.dump", "stats-dump"}
        config = json.load(tar.extractfile("config.dump"))
        spec = json.load(tar.extractfile("spec.dump"))
        assert all(member.mode == 0o600 for member in members if member.isfile())
    assert config == {"id": "a" * 64, "name": "web", "rootfsImage": "sha256:" + "b" * 64,
                      "rootfsImageRef": "sha256:" + "b" * 64, "rootfsImageName": "fleet-lab-workload:busybox",
                      "runtime": "runc", "createdTime": "2026-12-04T05:00:00.1Z",
                      "checkpointedTime": "2026-12-04T04:53:20.500000Z"}
    assert spec["annotations"] == {"io.container.manager": "docker", "io.kubernetes.cri.container-name": "web"}
    assert spec["mounts"] == [{"destination": "/data", "type": "bind", "source": "/var/lib/docker/volumes/d/_data",
                               "options": ["rbind", "rw"]}]
    assert spec["process"]["args"] == ["counter"]
    # Our own import refuses it, saying what to do.
    with pytest.raises(ArchiveError, match="archive_layout=fleet to import it"):
        archive.importable(archive.read_manifest(str(destination)))


def test_without_kept_statistics_there_is_no_stats_dump(tmp_path):
    source = checkpoint(tmp_path)
    (source / "stats-dump").unlink()
    assert sorted(podman_layout.top_files(FOUND, {}, str(source))) == ["config.dump", "spec.dump"]
