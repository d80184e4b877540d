# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a checkpoint holds (docker_checkpoint_info with details=true), read from its CRIU images with CRIU's own
reader (_criu/crit.py): the process tree with command lines (read from the dumped memory), memory per process, the
files the processes use, their sockets, their mounts and namespaces, and CRIU's dump statistics when the dump kept
them. The field names are those of CRIU's images/*.proto; the numbers below are CRIU's own (criu/include/image.h,
pagemap.h, images/mnt.proto, and the kernel's socket constants)."""

from __future__ import annotations

import ipaddress
import os
import quopri
import socket
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.crit import CritError

Entries = Callable[[str], List[Dict[str, Any]]]  # an image's path -> its entries (crit.Reader.entries)

PE_PARENT, PE_LAZY, PE_PRESENT = 1 << 0, 1 << 1, 1 << 2  # criu/include/pagemap.h
VMA_FILE_PRIVATE, VMA_FILE_SHARED = 1 << 6, 1 << 7  # criu/include/image.h
CMDLINE_MAX = 4096

FSTYPES = {1: "proc", 2: "sysfs", 3: "devtmpfs", 4: "binfmt_misc", 5: "tmpfs", 6: "devpts", 7: "simfs",
           8: "pstore", 9: "securityfs", 10: "fusectl", 11: "debugfs", 12: "cgroup", 13: "aufs", 14: "mqueue",
           15: "fuse", 17: "overlay", 18: "autofs", 19: "tracefs", 23: "cgroup2"}  # images/mnt.proto (16: auto)
# Files on these the kernel provides, or the checkpoint carries (tmpfs contents): not looked for on the host.
NOT_ON_DISK = {"proc", "sysfs", "devtmpfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "binfmt_misc",
               "securityfs", "debugfs", "tracefs", "pstore", "fusectl"}
FAMILIES = {1: "unix", 2: "inet", 10: "inet6"}
SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}
TCP_STATES = {1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait",
              7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing"}
NAMESPACES = ("pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time")


def read(directory: str, entries: Entries, page_size: int = 4096) -> dict[str, Any]:
    """The details of the checkpoint whose CRIU images are in `directory`; CritError when the images cannot be read
    (crit missing, an image it does not know)."""
    image = _Images(directory, entries)
    inventory = image.first("inventory.img")
    tree = image.all("pstree.img")
    if not tree:
        raise CritError(f"{directory} holds no process tree (pstree.img)")
    files = {item["id"]: item for item in image.all("files.img")}
    if not files and os.path.exists(os.path.join(directory, "reg-files.img")):
        raise CritError(f"{directory} is in CRIU's older image layout (reg-files.img), which this reader does not "
                        "know")
    # Files unlinked before the dump: a GHOST remap carries their data in the checkpoint; a LINKED one names a link
    # CRIU made on the disk, a PROCFS one a /proc file.
    remapped = {item["orig_id"]: str(item.get("remap_type", "LINKED")) for item in image.all("remap-fpath.img")}
    processes: list[dict[str, Any]] = []
    used: dict[str, Any] = {}
    sockets: list[dict[str, Any]] = []
    for task in tree:
        pid = task["pid"]
        ids = image.first(f"ids-{pid}.img")
        core = image.first(f"core-{pid}.img")
        mm = image.first(f"mm-{pid}.img")
        pages = _pages(image, pid, page_size)
        processes.append({
            "pid": pid, "ppid": task.get("ppid", 0), "threads": len(task.get("threads") or [pid]),
            "command": ((core.get("tc") or {}).get("comm")),
            "cmdline": _cmdline(directory, mm, pages, page_size),
            "memory_bytes": sum(run[1] for run in pages["entries"]),
            "memory_in_checkpoint_bytes": sum(run[1] for run in pages["entries"] if run[2] & PE_PRESENT),
        })
        per_id = inventory.get("fdinfo_per_id", True) and "files_id" in ids
        for fd in image.all(f"fdinfo-{ids['files_id']}.img" if per_id else f"fdinfo-{pid}.img"):
            found = files.get(fd["id"]) or {}
            if fd.get("type") == "REG" and "reg" in found:
                _use(used, found, pid, f"fd {fd['fd']}")
            elif fd.get("type") in ("INETSK", "UNIXSK"):
                sockets.append(_socket(found, pid, fd["fd"]))
        if mm.get("exe_file_id") in files:
            _use(used, files[mm["exe_file_id"]], pid, "exe")
        for vma in mm.get("vmas") or []:
            if vma.get("status", 0) & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) and vma.get("shmid") in files:
                _use(used, files[vma["shmid"]], pid, "mapped")
        fs = image.first(f"fs-{pid}.img")
        for key, how in (("cwd_id", "cwd"), ("root_id", "root")):
            if key in fs and fs[key] in files:
                _use(used, files[fs[key]], pid, how)
    root_ids = image.first(f"ids-{tree[0]['pid']}.img")
    mounts = [_mount(item) for item in image.all(f"mountpoints-{root_ids['mnt_ns_id']}.img")] \
        if "mnt_ns_id" in root_ids else []
    by_mount = {item["mnt_id"]: item for item in mounts}
    for item in used.values():
        remap = remapped.get(item.pop("id"))
        item["kept_in_checkpoint"] = remap == "GHOST"
        item["remapped"] = remap is not None
        mount = by_mount.get(item.pop("mnt_id"))
        item["filesystem"] = mount["fstype"] if mount else None
        item["external_mount"] = bool(mount and mount["external"])
    stats = image.first("stats-dump").get("dump") if os.path.exists(os.path.join(directory, "stats-dump")) else None
    return {
        "processes": processes,
        "files": sorted(used.values(), key=lambda item: item["path"]),
        "sockets": sockets,
        "mounts": [{key: value for key, value in item.items() if key != "mnt_id"} for item in mounts],
        "namespaces": {kind: root_ids[f"{kind}_ns_id"] for kind in NAMESPACES if f"{kind}_ns_id" in root_ids},
        "stats": _stats(stats) if stats else None,
    }


