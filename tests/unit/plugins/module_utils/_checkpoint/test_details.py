# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""details.read over images as crit decodes them (the entries are what `crit decode -i` printed for a real Docker
checkpoint of a Python HTTP server, cut down); the real crit reads real checkpoints in the integration tests."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import details
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.crit import CritError

PAGE = 4096
ARGS = 0x7FFD0000 + 100  # (the command line starts inside a page)


def ip4(text):
    return struct.unpack("=I", socket.inet_aton(text))[0]  # as CRIU stores it: network order, read natively


def images(tmp_path, with_stats=False, cmdline_present=True):
    """A checkpoint directory: the image files exist (empty), their entries in the returned map."""
    entries = {
        "inventory.img": [{"img_version": 2, "fdinfo_per_id": True}],
        "pstree.img": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "threads": [1]},
                       {"pid": 7, "ppid": 1, "pgid": 1, "sid": 1, "threads": [7, 8]}],
        "ids-1.img": [{"vm_id": 1, "files_id": 1, "fs_id": 1, "pid_ns_id": 10, "net_ns_id": 11, "mnt_ns_id": 14}],
        "ids-7.img": [{"vm_id": 2, "files_id": 2, "fs_id": 2, "pid_ns_id": 10, "net_ns_id": 11, "mnt_ns_id": 14}],
        "core-1.img": [{"tc": {"comm": "python3"}}],
        "core-7.img": [{"tc": {"comm": "sleep"}}],
        "mm-1.img": [{"mm_arg_start": ARGS, "mm_arg_end": ARGS + 23, "exe_file_id": 5,
                      "vmas": [{"start": 0x400000, "end": 0x401000, "shmid": 6, "status": 1 | (1 << 6)},
                               {"start": 0x500000, "end": 0x501000, "shmid": 0, "status": 1 | (1 << 9)}]}],
        "mm-7.img": [{"mm_arg_start": 0, "mm_arg_end": 0, "exe_file_id": 9,
                      "vmas": [{"start": 0x600000, "end": 0x601000, "shmid": 50, "status": 1 | (1 << 7) | (1 << 14)}]}],
        "pagemap-1.img": [{"pages_id": 3},
                          {"vaddr": 0x400000, "nr_pages": 1, "flags": 4},
                          {"vaddr": 0x7FFD0000, "nr_pages": 1, "flags": 4 if cmdline_present else 1},
                          {"vaddr": 0x7FFE0000, "nr_pages": 2, "flags": 1}],
        "pagemap-7.img": [{"pages_id": 4}, {"vaddr": 0x1000, "compat_nr_pages": 3, "in_parent": False}],
        "fdinfo-1.img": [{"id": 20, "flags": 0, "type": "REG", "fd": 3},
                         {"id": 21, "flags": 0, "type": "INETSK", "fd": 4},
                         {"id": 22, "flags": 0, "type": "INETSK", "fd": 5},
                         {"id": 23, "flags": 0, "type": "REG", "fd": 6}],
        "fdinfo-2.img": [{"id": 20, "flags": 0, "type": "REG", "fd": 0},
                         {"id": 24, "flags": 0, "type": "UNIXSK", "fd": 1}],
        "files.img": [
            {"type": "REG", "id": 5, "reg": {"id": 5, "name": "/usr/bin/python3.13", "mnt_id": 100}},
            {"type": "REG", "id": 6, "reg": {"id": 6, "name": "/usr/lib/libc.so.6", "mnt_id": 100}},
            {"type": "REG", "id": 9, "reg": {"id": 9, "name": "/bin/sleep", "mnt_id": 100}},
            {"type": "REG", "id": 20, "reg": {"id": 20, "name": "/data/app.log", "mnt_id": 100}},
            {"type": "REG", "id": 23, "reg": {"id": 23, "name": "/tmp/gone", "mnt_id": 100}},
            {"type": "REG", "id": 30, "reg": {"id": 30, "name": "/", "mnt_id": 100}},
            {"type": "REG", "id": 31, "reg": {"id": 31, "name": "/proc/1/status", "mnt_id": 101}},
            {"type": "INETSK", "id": 21, "isk": {"family": 2, "type": 1, "proto": 6, "state": 10, "src_port": 8000,
                                                 "dst_port": 0, "src_addr": [ip4("0.0.0.0")], "dst_addr": [0]}},
            {"type": "INETSK", "id": 22, "isk": {"family": 10, "type": 1, "proto": 6, "state": 1, "src_port": 8000,
                                                 "dst_port": 40000, "src_addr": [0, 0, 0, socket.htonl(1)],
                                                 "dst_addr": [0, 0, 0, socket.htonl(1)]}},
            {"type": "UNIXSK", "id": 24, "usk": {"type": 1, "state": 7, "name": "=00fleet-abstract"}},
            {"type": "MEMFD", "id": 50, "memfd": {"id": 50, "inode_id": 1}},  # (a memfd mapping: not a disk file)
        ],
        "remap-fpath.img": [{"orig_id": 23, "remap_id": 40, "remap_type": "GHOST"}],
        "fs-1.img": [{"cwd_id": 30, "root_id": 30}],
        "fs-7.img": [{"cwd_id": 30, "root_id": 30}],
        "mountpoints-14.img": [
            {"fstype": 17, "mnt_id": 100, "mountpoint": "/", "source": "overlay", "root": "/"},
            {"fstype": 1, "mnt_id": 101, "mountpoint": "/proc", "source": "proc", "root": "/"},
            {"fstype": 16, "fsname": "ext4", "mnt_id": 102, "mountpoint": "/etc/hosts", "source": "/dev/vda",
             "root": "/x/hosts", "ext_key": "/etc/hosts"}],
    }
    if with_stats:
        entries["stats-dump"] = [{"dump": {"freezing_time": 12, "frozen_time": 3456, "memdump_time": 7,
                                           "memwrite_time": 8, "pages_scanned": 9, "pages_skipped_parent": 0,
                                           "pages_written": 9, "pages_lazy": 0, "page_pipes": 1}}]
    for name in entries:
        (tmp_path / name).write_bytes(b"")
    # pages-3.img: the page at 0x400000, then the page holding the command line (when present in this checkpoint).
    page = bytearray(PAGE)
    page[100:123] = b"python3\0-m\0http.server\0"
    (tmp_path / "pages-3.img").write_bytes(b"\xcc" * PAGE + bytes(page))
    by_path = {os.path.join(str(tmp_path), name): value for name, value in entries.items()}
    return lambda path: by_path[path]


