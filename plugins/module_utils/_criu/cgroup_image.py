# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A checkpoint's cgroup paths pointed at the container it is restored into (CRIU's cgroup.img).

CRIU records the cgroup each process was in (cgroup.img: /docker/<id> with Docker's cgroupfs driver,
/system.slice/docker-<id>.scope with its systemd driver) and puts the restored processes back into that cgroup. On
cgroup v1 runc tells CRIU the new container's cgroups (--cgroup-root); on cgroup v2 runc before 1.2 does not
(libcontainer's criuApplyCgroups returns before it; fixed by runc PR #3546). A checkpoint restored into another
container (a migration's target, a warm start into a new container) then puts its processes into the cgroup of the
container it was dumped from, created again for them: Docker's container has no process in its own cgroup
(`docker top` fails or shows nothing, its limits and accounting do not apply).

`retarget` rewrites the paths in the image to the new container's cgroup before the restore, which is what runc 1.2
has CRIU do; with a runc that passes --cgroup-root itself the rewrite changes nothing that CRIU would use.

The image: two 32-bit magics, then one entry (32-bit length, protobuf CgroupEntry, criu/images/cgroup.proto):
sets (1) of cgroup_set_entry {id 1, ctls 2: cg_member_entry {name 1, path 2, cgns_prefix 3}} and controllers (2) of
cg_controller_entry {cnames 1, dirs 2: cgroup_dir_entry {dir_name 1, ...}}. Member paths are absolute; the top
directories' names are the same paths without their leading '/'; cgns_prefix is the length of the part of a path that
is the process's cgroup namespace root (the container's cgroup, with Docker's private cgroup namespaces).
"""

from __future__ import annotations

import os
import re
import struct
from typing import Callable, List, Tuple, Union

IMAGE_NAME = "cgroup.img"
_CONTAINER_PART = re.compile(r"^(?:([0-9a-f]{64})|docker-([0-9a-f]{64})\.scope)$")
Field = Tuple[int, int, Union[int, bytes]]  # (field number, wire type, value: varint, or the raw bytes)


class CgroupImageError(ValueError):
    """The file is not a cgroup image this code can read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CgroupImageError("a protobuf varint runs past its message")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode(data: bytes) -> list[Field]:
    """A protobuf message's fields, in order, undecoded below the wire format."""
    fields: list[Field] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise CgroupImageError("a protobuf field runs past its message")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise CgroupImageError("a protobuf field runs past its message")
            value, pos = data[pos:pos + width], pos + width
        else:
            raise CgroupImageError(f"protobuf wire type {wire} is not expected in a cgroup image")
        fields.append((number, wire, value))
    return fields


def _raw(value: int | bytes) -> bytes:
    return value if isinstance(value, bytes) else _put_varint(value)


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def encode(fields: List[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _put_varint(number << 3 | wire)
        if wire == 2:
            out += _put_varint(len(_raw(value)))
        out += _raw(value)
    return bytes(out)


def _moved(path: str, old: str, new: str) -> str | None:
    if path == old or path.startswith(old.rstrip("/") + "/"):
        return new + path[len(old):]
    return None


def _member(data: bytes, old: str, new: str) -> tuple[bytes, int]:
    fields = decode(data)
    path = next((_text(v) for n, w, v in fields if n == 2 and w == 2), None)
    moved = _moved(path, old, new) if path is not None else None
    if moved is None or path is None:
        return data, 0
    delta = len(moved.encode("utf-8", "surrogateescape")) - len(path.encode("utf-8", "surrogateescape"))
    out: list[Field] = []
    for number, wire, value in fields:
        if number == 2 and wire == 2:
            value = moved.encode("utf-8", "surrogateescape")
        elif number == 3 and isinstance(value, int) and value >= len(old.encode("utf-8", "surrogateescape")):
            value += delta  # the namespace root moves with the path
        out.append((number, wire, value))
    return encode(out), 1


def _nested(data: bytes, field: int, change: Callable[[bytes], Tuple[bytes, int]]) -> tuple[bytes, int]:
    """`data` with each length-delimited `field` replaced by change(value) -> (new value, count changed)."""
    out: list[Field] = []
    count = 0
    for number, wire, value in decode(data):
        if number == field and wire == 2:
            value, changed = change(_raw(value))
            count += changed
        out.append((number, wire, value))
    return encode(out), count


def _dir(data: bytes, old: str, new: str) -> tuple[bytes, int]:
    def rename(name: bytes) -> tuple[bytes, int]:
        moved = _moved("/" + _text(name), old, new)
        return (name, 0) if moved is None else (moved[1:].encode("utf-8", "surrogateescape"), 1)

    return _nested(data, 1, rename)


def paths(image: bytes) -> list[str]:
    """Every process cgroup path the image records (the members of its cgroup sets)."""
    out = []
    for number, wire, value in decode(_entry(image)[1]):
        if number == 1 and wire == 2:
            for n2, w2, member in decode(_raw(value)):
                if n2 == 2 and w2 == 2:
                    out += [_text(v) for n3, w3, v in decode(_raw(member)) if n3 == 2 and w3 == 2]
    return out


def _entry(image: bytes) -> tuple[bytes, bytes]:
    if len(image) < 12:
        raise CgroupImageError("too short for a CRIU image")
    (size,) = struct.unpack_from("<I", image, 8)
    if 12 + size != len(image):
        raise CgroupImageError(f"one entry of {size} bytes was expected after the magics, the file has "
                               f"{len(image) - 12}")
    return image[:8], image[12:]


def retarget(image: bytes, old: str, new: str) -> tuple[bytes, int]:
    """The image with every cgroup path at or below `old` moved below `new` instead: (new image, paths changed)."""
    magics, entry = _entry(image)

    def set_entry(data: bytes) -> tuple[bytes, int]:
        return _nested(data, 2, lambda member: _member(member, old, new))

    def controller(data: bytes) -> tuple[bytes, int]:
        return _nested(data, 2, lambda directory: _dir(directory, old, new))

    entry, sets = _nested(entry, 1, set_entry)
    entry, dirs = _nested(entry, 2, controller)
    return magics + struct.pack("<I", len(entry)) + entry, sets + dirs


def container_cgroup(recorded: list[str]) -> tuple[str, str] | None:
    """(the container's own cgroup, its container ID) in recorded paths: the shortest prefix whose last part names a
    Docker container (its cgroupfs driver: .../<64 hex digits>; its systemd driver: .../docker-<64 hex>.scope)."""
    found: tuple[str, str] | None = None
    for path in recorded:
        parts = path.split("/")
        for index, part in enumerate(parts):
            match = _CONTAINER_PART.match(part)
            if match:
                prefix = "/".join(parts[:index + 1])
                if found is None or len(prefix) < len(found[0]):
                    found = (prefix, match.group(1) or match.group(2))
                break
    return found


def _expand_slice(name: str) -> str:
    """systemd's path of a slice: a-b.slice is a.slice/a-b.slice."""
    if name in ("", "-.slice"):
        return ""
    stem = name[:-len(".slice")]
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))


def target_cgroup(old: str, source_id: str, target_id: str, driver: str, cgroup_parent: str) -> str:
    """Where Docker puts container target_id's processes, from the source's cgroup path `old`: the same place with the
    new ID where the two hosts' drivers agree, else Docker's default for this host's driver (and the container's
    --cgroup-parent)."""
    head, _sep, last = old.rpartition("/")
    systemd = driver == "systemd"
    if systemd and last == f"docker-{source_id}.scope":
        return f"{head}/docker-{target_id}.scope"
    if not systemd and last == source_id:
        return f"{head}/{target_id}"
    if systemd:
        parent = cgroup_parent if cgroup_parent.endswith(".slice") else "system.slice"
        return f"{_expand_slice(parent)}/docker-{target_id}.scope"
    return f"/{(cgroup_parent or '/docker').strip('/')}/{target_id}"


def retarget_file(image_dir: str, target_id: str, driver: str, cgroup_parent: str) -> dict[str, str] | None:
    """Rewrite image_dir's cgroup.img for container target_id on a host whose Docker uses `driver` ('cgroupfs' or
    'systemd'): {'from': old cgroup, 'to': new} when it was rewritten, None when it names no other container (already
    this container's, or no cgroup image). CgroupImageError when it cannot be read."""
    path = os.path.join(image_dir, IMAGE_NAME)
    try:
        with open(path, "rb") as handle:
            image = handle.read()
    except FileNotFoundError:
        return None
    found = container_cgroup(paths(image))
    if found is None or found[1] == target_id:
        return None
    old, source_id = found
    new = target_cgroup(old, source_id, target_id, driver, cgroup_parent)
    rewritten, _count = retarget(image, old, new)
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(rewritten)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return {"from": old, "to": new}