def image_files(directory: str) -> list[str]:
    """The images read() may decode (every image but the raw pages, which it reads itself)."""
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if (name.endswith(".img") and not name.startswith("pages-")) or name == "stats-dump")


class _Images:
    """Entries of the images in one directory; an image that is not there has none."""

    def __init__(self, directory: str, entries: Entries) -> None:
        self.directory, self._entries = directory, entries

    def all(self, name: str) -> list[dict[str, Any]]:
        path = os.path.join(self.directory, name)
        return self._entries(path) if os.path.exists(path) else []

    def first(self, name: str) -> dict[str, Any]:
        found = self.all(name)
        return found[0] if found else {}


def _use(used: dict[str, Any], found: dict[str, Any], pid: int, how: str) -> None:
    """Record a regular file the process uses (other kinds - a memfd mapping, say - are not files on a disk)."""
    reg = found.get("reg")
    if not isinstance(reg, dict):
        return
    path = reg.get("name") or ""
    path = path if path.startswith("/") else "/" + path
    item = used.setdefault(path, {"path": path, "id": found["id"], "mnt_id": reg.get("mnt_id"), "used_as": []})
    if f"{pid}: {how}" not in item["used_as"]:
        item["used_as"].append(f"{pid}: {how}")


def _pages(image: _Images, pid: int, page_size: int) -> dict[str, Any]:
    """The process's pagemap: (address, bytes, flags) per run of pages, and the pages image holding those present."""
    found = image.all(f"pagemap-{pid}.img")
    head, runs = (found[0], found[1:]) if found else ({}, [])
    out = []
    for run in runs:
        count = run.get("nr_pages") or run.get("compat_nr_pages") or 0
        if not count:  # (CRIU 4.2 writes nr_pages, field 5, and 0 in compat_nr_pages: an older crit drops it)
            raise CritError(f"pagemap-{pid}.img has a run of pages without a count: this crit is older than the CRIU "
                            "that wrote the checkpoint (install the python3-pycriu of CRIU's own version)")
        flags = run["flags"] if "flags" in run else (PE_PARENT if run.get("in_parent") else PE_PRESENT)
        out.append((int(run["vaddr"]), int(count) * page_size, int(flags)))
    return {"entries": out, "pages_id": head.get("pages_id")}


