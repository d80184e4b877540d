# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint_info's answer for one checkpoint: details read, files looked for, what a restore would miss."""

from __future__ import annotations

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import info
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.crit import CritError

HOST = {"experimental": True, "criu": "4.2.1", "criu_problem": ""}


class Reader:
    """Stands for crit.Reader (its own tests run crit's protocol; the integration tests the real crit)."""

    def __init__(self, by_name):
        self.by_name = by_name
        self.preloaded = None

    def preload(self, paths):
        self.preloaded = paths

    def entries(self, path):
        name = path.rsplit("/", 1)[1]
        if name not in self.by_name:
            raise CritError(f"crit cannot read {path}: Unknown magic")
        return self.by_name[name]


def checkpoint_dir(tmp_path, by_name):
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    for name in by_name:
        (directory / name).write_bytes(b"")
    return {"name": "cp", "path": str(directory), "created": 0, "size": 1, "metadata": {"versions": {"criu": "4.2.1"}}}


IMAGES = {
    "pstree.img": [{"pid": 1, "ppid": 0, "threads": [1]}],
    "ids-1.img": [{"files_id": 1, "mnt_ns_id": 9}],
    "core-1.img": [{"tc": {"comm": "app"}}],
    "fdinfo-1.img": [{"id": 2, "type": "REG", "fd": 3}, {"id": 3, "type": "REG", "fd": 4}],
    "files.img": [{"type": "REG", "id": 2, "reg": {"name": "/data/app.log", "mnt_id": 50}},
                  {"type": "REG", "id": 3, "reg": {"name": "/dev/shm/x", "mnt_id": 51}}],
    "mountpoints-9.img": [{"fstype": 17, "mnt_id": 50, "mountpoint": "/"},
                          {"fstype": 5, "mnt_id": 51, "mountpoint": "/dev/shm"}],
}


def test_a_file_removed_after_the_dump_makes_the_checkpoint_not_restorable(tmp_path):
    upper = tmp_path / "upper"
    (upper / "data").mkdir(parents=True)
    found = {"State": {"Running": False}, "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper)}}}
    checkpoint = checkpoint_dir(tmp_path, IMAGES)
    details = info.read_details(checkpoint, found, Reader(IMAGES), "")
    files = {item["path"]: item for item in details["files"]}
    assert files["/data/app.log"]["exists"] is False
    assert files["/dev/shm/x"]["exists"] is None  # (on a tmpfs: the checkpoint carries it)
    described = info.describe(checkpoint, HOST, False, details, [])
    assert described["restorable"] is False
    assert described["not_restorable_because"] == [
        "/data/app.log is missing here, and the checkpoint's processes use it (pid 1: fd 3): put it back, or the "
        "restore fails"]
    assert described["details"]["versions"] == {"criu": "4.2.1"}
    (upper / "data/app.log").write_text("back")
    details = info.read_details(checkpoint, found, Reader(IMAGES), "")
    assert info.describe(checkpoint, HOST, False, details, [])["restorable"] is True


def test_a_taken_port_makes_it_not_restorable():
    assert info.needs({"files": []}, ["0.0.0.0:8080/tcp"]) == [
        "the container publishes 0.0.0.0:8080/tcp, which is taken on this host: free it first"]


def test_unreadable_images_are_reported_not_guessed(tmp_path):
    checkpoint = checkpoint_dir(tmp_path, {"pstree.img": []})
    details = info.read_details(checkpoint, {}, Reader({}), "")
    assert details["problem"].startswith("the checkpoint's images cannot be read: crit cannot read")
    assert info.needs(details, []) == []
    assert info.read_details(checkpoint, {}, None, "crit is not installed") == {
        "problem": "crit is not installed", "versions": {"criu": "4.2.1"}}
    # Without details, nothing is read and the answer has no details key.
    assert "details" not in info.describe(checkpoint, HOST, False)


def test_the_cpu_record_the_dump_kept_is_checked_here(tmp_path):
    checkpoint = checkpoint_dir(tmp_path, {"cpuinfo.img": []})
    (tmp_path / "checkpoint" / "cpuinfo.img").write_bytes(b"record")
    seen = []

    def run(argv):  # (criu cpuinfo check; the real one runs in the integration tests)
        seen.append(argv)
        with open(f"{argv[-1]}/cpuinfo.img", "rb") as handle:
            assert handle.read() == b"record"
        return 1, "", "Error (criu/cpu.c:2): CPU feature avx512f missing\n"

    problems = info.cpu_needs(checkpoint, run, "/usr/sbin/criu")
    assert seen[0][:3] == ["/usr/sbin/criu", "cpuinfo", "check"]
    assert len(problems) == 1 and "avx512f missing" in problems[0], problems
    assert info.needs({"files": []}, [], problems) == problems
    assert info.cpu_needs(checkpoint, run, None) == []  # (no CRIU here: already a reason of its own)
    (tmp_path / "checkpoint" / "cpuinfo.img").unlink()
    assert info.cpu_needs(checkpoint, run, "/usr/sbin/criu") == []  # (no record: Docker's own dump keeps none)
