# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fast restore: Docker restores a checkpoint whose memory pages are linked, not copied through containerd.

`docker start --checkpoint` tars the checkpoint directory into containerd's content store (32 KiB per round trip,
then an fsync of the whole blob), and containerd unpacks it again into a temporary directory (/tmp, a tmpfs, which
it never removes) for `runc restore`. For a 256 MiB container that is about 90% of the restore. The pages files
(pages-N.img) are most of the bytes and are read only by CRIU, so during the restore they are moved to a root-only
directory beside the container's checkpoints and replaced by relative symbolic links: the tar carries the links,
containerd recreates them as they are, and CRIU follows them to the real files. Relative, because CRIU opens the
pages after it has entered the container's root, where an absolute path would name a file of the container; climbing
`..` from the images directory (opened before that) stays in the host's tree. Docker still does the restore itself,
so its view of the container stays true. The files are put back right after the call, whatever its outcome; a run
interrupted in between is repaired by the next operation on that checkpoint (`put_back`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Container, Iterable, Iterator

PAGES = re.compile(r"pages-\d+\.img")
SIDE_PREFIX = ".fleet-pages-"
# `..` at / stays at /, so enough of them reach the root from any directory containerd unpacks into.
CLIMB = "../" * 64


def side_dir(path: str) -> str:
    """Where the pages of checkpoint directory `path` (…/containers/<id>/checkpoints/<name>) wait during a restore:
    beside `checkpoints`, so that Docker never lists it as a checkpoint, and removed with the container."""
    checkpoints = os.path.dirname(os.path.normpath(path))
    return os.path.join(os.path.dirname(checkpoints), SIDE_PREFIX + os.path.basename(os.path.normpath(path)))


def link_target(side: str, name: str) -> str:
    """The relative link that resolves to side/name from any directory, whatever mount namespace's root is current."""
    return CLIMB + os.path.realpath(side).lstrip("/") + "/" + name


def link(path: str) -> list[str]:
    """Move the pages files of `path` aside and link them; returns the names linked (none: nothing to gain)."""
    put_back(path)
    names = sorted(entry.name for entry in os.scandir(path)
                   if PAGES.fullmatch(entry.name) and entry.is_file(follow_symlinks=False))
    if not names:
        return []
    side = side_dir(path)
    os.mkdir(side, 0o700)
    try:
        for name in names:
            os.rename(os.path.join(path, name), os.path.join(side, name))
            os.symlink(link_target(side, name), os.path.join(path, name))
    except OSError:
        put_back(path)
        raise
    return names


def put_back(path: str) -> list[str]:
    """Undo `link` (also half done): every file of the side directory goes back in place of its link."""
    side = side_dir(path)
    if not os.path.isdir(side):
        return []
    if not os.path.isdir(path):
        # The checkpoint was removed meanwhile (`docker checkpoint rm`, pruning): without its other images the pages
        # are of no use, and they hold the container's memory.
        shutil.rmtree(side)
        return []
    restored: list[str] = []
    for name in sorted(os.listdir(side)):
        target = os.path.join(path, name)
        if os.path.islink(target) or not os.path.exists(target):
            if os.path.islink(target):
                os.unlink(target)
            os.rename(os.path.join(side, name), target)
            restored.append(name)
    shutil.rmtree(side)  # empty, unless a real file was in place already (then the side copy is the stale one)
    return restored


def aside(path: str) -> dict[str, str]:
    """{name: file} for the pages that wait beside checkpoint `path` (a run interrupted during a fast restore, not
    repaired yet: check mode does not repair), whose place in the checkpoint holds a link or nothing."""
    side = side_dir(path)
    if not os.path.isdir(side):
        return {}
    return {name: os.path.join(side, name) for name in sorted(os.listdir(side))
            if os.path.islink(os.path.join(path, name)) or not os.path.exists(os.path.join(path, name))}


def auto_dedup(configs: Iterable[str] = ("/etc/criu/runc.conf", "/etc/criu/default.conf")) -> bool:
    """Whether CRIU is configured with auto-dedup, which punches holes in the pages files it restores from: through
    links those would be the checkpoint's own files, so the restore must not link them."""
    for config in configs:
        try:
            with open(config, encoding="utf-8", errors="replace") as handle:
                if any(line.split()[:1] == ["auto-dedup"] for line in handle):
                    return True
        except OSError:
            continue
    return False


def leftovers(temp_dirs: Iterable[str], side: str) -> list[str]:
    """containerd's unpacked copies of this restore (ctrd-checkpoint* directories whose pages link into `side`)."""
    found: list[str] = []
    prefix = link_target(side, "")
    for temp in temp_dirs:
        try:
            entries = [entry for entry in os.scandir(temp) if entry.name.startswith("ctrd-checkpoint") and entry.is_dir(
                follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            try:
                links = [os.readlink(os.path.join(entry.path, name)) for name in os.listdir(entry.path)
                         if PAGES.fullmatch(name) and os.path.islink(os.path.join(entry.path, name))]
            except OSError:
                continue
            if links and all(target.startswith(prefix) for target in links):
                found.append(entry.path)
    return found


def _checkpoint_dirs(temp_dirs: Iterable[str]) -> Iterator[str]:
    for temp in temp_dirs:
        try:
            yield from (entry.path for entry in os.scandir(temp)
                        if entry.name.startswith("ctrd-checkpoint") and entry.is_dir(follow_symlinks=False))
        except OSError:
            continue


def _same_bytes(one: str, other: str) -> bool:
    with open(one, "rb") as first, open(other, "rb") as second:
        return first.read() == second.read()


def copies(temp_dirs: Iterable[str], path: str, unchecked: Container[str] = ()) -> list[str]:
    """containerd's unpacked copies of checkpoint `path` left by a restore that Docker did the plain way: the same
    file names, every file the same size and every file but the pages (and `unchecked`) the same bytes - the small
    images name this container's processes, so another container's copy does not match."""
    try:
        ours = {entry.name: entry.stat(follow_symlinks=False).st_size for entry in os.scandir(path)
                if entry.is_file(follow_symlinks=False)}
    except OSError:
        return []
    compared = [name for name in ours if not PAGES.fullmatch(name) and name not in unchecked]
    found: list[str] = []
    for candidate in _checkpoint_dirs(temp_dirs):
        try:
            theirs = {entry.name: entry.stat(follow_symlinks=False).st_size for entry in os.scandir(candidate)
                      if entry.is_file(follow_symlinks=False)}
            if set(os.listdir(candidate)) != set(ours) or any(
                    theirs.get(name) != size for name, size in ours.items() if name not in unchecked):
                continue
            if all(_same_bytes(os.path.join(path, name), os.path.join(candidate, name)) for name in compared):
                found.append(candidate)
        except OSError:
            continue
    return found


def containerd_temp_dirs(proc: str = "/proc") -> list[str]:
    """The directories containerd unpacks checkpoints into: its TMPDIR / XDG_RUNTIME_DIR, else /tmp."""
    dirs: list[str] = []
    for pid in (entry for entry in os.listdir(proc) if entry.isdigit()):
        try:
            with open(os.path.join(proc, pid, "comm"), encoding="utf-8") as handle:
                if handle.read().strip() != "containerd":
                    continue
            with open(os.path.join(proc, pid, "environ"), "rb") as handle:
                environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        for key in (b"XDG_RUNTIME_DIR", b"TMPDIR"):
            if environ.get(key):
                dirs.append(environ[key].decode(errors="replace"))
    return list(dict.fromkeys(dirs + ["/tmp"]))