def _cmdline(directory: str, mm: dict[str, Any], pages: dict[str, Any], page_size: int) -> Optional[str]:
    """The process's command line, read from its dumped memory (mm_arg_start..mm_arg_end); None when those pages are
    not in this checkpoint (in a parent's, or lazy)."""
    start, end = int(mm.get("mm_arg_start") or 0), int(mm.get("mm_arg_end") or 0)
    if not start or end <= start or pages["pages_id"] is None:
        return None
    end = min(end, start + CMDLINE_MAX)
    path = os.path.join(directory, f"pages-{pages['pages_id']}.img")
    wanted = bytearray()
    offset = 0
    try:
        with open(path, "rb") as handle:
            for vaddr, size, flags in pages["entries"]:
                if not flags & PE_PRESENT:
                    continue
                low, high = max(start + len(wanted), vaddr), min(end, vaddr + size)
                if low == start + len(wanted) and low < high:
                    handle.seek(offset + low - vaddr)
                    wanted += handle.read(high - low)
                offset += size
    except OSError:
        return None
    if start + len(wanted) < end:
        return None
    return " ".join(part.decode("utf-8", "replace") for part in bytes(wanted).split(b"\0") if part) or None


def _address(words: list[int], port: int) -> Optional[str]:
    if not words:
        return None
    if len(words) == 1:
        return f"{ipaddress.IPv4Address(socket.ntohl(words[0]))}:{port}"
    value = 0
    for word in words[:4]:
        value = (value << 32) | socket.ntohl(word)
    return f"[{ipaddress.IPv6Address(value).compressed}]:{port}"


def _named(table: dict[int, str], value: Any) -> Optional[str]:
    """A kernel number by its name (the number itself when unknown; None when absent)."""
    if value is None:
        return None
    return table.get(value, str(value)) if isinstance(value, int) else str(value)


def _socket(found: dict[str, Any], pid: int, fd: int) -> dict[str, Any]:
    if "isk" in found:
        isk = found["isk"]
        connected = bool(isk.get("dst_port"))
        return {"pid": pid, "fd": fd, "family": _named(FAMILIES, isk.get("family")),
                "type": _named(SOCK_TYPES, isk.get("type")), "protocol": _named(PROTOCOLS, isk.get("proto")),
                "state": _named(TCP_STATES, isk.get("state")) if isk.get("proto") == 6 else
                ("connected" if connected else "unconnected"),
                "local": _address(isk.get("src_addr") or [], isk.get("src_port", 0)),
                "remote": _address(isk.get("dst_addr") or [], isk.get("dst_port", 0)) if connected else None}
    usk = found.get("usk") or {}
    return {"pid": pid, "fd": fd, "family": "unix", "type": _named(SOCK_TYPES, usk.get("type")), "protocol": None,
            "state": _named(TCP_STATES, usk.get("state")), "local": _unix_name(usk.get("name")), "remote": None}


def _unix_name(encoded: Any) -> Optional[str]:
    """A unix socket's name as pycriu writes it (quoted-printable); an abstract one (a leading NUL) as @name."""
    if not encoded or not isinstance(encoded, str):
        return None
    raw = quopri.decodestring(encoded.encode("ascii", "replace"))
    if raw.startswith(b"\0"):
        return "@" + raw[1:].decode("utf-8", "replace").rstrip("\0")
    return raw.decode("utf-8", "replace").rstrip("\0") or None


def _mount(item: dict[str, Any]) -> dict[str, Any]:
    number = int(item.get("fstype") or 0)
    fstype = item.get("fsname") or FSTYPES.get(number, str(number) if number else "unsupported")
    return {"mnt_id": item.get("mnt_id"), "mountpoint": item.get("mountpoint"), "fstype": fstype,
            "source": item.get("source"), "root": item.get("root"),
            "external": bool(item.get("ext_mount") or item.get("ext_key"))}


def _stats(dump: dict[str, Any]) -> dict[str, Any]:
    """CRIU's dump statistics (times in microseconds, as CRIU counts them)."""
    keys = ("freezing_time", "frozen_time", "memdump_time", "memwrite_time", "pages_scanned", "pages_skipped_parent",
            "pages_written", "pages_lazy")
    return {key: dump.get(key) for key in keys if key in dump}