def test_processes_with_command_lines_from_the_dumped_memory(tmp_path):
    found = details.read(str(tmp_path), images(tmp_path), PAGE)
    first, second = found["processes"]
    assert first == {"pid": 1, "ppid": 0, "threads": 1, "command": "python3", "cmdline": "python3 -m http.server",
                     "memory_bytes": 4 * PAGE, "memory_in_checkpoint_bytes": 2 * PAGE}
    # No arguments recorded; old images give compat_nr_pages and in_parent rather than flags.
    assert second == {"pid": 7, "ppid": 1, "threads": 2, "command": "sleep", "cmdline": None,
                      "memory_bytes": 3 * PAGE, "memory_in_checkpoint_bytes": 3 * PAGE}


def test_a_command_line_whose_pages_are_in_a_parent_checkpoint_is_not_guessed(tmp_path):
    found = details.read(str(tmp_path), images(tmp_path, cmdline_present=False), PAGE)
    assert found["processes"][0]["cmdline"] is None


def test_files_with_how_each_is_used_and_on_which_filesystem(tmp_path):
    files = {item["path"]: item for item in details.read(str(tmp_path), images(tmp_path), PAGE)["files"]}
    assert sorted(files) == ["/", "/bin/sleep", "/data/app.log", "/tmp/gone", "/usr/bin/python3.13",
                             "/usr/lib/libc.so.6"]
    assert files["/data/app.log"] == {"path": "/data/app.log", "used_as": ["1: fd 3", "7: fd 0"],
                                      "kept_in_checkpoint": False, "remapped": False, "filesystem": "overlay",
                                      "external_mount": False}
    assert files["/usr/bin/python3.13"]["used_as"] == ["1: exe"]
    assert files["/usr/lib/libc.so.6"]["used_as"] == ["1: mapped"]
    assert files["/"]["used_as"] == ["1: cwd", "1: root", "7: cwd", "7: root"]
    assert files["/tmp/gone"]["kept_in_checkpoint"] is True  # (deleted before the dump: a ghost file)
    assert files["/tmp/gone"]["remapped"] is True


def test_sockets_with_their_state_and_addresses(tmp_path):
    sockets = details.read(str(tmp_path), images(tmp_path), PAGE)["sockets"]
    assert sockets == [
        {"pid": 1, "fd": 4, "family": "inet", "type": "stream", "protocol": "tcp", "state": "listen",
         "local": "0.0.0.0:8000", "remote": None},
        {"pid": 1, "fd": 5, "family": "inet6", "type": "stream", "protocol": "tcp", "state": "established",
         "local": "[::1]:8000", "remote": "[::1]:40000"},
        {"pid": 7, "fd": 1, "family": "unix", "type": "stream", "protocol": None, "state": "close",
         "local": "@fleet-abstract", "remote": None}]


def test_mounts_namespaces_and_stats(tmp_path):
    found = details.read(str(tmp_path), images(tmp_path, with_stats=True), PAGE)
    assert found["mounts"] == [
        {"mountpoint": "/", "fstype": "overlay", "source": "overlay", "root": "/", "external": False},
        {"mountpoint": "/proc", "fstype": "proc", "source": "proc", "root": "/", "external": False},
        {"mountpoint": "/etc/hosts", "fstype": "ext4", "source": "/dev/vda", "root": "/x/hosts", "external": True}]
    assert found["namespaces"] == {"pid": 10, "net": 11, "mnt": 14}
    assert found["stats"] == {"freezing_time": 12, "frozen_time": 3456, "memdump_time": 7, "memwrite_time": 8,
                              "pages_scanned": 9, "pages_skipped_parent": 0, "pages_written": 9, "pages_lazy": 0}
    (tmp_path / "stats-dump").unlink()
    assert details.read(str(tmp_path), images(tmp_path), PAGE)["stats"] is None


def test_a_directory_without_a_process_tree_is_refused(tmp_path):
    with pytest.raises(CritError, match="no process tree"):
        details.read(str(tmp_path), lambda path: [], PAGE)


def test_a_crit_older_than_the_images_is_named_not_read_as_zero_pages(tmp_path):
    entries = images(tmp_path)

    def old_crit(path):  # (CRIU 4.2 writes nr_pages; an older pycriu drops the field it does not know)
        found = entries(path)
        if path.endswith("pagemap-1.img"):
            return [found[0]] + [{"vaddr": run["vaddr"], "compat_nr_pages": 0, "flags": run["flags"]}
                                 for run in found[1:]]
        return found

    with pytest.raises(CritError, match="older than the CRIU that wrote"):
        details.read(str(tmp_path), old_crit, PAGE)


def test_image_files_leave_out_the_raw_pages(tmp_path):
    images(tmp_path, with_stats=True)
    names = [os.path.basename(path) for path in details.image_files(str(tmp_path))]
    assert "pages-3.img" not in names and "stats-dump" in names and "pstree.img" in names
